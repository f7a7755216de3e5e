"""jaxreg.validate: one message template and the parameter checks built on it."""

import re

import numpy as np
import pytest

from jaxreg.validate import bad, boolean, choice, integer, is_int, random_state, real, show

OWNER = "Thing"


def _message(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------- the template


def test_the_template_is_scikit_learns():
    err = bad("MLPRegressor", "alpha", "a float in [0, inf)", -1)
    assert isinstance(err, ValueError)
    assert str(err) == (
        "The 'alpha' parameter of MLPRegressor must be a float in [0, inf). Got -1 instead."
    )


@pytest.mark.parametrize(
    "value, shown",
    [
        ("adam", "'adam'"),
        (np.str_("adam"), "'adam'"),
        (-1, "-1"),
        (0.5, "0.5"),
        (np.float64(0.5), "0.5"),
        (np.float32(0.1), "0.1"),
        (np.int64(3), "3"),
        (np.True_, "True"),
        (True, "True"),
        (None, "None"),
        (float("nan"), "nan"),
        ((8, 0), "(8, 0)"),
        ([1, "a"], "[1, 'a']"),
    ],
)
def test_strings_are_quoted_and_numbers_plain(value, shown):
    assert show(value) == shown
    assert str(bad(OWNER, "p", "rule", value)).endswith(f"Got {shown} instead.")


def test_a_description_may_replace_the_value():
    err = bad(OWNER, "w", "finite", got="NaN or infinite weights")
    assert str(err) == (
        "The 'w' parameter of Thing must be finite. Got NaN or infinite weights instead."
    )


def test_is_int_refuses_bools_and_floats():
    assert is_int(3) and is_int(np.int32(3)) and is_int(-1)
    assert not any(is_int(v) for v in (True, np.True_, 3.0, "3", None))


# ---------------------------------------------------------------- real


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        (dict(), "(-inf, inf)"),
        (dict(low=0), "[0, inf)"),
        (dict(low=0, low_open=True), "(0, inf)"),
        (dict(low=0, high=1), "[0, 1]"),
        (dict(low=0, high=1, high_open=True), "[0, 1)"),
        (dict(low=0, high=1, low_open=True, high_open=True), "(0, 1)"),
        (dict(high=1), "(-inf, 1]"),
    ],
)
def test_real_states_its_interval(kwargs, rule):
    with pytest.raises(ValueError) as info:
        real(OWNER, "x", "text", **kwargs)
    assert _message(info) == (
        f"The 'x' parameter of Thing must be a float in {rule}. Got 'text' instead."
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan")])
def test_real_refuses_nan_and_infinities_even_without_bounds(value):
    with pytest.raises(
        ValueError,
        match=r"'x' parameter of Thing must be a float in "
        r"\(-inf, inf\)\. Got -?(nan|inf) instead\.",
    ):
        real(OWNER, "x", value)


@pytest.mark.parametrize("value", [True, False, np.True_, "1", None, [1.0], 1j])
def test_real_refuses_what_is_not_a_real_number(value):
    with pytest.raises(ValueError, match=re.escape(f"Got {show(value)} instead.")):
        real(OWNER, "x", value, low=0)


def test_real_bounds_are_open_or_closed():
    assert real(OWNER, "x", 0, low=0) == 0.0
    with pytest.raises(ValueError, match=r"a float in \(0, inf\)\. Got 0 instead"):
        real(OWNER, "x", 0, low=0, low_open=True)
    assert real(OWNER, "x", 1, low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=r"a float in \[0, 1\)\. Got 1 instead"):
        real(OWNER, "x", 1, low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=r"Got -0.5 instead"):
        real(OWNER, "x", -0.5, low=0)


def test_real_returns_a_python_float():
    out = real(OWNER, "x", np.float32(0.25), low=0)
    assert type(out) is float and out == 0.25
    assert type(real(OWNER, "x", 2, low=0)) is float


# ---------------------------------------------------------------- integer


def test_integer_accepts_python_and_numpy_ints_and_returns_an_int():
    assert integer(OWNER, "n", 3, low=1) == 3
    out = integer(OWNER, "n", np.int64(3), low=1)
    assert type(out) is int and out == 3
    assert integer(OWNER, "n", 1, low=1) == 1  # the low bound is included


@pytest.mark.parametrize("value", [True, False, np.True_, 2.0, 2.5, "2", None])
def test_integer_refuses_bools_floats_and_none(value):
    with pytest.raises(ValueError) as info:
        integer(OWNER, "n", value, low=1)
    assert _message(info) == (
        f"The 'n' parameter of Thing must be an int in [1, inf). Got {show(value)} instead."
    )


def test_integer_bounds_and_none():
    with pytest.raises(ValueError, match=r"an int in \[1, inf\)\. Got 0 instead"):
        integer(OWNER, "n", 0, low=1)
    assert integer(OWNER, "n", None, low=1, allow_none=True) is None
    with pytest.raises(ValueError, match=r"an int in \[1, inf\) or None\. Got 0 instead"):
        integer(OWNER, "n", 0, low=1, allow_none=True)
    with pytest.raises(ValueError, match=r"an int in \[0, 9\]\. Got 10 instead"):
        integer(OWNER, "n", 10, low=0, high=9)
    assert integer(OWNER, "n", 9, low=0, high=9) == 9
    assert integer(OWNER, "n", -5) == -5
    with pytest.raises(ValueError, match=r"must be an int in \(-inf, inf\)\. Got 1.5"):
        integer(OWNER, "n", 1.5)


# ---------------------------------------------------------------- choice


def test_choice_lists_the_choices_sorted():
    with pytest.raises(ValueError) as info:
        choice(OWNER, "act", "swish", ("tanh", "relu", "elu"))
    assert _message(info) == (
        "The 'act' parameter of Thing must be a str among "
        "{'elu', 'relu', 'tanh'}. Got 'swish' instead."
    )


def test_choice_accepts_a_member_and_dict_keys():
    assert choice(OWNER, "act", "relu", ("tanh", "relu")) == "relu"
    assert choice(OWNER, "act", "b", {"b": 1, "a": 2}) == "b"
    with pytest.raises(ValueError, match=r"\{'a', 'b'\}\. Got 'c'"):
        choice(OWNER, "act", "c", {"b": 1, "a": 2})


@pytest.mark.parametrize("value", [None, 1, ["tanh"], ("tanh",), True])
def test_choice_refuses_non_strings(value):
    with pytest.raises(ValueError, match=re.escape(f"Got {show(value)} instead.")):
        choice(OWNER, "act", value, ("tanh",))


def test_choice_none_only_when_allowed():
    assert choice(OWNER, "s", None, ("a",), allow_none=True) is None
    with pytest.raises(ValueError) as info:
        choice(OWNER, "s", "b", ("a",), allow_none=True)
    assert _message(info) == (
        "The 's' parameter of Thing must be a str among {'a'} or None. Got 'b' instead."
    )


# ---------------------------------------------------------------- boolean, random_state


def test_boolean():
    assert boolean(OWNER, "flag", True) is True
    assert boolean(OWNER, "flag", np.False_) is False
    for value in (1, 0, "yes", None):
        with pytest.raises(ValueError) as info:
            boolean(OWNER, "flag", value)
        assert _message(info) == (
            f"The 'flag' parameter of Thing must be an instance of "
            f"'bool'. Got {show(value)} instead."
        )


def test_random_state():
    rs = np.random.RandomState(0)
    for value in (None, 0, 2**32 - 1, np.int64(5), rs):
        assert random_state(OWNER, value) is value
    for value in (-1, 2**32, True, 1.0, "0", np.random.default_rng(0)):
        with pytest.raises(
            ValueError,
            match=r"^The 'random_state' parameter of Thing must be "
            r"an int in \[0, 4294967295\], an instance of "
            r"'numpy.random.RandomState' or None\. Got ",
        ):
            random_state(OWNER, value)
