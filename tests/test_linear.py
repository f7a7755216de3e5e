"""LinearSGDRegressor: the RMSE gradient, convergence to least squares, determinism,
error messages, and scikit-learn's estimator checks."""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxreg.data import linear_blog_data
from jaxreg.linear import LinearSGDRegressor
from jaxreg.loss import rmse
from jaxreg.model import Layer, MLPSpec, apply, init
from jaxreg.runner import compile_count

BLOG_STEPS = 5000  # one compiled configuration shared by the blog-data tests


@pytest.fixture(scope="module")
def blog_fit():
    x, y = linear_blog_data(0)
    est = LinearSGDRegressor(n_steps=BLOG_STEPS, batch_size=100, random_state=0).fit(x, y)
    return x, y, est


def test_rmse_gradient_matches_analytic_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    y = rng.normal(size=(20, 1)).astype(np.float32)
    w = rng.normal(size=(3, 1)).astype(np.float32)
    b = rng.normal(size=(1, 1)).astype(np.float32)
    params = (Layer(jnp.asarray(w), jnp.asarray(b)),)
    g = jax.grad(lambda p: rmse(apply(p, x, "identity"), y))(params)[0]
    # d/dw sqrt(mean(r^2)) = X^T r / (n * rmse) with r = Xw + b - y; d/db = mean(r) / rmse
    r = (x.astype(np.float64) @ w + b - y)[:, 0]
    loss = np.sqrt(np.mean(r**2))
    np.testing.assert_allclose(np.asarray(g.W)[:, 0], x.T @ r / (len(r) * loss), rtol=1e-4)
    np.testing.assert_allclose(float(g.b[0, 0]), r.mean() / loss, rtol=1e-4)


def test_first_steps_are_rmse_gradient_steps():
    # One sample: every bootstrap draw is row 0, so each step is known exactly:
    # rmse = |r| and its gradient is sign(r) * [x, 1], so |r| falls by lr * (x.x + 1).
    # (Shape and settings of sklearn's check_fit2d_1sample: one compilation for both.)
    x = np.linspace(-1.0, 1.0, 10).reshape(1, 10)
    y = np.array([30.0])
    est = LinearSGDRegressor(random_state=3).fit(x, y)
    w0, b0 = init(
        jax.random.PRNGKey(3), MLPSpec((10, 1), "identity", init="normal", bias_init="normal")
    )[0]
    r0 = x[0] @ np.asarray(w0, np.float64)[:, 0] + float(b0[0, 0]) - y[0]
    shrink = 0.01 * (x[0] @ x[0] + 1)
    expected = abs(r0) - shrink * np.arange(5)
    np.testing.assert_allclose(est.loss_curve_[:5], expected, rtol=1e-4)
    # 1000 steps of that size reach the target and then oscillate around it
    assert est.loss_curve_[-1] <= shrink


def test_converges_to_least_squares(blog_fit):
    x, y, est = blog_fit
    a = np.c_[x, np.ones(len(x))]
    sol = np.linalg.lstsq(a, y, rcond=None)[0]
    np.testing.assert_allclose(est.coef_, sol[:2], atol=0.02)
    np.testing.assert_allclose(est.intercept_, sol[2], atol=0.05)
    assert est.coef_.shape == (2,) and isinstance(est.intercept_, float)
    assert est.loss_curve_.shape == (BLOG_STEPS,) and est.n_iter_ == BLOG_STEPS
    # the minibatch RMSE ends near the noise's spread (U(0,1): std 0.29)
    assert 0.2 < est.loss_curve_[-500:].mean() < 0.4
    assert est.score(x, y) > 0.999


def test_deterministic_under_a_seed_and_refit_reuses_the_compilation(blog_fit):
    x, y, est = blog_fit
    n_compiled = compile_count()
    again = LinearSGDRegressor(n_steps=BLOG_STEPS, batch_size=100, random_state=0).fit(x, y)
    assert compile_count() == n_compiled
    np.testing.assert_array_equal(again.coef_, est.coef_)
    np.testing.assert_array_equal(again.loss_curve_, est.loss_curve_)
    other = LinearSGDRegressor(n_steps=BLOG_STEPS, batch_size=100, random_state=1).fit(x, y)
    assert not np.array_equal(other.loss_curve_, est.loss_curve_)


def test_verbose_logs_every_tenth_of_the_run(blog_fit, caplog):
    x, y, est = blog_fit
    with caplog.at_level(logging.INFO, logger="jaxreg.linear"):
        LinearSGDRegressor(n_steps=BLOG_STEPS, batch_size=100, random_state=0, verbose=1).fit(x, y)
    lines = [r.getMessage() for r in caplog.records if r.name == "jaxreg.linear"]
    assert len(lines) == 10
    assert lines[0] == f"500 step - Loss: {est.loss_curve_[499]:.4f}"
    assert lines[-1].startswith("5000 step - Loss: ")


def test_divergence_names_the_step_and_the_learning_rate():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(50, 2)) * 1e3
    with pytest.raises(
        FloatingPointError,
        match=r"diverged: .* at step \d+ "
        r"\(learning_rate=1e\+30\)\. Lower the learning rate",
    ):
        LinearSGDRegressor(learning_rate=1e30, n_steps=20, batch_size=10, random_state=0).fit(
            x, x @ [1.0, 2.0]
        )


def test_two_dimensional_y_and_dataframes():
    # Shapes and defaults of sklearn's checks (check_regressor_multioutput with (11, 10) and
    # five targets; check_dont_overwrite_parameters with (20, 3)): no extra compilations.
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 10))
    y = x @ rng.normal(size=(10, 5)) + 1
    est = LinearSGDRegressor(random_state=0).fit(x, y)
    assert est.coef_.shape == (5, 10) and est.intercept_.shape == (5,)
    pred = est.predict(x)
    assert pred.shape == (11, 5) and pred.dtype == np.float64
    np.testing.assert_allclose(pred, x @ est.coef_.T + est.intercept_)
    x = rng.normal(size=(20, 3))
    y = x @ [1.0, 2.0, 3.0] + 1
    one = LinearSGDRegressor(random_state=0).fit(x, y[:, None])
    assert one.coef_.shape == (1, 3) and one.predict(x).shape == (20, 1)
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    est = LinearSGDRegressor(random_state=0).fit(df, y)
    assert list(est.feature_names_in_) == ["a", "b", "c"] and est.n_features_in_ == 3
    # a 1-D y trains the same model as its (n, 1) column (same compiled run)
    np.testing.assert_array_equal(est.coef_, one.coef_[0])
    assert est.predict(df).shape == (20,)


GOOD_X = np.arange(12.0).reshape(6, 2)
GOOD_Y = np.arange(6.0)


@pytest.mark.parametrize(
    "params, pattern",
    [
        (
            {"learning_rate": -1},
            "The 'learning_rate' parameter of LinearSGDRegressor must be a "
            "float in (0, inf). Got -1 instead.",
        ),
        ({"learning_rate": float("nan")}, "'learning_rate' parameter .* Got nan instead"),
        ({"learning_rate": "fast"}, "'learning_rate' parameter .* Got 'fast' instead"),
        (
            {"n_steps": 0},
            "The 'n_steps' parameter of LinearSGDRegressor must be an int in "
            "[1, inf). Got 0 instead.",
        ),
        ({"n_steps": 2.5}, "'n_steps' parameter .* Got 2.5 instead"),
        ({"batch_size": 0}, "'batch_size' parameter .* Got 0 instead"),
        (
            {"batch_size": 7},
            "The 'batch_size' parameter of LinearSGDRegressor must be at most the "
            "number of samples (6): bootstrap batches are drawn from the training "
            "rows. Got 7 instead.",
        ),
        ({"random_state": -1}, "'random_state' parameter .* Got -1 instead"),
        ({"verbose": -2}, "'verbose' parameter .* Got -2 instead"),
    ],
)
def test_invalid_parameters_name_the_parameter_and_value(params, pattern):
    if not pattern.startswith("'"):
        pattern = re.escape(pattern)
    with pytest.raises(ValueError, match=pattern):
        LinearSGDRegressor(**params).fit(GOOD_X, GOOD_Y)


@pytest.mark.parametrize(
    "x, y, pattern",
    [
        (np.arange(6.0), GOOD_Y, r"X must be a 2-D array .* 1 dimension\(s\) and shape \(6,\)"),
        (np.zeros((6, 2, 1)), GOOD_Y, r"X must be a 2-D array .* shape \(6, 2, 1\)"),
        (np.where(GOOD_X == 3, np.nan, GOOD_X), GOOD_Y, "Input X contains NaN"),
        (GOOD_X, np.where(GOOD_Y == 2, np.inf, GOOD_Y), "Input y contains infinity"),
        (np.array([["a", "b"]] * 6), GOOD_Y, "X must be numeric. Got the non-numeric value 'a'."),
        (GOOD_X, np.array(list("abcdef")), "y must be numeric. Got the non-numeric value 'a'."),
        (np.zeros((0, 2)), np.zeros(0), "Found array with 0 sample"),
        (GOOD_X, GOOD_Y[:5], r"inconsistent numbers of samples: \[6, 5\]"),
    ],
)
def test_bad_data_is_refused(x, y, pattern):
    with pytest.raises(ValueError, match=pattern):
        LinearSGDRegressor().fit(x, y)


def test_predict_checks_fitted_and_shape():
    with pytest.raises(NotFittedError):
        LinearSGDRegressor().predict(GOOD_X)
    x = np.random.default_rng(0).normal(size=(20, 3))  # a shape sklearn's checks compile
    est = LinearSGDRegressor(random_state=0).fit(x, x.sum(axis=1))
    with pytest.raises(
        ValueError,
        match="X has 2 features, but LinearSGDRegressor is expecting 3 features as input",
    ):
        est.predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        est.predict(np.zeros(2))


@parametrize_with_checks([LinearSGDRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
