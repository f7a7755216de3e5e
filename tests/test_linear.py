"""LinearSGDRegressor: the RMSE gradient, convergence to least squares, determinism,
standardization, the stopping rule and its warning, partial_fit, error messages, and
scikit-learn's estimator checks."""

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import KFold, cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxreg.data import Dataset, linear_blog_data
from jaxreg.engine import TrainConfig
from jaxreg.linear import LinearSGDRegressor
from jaxreg.loss import rmse
from jaxreg.model import Layer, MLPSpec, apply, init
from jaxreg.optim import Hparams
from jaxreg.runner import compile_count, fit

BLOG_STEPS = 5000  # one compiled configuration shared by the blog-data tests
# The blog's settings: raw values, every step trained.
BLOG = {"n_steps": BLOG_STEPS, "batch_size": 100, "tol": None, "standardize": False}
CONVERGENCE = "Maximum number of iteration reached before convergence. Consider increasing n_steps"


@pytest.fixture(scope="module")
def blog_fit():
    x, y = linear_blog_data(0)
    est = LinearSGDRegressor(random_state=0, **BLOG).fit(x, y)
    return x, y, est


def _lstsq(x, y):
    """Closed-form least squares: ``(coef, intercept)``."""
    sol = np.linalg.lstsq(np.c_[x, np.ones(len(x))], y, rcond=None)[0]
    return sol[:-1], sol[-1]


def _badly_scaled(n=1000, seed=0):
    """Columns on scales 1e-3, 1 and 1e4 with offsets, and a target of mean ~1e4."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [1e-3, 1.0, 1e4] + [5.0, -2.0, 3e4]
    return x, x @ [2e3, -1.5, 4e-4] + 1e3 + rng.normal(scale=0.5, size=n)


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
    est = LinearSGDRegressor(tol=None, standardize=False, random_state=3).fit(x, y)
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
    coef, intercept = _lstsq(x, y)
    np.testing.assert_allclose(est.coef_, coef, atol=0.02)
    np.testing.assert_allclose(est.intercept_, intercept, atol=0.05)
    assert est.coef_.shape == (2,) and isinstance(est.intercept_, float)
    assert est.loss_curve_.shape == (BLOG_STEPS,) and est.n_iter_ == BLOG_STEPS
    # the minibatch RMSE ends near the noise's spread (U(0,1): std 0.29)
    assert 0.2 < est.loss_curve_[-500:].mean() < 0.4
    assert est.score(x, y) > 0.999


def test_deterministic_under_a_seed_and_refit_reuses_the_compilation(blog_fit):
    x, y, est = blog_fit
    n_compiled = compile_count()
    again = LinearSGDRegressor(random_state=0, **BLOG).fit(x, y)
    assert compile_count() == n_compiled
    np.testing.assert_array_equal(again.coef_, est.coef_)
    np.testing.assert_array_equal(again.loss_curve_, est.loss_curve_)
    other = LinearSGDRegressor(random_state=1, **BLOG).fit(x, y)
    assert not np.array_equal(other.loss_curve_, est.loss_curve_)


def test_verbose_logs_every_tenth_of_the_run(blog_fit, caplog):
    x, y, est = blog_fit
    with caplog.at_level(logging.INFO, logger="jaxreg.linear"):
        LinearSGDRegressor(random_state=0, verbose=1, **BLOG).fit(x, y)
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
        LinearSGDRegressor(1e30, n_steps=20, batch_size=10, standardize=False, random_state=0).fit(
            x, x @ [1.0, 2.0]
        )


# 11 noise-free rows of ten features keep improving past the default 1000 steps.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
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


def test_standardize_false_is_the_plain_engine_run(blog_fit):
    # The blog's settings train exactly the engine's run on the raw float32 values (the
    # estimator before standardization and the stopping rule), bit for bit.
    x, y, est = blog_fit
    cfg = TrainConfig(
        epochs=BLOG_STEPS,
        optimizer="gd",
        sampling="bootstrap",
        batch_size=100,
        steps_per_epoch=1,
        objective="rmse",
        record_every=1,
    )
    spec = MLPSpec((2, 1), "identity", init="normal", bias_init="normal")
    data = Dataset(jnp.asarray(x, jnp.float32), jnp.asarray(y[:, None], jnp.float32))
    res = fit(spec, cfg, data, Hparams(0.01), key=0)
    np.testing.assert_array_equal(est.coef_, np.asarray(res.params[0].W, np.float64)[:, 0])
    assert est.intercept_ == float(res.params[0].b[0, 0])
    np.testing.assert_array_equal(est.loss_curve_, np.asarray(res.history.objective, np.float64))


def test_standardize_fits_badly_scaled_columns_on_their_own_scale():
    x, y = _badly_scaled()
    coef, intercept = _lstsq(x, y)
    est = LinearSGDRegressor(random_state=0).fit(x, y)  # converges: no warning
    assert est.n_iter_ < 1000 and est.score(x, y) > 0.985  # the noise allows 0.989
    # coefficients in standard deviations of y per standard deviation of x, and the
    # prediction at the mean row (the intercept itself carries the offsets' 1e4)
    sx, sy, mid = x.std(axis=0), y.std(), x.mean(axis=0)
    np.testing.assert_allclose(est.coef_ * sx / sy, coef * sx / sy, atol=0.01)
    assert abs(est.intercept_ + est.coef_ @ mid - (intercept + coef @ mid)) < 0.01 * sy
    np.testing.assert_allclose(est.x_scaler_.mean, mid)
    np.testing.assert_allclose(est.y_scaler_.scale, [sy])
    # the raw values (the blog's settings) are hopeless here
    raw = LinearSGDRegressor(tol=None, standardize=False, random_state=0).fit(x, y)
    assert raw.score(x, y) < 0


def test_unscaled_real_table_cross_validates_near_least_squares():
    # load_diabetes's raw columns (age in years, blood pressure in mm Hg, ...): 5-fold R^2
    # 0.453 (least squares 0.489); standardize=False and tol=None (the old defaults): -22.7.
    x, y = load_diabetes(return_X_y=True, scaled=False)
    r2 = cross_val_score(
        LinearSGDRegressor(random_state=0), x, y, cv=KFold(5, shuffle=True, random_state=0)
    )
    assert r2.mean() > 0.42


def test_the_rule_stops_after_n_iter_no_change_passes_without_improvement():
    x, y = linear_blog_data(0)  # 1000 rows in batches of 100: a pass is 10 steps
    # No pass improves by tol=1e9 on the check of the initial weights: three passes, stopped.
    est = LinearSGDRegressor(tol=1e9, n_iter_no_change=3, random_state=0).fit(x, y)
    assert est.n_iter_ == 30 and est.loss_curve_.shape == (3,)


def test_a_converged_fit_stops_early_without_a_warning():
    x, y = linear_blog_data(0)
    est = LinearSGDRegressor(random_state=0).fit(x, y)  # a warning would be an error
    assert est.n_iter_ < 1000 and est.n_iter_ % 10 == 0
    assert est.loss_curve_.shape == (est.n_iter_ // 10,) and np.isfinite(est.loss_curve_).all()
    assert est.score(x, y) > 0.999


def test_reaching_n_steps_first_warns_unless_tol_is_none():
    x, y = linear_blog_data(0)
    with pytest.warns(ConvergenceWarning, match=CONVERGENCE):
        est = LinearSGDRegressor(n_steps=25, random_state=0).fit(x, y)
    assert est.n_iter_ == 30  # rounded up to whole passes of 10 steps
    est = LinearSGDRegressor(n_steps=25, tol=None, random_state=0).fit(x, y)
    assert est.n_iter_ == 25 and est.loss_curve_.shape == (25,)


def test_partial_fit_passes_continue_one_run():
    x, y = linear_blog_data(0)  # a pass: 10 steps
    inc = LinearSGDRegressor(random_state=0)
    for i in range(3):
        inc.partial_fit(x, y)
        assert inc.n_iter_ == 10 * (i + 1) and inc.loss_curve_.shape == (i + 1,)
    whole = LinearSGDRegressor(n_steps=30, tol=None, random_state=0).fit(x, y)
    np.testing.assert_array_equal(inc.coef_, whole.coef_)
    assert inc.intercept_ == whole.intercept_
    np.testing.assert_allclose(
        inc.loss_curve_, whole.loss_curve_.reshape(3, 10).mean(axis=1), rtol=1e-6
    )
    # after fit, a pass continues the same run: a fit of one pass more
    whole.partial_fit(x, y)
    longer = LinearSGDRegressor(n_steps=40, tol=None, random_state=0).fit(x, y)
    assert whole.n_iter_ == 40 and whole.loss_curve_.shape == (31,)
    np.testing.assert_array_equal(whole.coef_, longer.coef_)
    assert whole.intercept_ == longer.intercept_


def test_partial_fit_on_a_stream_reaches_least_squares():
    x, y = _badly_scaled(2000, seed=1)
    est = LinearSGDRegressor(random_state=0)
    for _ in range(25):  # 25 passes over four batches of 500 rows: 500 steps
        for i in range(0, 2000, 500):
            est.partial_fit(x[i : i + 500], y[i : i + 500])
    assert est.n_iter_ == 500 and est.loss_curve_.shape == (100,)
    assert est.loss_curve_[-10:].mean() < 0.2 * est.loss_curve_[0]
    np.testing.assert_allclose(est.x_scaler_.mean, x[:500].mean(axis=0))  # the first batch's
    coef, _ = _lstsq(x, y)
    sx, sy = x.std(axis=0), y.std()
    np.testing.assert_allclose(est.coef_ * sx / sy, coef * sx / sy, atol=0.02)
    assert est.score(x, y) > 0.98


def test_partial_fit_checks_features_and_outputs():
    x = np.random.default_rng(0).normal(size=(20, 3))
    est = LinearSGDRegressor(random_state=0).partial_fit(x, x.sum(axis=1))
    assert est.n_iter_ == 1  # 20 rows: one step a pass
    with pytest.raises(
        ValueError,
        match="X has 2 features, but LinearSGDRegressor is expecting 3 features as input",
    ):
        est.partial_fit(x[:, :2], x.sum(axis=1))
    with pytest.raises(
        ValueError,
        match=re.escape("y has 2 outputs, but LinearSGDRegressor is expecting 1 outputs"),
    ):
        est.partial_fit(x, x[:, :2])
    est.partial_fit(x, x.sum(axis=1))
    assert est.n_iter_ == 2


def test_only_learning_rate_is_positional():
    assert LinearSGDRegressor(0.1).learning_rate == 0.1
    with pytest.raises(TypeError):
        LinearSGDRegressor(0.1, 100)  # type: ignore[misc]


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
        (
            {"tol": -1e-3},
            "The 'tol' parameter of LinearSGDRegressor must be a float in [0, inf) or "
            "None. Got -0.001 instead.",
        ),
        ({"tol": "auto"}, "'tol' parameter .* Got 'auto' instead"),
        (
            {"n_iter_no_change": 0},
            "The 'n_iter_no_change' parameter of LinearSGDRegressor must be an int in "
            "[1, inf). Got 0 instead.",
        ),
        (
            {"standardize": 1},
            "The 'standardize' parameter of LinearSGDRegressor must be an instance of "
            "'bool'. Got 1 instead.",
        ),
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_invalid_parameters_name_the_parameter_and_value(params, pattern, method):
    if not pattern.startswith("'"):
        pattern = re.escape(pattern)
    with pytest.raises(ValueError, match=pattern):
        getattr(LinearSGDRegressor(**params), method)(GOOD_X, GOOD_Y)


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
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_bad_data_is_refused(x, y, pattern, method):
    with pytest.raises(ValueError, match=pattern):
        getattr(LinearSGDRegressor(), method)(x, y)


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


# check_regressor_multioutput fits the defaults (n_steps=1000, tol=1e-3) to 11 noise-free
# rows of ten features, which keep improving past 1000 steps: it warns, as scikit-learn's
# own SGDRegressor may there, and the warning is not what the checks test.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([LinearSGDRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
