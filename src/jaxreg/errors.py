"""Errors shared by the library and the CLI (rank 0)."""


class UsageError(ValueError):
    """Bad input found at a public boundary (a file, a column, an option).

    The CLI prints it as one line on stderr and exits with code 2.
    """


NON_FINITE_MESSAGE = (
    "Solver produced non-finite parameter weights. The input data may "
    "contain large values and need to be preprocessed."
)


class TrainingDivergedError(ValueError, FloatingPointError):
    """Training produced non-finite losses or parameters: a ``ValueError`` whose message
    starts with scikit-learn's (``NON_FINITE_MESSAGE``), and a ``FloatingPointError``."""
