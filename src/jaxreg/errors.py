"""Errors shared by the library and the CLI (rank 0)."""


class UsageError(ValueError):
    """Bad input found at a public boundary (a file, a column, an option).

    The CLI prints it as one line on stderr and exits with code 2.
    """
