import jax
import numpy as np
import pytest

from jaxreg.data import (
    Standardizer,
    as_2d_float,
    check_xy,
    lecture_data,
    lecture_data_earlier,
    linear_blog_data,
    polynomial_data,
)


def test_lecture_data_matches_the_lectures_generator():
    xt, yt, xv, yv = lecture_data()
    key_train, key_val = jax.random.split(jax.random.PRNGKey(14))
    x = np.linspace(0, 5, 400)
    for k, xs, ys in ((key_train, xt, yt), (key_val, xv, yv)):
        eps = 0.2 * np.asarray(jax.random.normal(k, shape=(400,)))
        assert xs.shape == ys.shape == (400, 1)
        np.testing.assert_allclose(np.asarray(xs).ravel(), x, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ys).ravel(), np.sqrt(x) + np.sin(x) + eps, atol=2e-6)
    assert not np.allclose(yt, yv)


def test_earlier_scheme_uses_keys_two_and_three_of_a_three_way_split():
    xt, yt, _, yv = lecture_data_earlier()
    _, k1, k2 = jax.random.split(jax.random.PRNGKey(1234), 3)
    x = np.linspace(0, 5, 400)
    np.testing.assert_allclose(
        np.asarray(yt).ravel(),
        np.sqrt(x) + np.sin(x) + 0.2 * np.asarray(jax.random.normal(k1, (400,))),
        atol=2e-6,
    )
    np.testing.assert_allclose(
        np.asarray(yv).ravel(),
        np.sqrt(x) + np.sin(x) + 0.2 * np.asarray(jax.random.normal(k2, (400,))),
        atol=2e-6,
    )


def test_polynomial_data_returns_the_unused_half_of_the_key():
    key = jax.random.key(21)
    x, y, key_out = polynomial_data(key, (1, -2, 1, -2), n=50)
    k_keep, k_noise = jax.random.split(key, 2)
    assert jax.random.key_data(key_out).tolist() == jax.random.key_data(k_keep).tolist()
    xs = np.linspace(-10, 10, 50)
    expect = np.polyval([1, -2, 1, -2], xs) + np.asarray(jax.random.normal(k_noise, (50,)))
    np.testing.assert_allclose(np.asarray(y).ravel(), expect, rtol=1e-5, atol=1e-3)
    assert x.shape == (50, 1)


def test_linear_blog_data_is_seeded():
    a = linear_blog_data(3)
    b = linear_blog_data(3)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (1000, 2) and a[1].shape == (1000,)
    resid = a[1] - a[0] @ [3, 4] - 5
    assert 0 <= resid.min() and resid.max() <= 1


def test_standardizer_round_trip_and_population_std():
    rng = np.random.default_rng(0)
    a = rng.normal(3, 2, (100, 3))
    a[:, 2] = 7.0  # constant column maps to 0, not NaN
    s = Standardizer.fit(a)
    z = s.transform(a)
    np.testing.assert_allclose(z[:, :2].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].std(0), 1, atol=1e-12)
    np.testing.assert_array_equal(z[:, 2], 0)
    np.testing.assert_allclose(s.inverse(z), a)
    np.testing.assert_allclose(s.scale[:2], a[:, :2].std(0, ddof=0))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[1.0, np.nan]]), r"x must be finite\. Got 1 NaN"),
        (np.array([[np.inf]]), "x must be finite"),
        (np.array([["a", "1"]], dtype=object), "x must be numeric. Got a non-numeric value 'a'"),
        (np.zeros((2, 2, 2)), r"x must be a 2-D array .* Got an array with shape \(2, 2, 2\)"),
        (np.zeros((0, 3)), "x must have at least one row"),
        (np.array([[1 + 2j]]), "x must be real-valued"),
    ],
)
def test_as_2d_float_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        as_2d_float("x", bad)


def test_check_xy_mismatched_lengths():
    with pytest.raises(ValueError, match="same number of rows. Got x with 3 rows and y with 2"):
        check_xy(np.zeros((3, 1)), np.zeros(2))
    x, y = check_xy([1, 2, 3], [4, 5, 6])
    assert x.shape == y.shape == (3, 1) and x.dtype == np.float32
