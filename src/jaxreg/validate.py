"""Parameter checks with one message template, scikit-learn's. Rank 0: imports nothing from
jaxreg.

Every public entry point checks its arguments with these functions, so every message reads
``The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.``: strings are
shown with quotes, numbers plain (NumPy scalars as Python ones). Checks run on the host
before anything is traced; nothing here may see a traced value.

Example:
  >>> real("MLPRegressor", "alpha", -1, low=0)
  Traceback (most recent call last):
  ...
  ValueError: The 'alpha' parameter of MLPRegressor must be a float in [0, inf). Got -1 instead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "TEMPLATE",
    "bad",
    "boolean",
    "choice",
    "integer",
    "is_int",
    "random_state",
    "real",
    "show",
]

TEMPLATE = "The '{name}' parameter of {owner} must be {rule}. Got {value} instead."


def show(value) -> str:
    """``value`` as a message shows it: strings quoted, numbers plain (a NumPy scalar as it
    prints: ``np.float32(0.1)`` shows ``0.1``), anything else as its ``repr``."""
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, np.generic):
        return str(value)
    return repr(value)


def bad(owner: str, name: str, rule: str, value=None, *, got: str | None = None) -> ValueError:
    """The ``ValueError`` for parameter ``name`` of ``owner`` breaking ``rule``.

    ``got`` replaces ``show(value)`` where a description reads better than the value (an
    array: "an array of shape (3, 2)").
    """
    return ValueError(
        TEMPLATE.format(
            name=name, owner=owner, rule=rule, value=show(value) if got is None else got
        )
    )


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python or NumPy); bools are not."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    lo = "(-inf" if low is None else ("(" if low_open else "[") + str(low)
    hi = "inf)" if high is None else str(high) + (")" if high_open else "]")
    return f"{lo}, {hi}"


def real(
    owner: str,
    name: str,
    value,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
):
    """``value`` as a float if it is a finite real number in the interval (or None when
    ``allow_none``), else raise.

    A bound of None is infinite (and open); NaN and infinities are always refused, bools
    are not numbers.
    """
    if value is None and allow_none:
        return None
    rule = f"a float in {_interval(low, high, low_open, high_open)}"
    rule += " or None" if allow_none else ""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise bad(owner, name, rule, value)
    v = float(value)
    ok = (
        math.isfinite(v)
        and (low is None or (v > low if low_open else v >= low))
        and (high is None or (v < high if high_open else v <= high))
    )
    if not ok:
        raise bad(owner, name, rule, value)
    return v


def integer(owner: str, name: str, value, low=None, high=None, *, allow_none=False, extra=None):
    """``value`` as an int if it is an integer in ``[low, high]`` (None: unbounded), or None
    when ``allow_none``; else raise (naming ``extra``, another accepted value the caller
    handles, in the rule). Bools are not integers."""
    if value is None and allow_none:
        return None
    rule = f"an int in {_interval(low, high, False, False)}"
    rule += "".join(f", {x}" for x in [extra] if x) + (" or None" if allow_none else "")
    if (
        not is_int(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise bad(owner, name, rule, value)
    return int(value)


def unused(owner: str, name: str, value, ignored: bool, rule: str) -> None:
    """Raise when ``value`` is set (not None) although another setting makes it
    meaningless (``ignored``); ``rule`` says when it may be set."""
    if ignored and value is not None:
        raise bad(owner, name, rule, value)


def choice(owner: str, name: str, value, choices, allow_none: bool = False):
    """``value`` if it is one of the strings ``choices`` (or None when ``allow_none``);
    else raise, listing the choices sorted."""
    if (value is None and allow_none) or (isinstance(value, str) and value in choices):
        return value
    rule = "a str among {" + ", ".join(repr(c) for c in sorted(choices)) + "}"
    raise bad(owner, name, rule + (" or None" if allow_none else ""), value)


def boolean(owner: str, name: str, value) -> bool:
    """``value`` as a bool if it is one (Python or NumPy); else raise."""
    if not isinstance(value, bool | np.bool_):
        raise bad(owner, name, "an instance of 'bool'", value)
    return bool(value)


def random_state(owner: str, value, name: str = "random_state"):
    """``value`` if it is None, an int seed in ``[0, 2**32 - 1]`` or a
    ``numpy.random.RandomState``; else raise."""
    if (
        value is None
        or isinstance(value, np.random.RandomState)
        or (is_int(value) and 0 <= value < 2**32)
    ):
        return value
    raise bad(
        owner,
        name,
        f"an int in [0, {2**32 - 1}], an instance of 'numpy.random.RandomState' or None",
        value,
    )
