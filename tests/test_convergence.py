"""Stopping rules, L-BFGS and ConvergenceWarning, against hand-computed sequences and SciPy.

The stopping rule is scikit-learn's: count the epochs whose loss is not ``tol`` below the
best so far, stop once the count exceeds ``n_iter_no_change`` (the engine's ``patience``
is ``n_iter_no_change + 1``). L-BFGS is checked against ``scipy.optimize.minimize``'s
L-BFGS-B on the same objective from the same start.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
from sklearn.exceptions import ConvergenceWarning

from jaxreg import MLPRegressor
from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig, make_train
from jaxreg.model import Layer, MLPSpec, apply, init
from jaxreg.optim import Hparams

SPEC = MLPSpec((2, 6, 1), activation="tanh", key_scheme="split")


def _xy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    y = np.sin(x[:, :1]) * x[:, 1:] + 0.05 * rng.normal(size=(n, 1))
    return x, y


def _stop_epoch(losses, tol, n_iter_no_change):
    """scikit-learn's rule written out: epochs run when it stops, or None."""
    best, count = np.inf, 0
    for epoch, loss in enumerate(losses, start=1):
        count = count + 1 if loss > best - tol else 0
        best = min(best, loss)
        if count > n_iter_no_change:
            return epoch
    return None


@pytest.mark.parametrize("tol", [0.0, 1e-3, 2e-2])
def test_the_training_loss_rule_stops_where_the_hand_computed_rule_does(tol):
    x, y = _xy()
    data = Dataset(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32))
    base = dict(epochs=300, optimizer="adam", batch_size=16, sampling="shuffle")
    key, hp = jax.random.PRNGKey(1), Hparams(3e-2)
    # The epoch losses of a run without the rule, then the rule applied by hand.
    free = jax.jit(make_train(SPEC, TrainConfig(**base)))(key, data, hp)
    losses = np.asarray(free.history.objective, np.float64)
    stop = _stop_epoch(np.asarray(free.history.objective), tol, 5)
    cfg = TrainConfig(**base, patience=6, monitor="train", tol=tol)
    ruled = jax.jit(make_train(SPEC, cfg))(key, data, hp)
    assert stop is not None and stop < 300, "the data must make the rule fire"
    assert int(ruled.epochs_run) == stop
    assert bool(ruled.converged)
    # Until the stop the two runs are the same computation.
    np.testing.assert_array_equal(np.asarray(ruled.history.objective)[:stop], losses[:stop])
    assert np.all(np.isnan(np.asarray(ruled.history.objective)[stop:]))


def test_the_validation_rule_with_tol_restores_the_best_parameters():
    x, y = _xy(80, seed=2)
    y = y + np.random.default_rng(3).normal(scale=0.4, size=y.shape)  # noise to overfit
    f32 = jnp.float32
    data = Dataset(*(jnp.asarray(a, f32) for a in (x[:60], y[:60], x[60:], y[60:])))
    spec = MLPSpec((2, 32, 32, 1), activation="tanh", key_scheme="split")
    tol = 1e-3
    cfg = TrainConfig(epochs=400, optimizer="adam", patience=15, monitor="val", tol=tol)
    res = jax.jit(make_train(spec, cfg))(jax.random.PRNGKey(0), data, Hparams(3e-2))
    val = np.asarray(res.history.val_mse)[:, 0]
    n = int(res.epochs_run)
    assert n < 400 and bool(res.converged)
    # By hand: the validation MSE checked before each epoch; best kept on any decrease,
    # the counter reset only on a decrease of more than tol.
    best, since, best_epoch = np.inf, 0, 0
    for epoch, v in enumerate(val[:n]):
        since = 0 if v < best - tol else since + 1
        if v < best:
            best, best_epoch = v, epoch
        if since >= 15:
            break
    assert n == epoch + 1
    assert int(res.best_epoch) == best_epoch


def _objective(spec, x, y):
    def loss(flat, unravel):
        params = unravel(flat)
        return jnp.mean((apply(params, x, spec.activation) - y) ** 2)

    return loss


def test_lbfgs_finds_the_least_squares_optimum_that_scipy_finds():
    # Convex: a linear model. The optimum is the closed-form least-squares solution.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 3))
    y = x @ np.array([[1.5], [-2.0], [0.5]]) + 0.3 + 0.1 * rng.normal(size=(50, 1))
    with jax.enable_x64(True):
        spec = MLPSpec((3, 1), activation="identity", key_scheme="split")
        data = Dataset(jnp.asarray(x), jnp.asarray(y))
        cfg = TrainConfig(epochs=100, optimizer="lbfgs", tol=1e-10)
        res = jax.jit(make_train(spec, cfg))(jax.random.PRNGKey(0), data, Hparams())
        w = np.asarray(res.params[0].W)[:, 0]
        b = float(np.asarray(res.params[0].b).reshape(-1)[0])
        start = init(jax.random.PRNGKey(0), spec, dtype=jnp.float64)
        flat, unravel = jax.flatten_util.ravel_pytree(start)
        loss = _objective(spec, data.x, data.y)
        vg = jax.jit(jax.value_and_grad(lambda f: loss(f, unravel)))
        ref = scipy.optimize.minimize(
            lambda f: tuple(np.asarray(v, np.float64) for v in vg(jnp.asarray(f))),
            np.asarray(flat),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-10},
        )
    lstsq = np.linalg.lstsq(np.c_[x, np.ones(50)], y[:, 0], rcond=None)[0]
    ref_layer = unravel(jnp.asarray(ref.x))[0]
    ours = np.r_[w, b]
    theirs = np.r_[np.asarray(ref_layer.W)[:, 0], np.asarray(ref_layer.b).reshape(-1)]

    def mse(coef):
        return np.mean((np.c_[x, np.ones(50)] @ coef - y[:, 0]) ** 2)

    # Both stop on the same rules (relative reduction <= 2.2e-9 of max(|f|, 1)): the
    # loss is optimal to that precision, the coefficients to its square root.
    assert mse(ours) - mse(lstsq) < 1e-8 and mse(theirs) - mse(lstsq) < 1e-8
    np.testing.assert_allclose(ours, lstsq, rtol=1e-4)
    np.testing.assert_allclose(theirs, lstsq, rtol=1e-4)
    assert bool(res.converged) and int(res.epochs_run) < 100


def test_lbfgs_on_a_network_reaches_what_scipy_reaches_from_the_same_start():
    x, y = _xy(64, seed=5)
    with jax.enable_x64(True):
        data = Dataset(jnp.asarray(x), jnp.asarray(y))
        start = init(jax.random.PRNGKey(2), SPEC, dtype=jnp.float64)
        flat, unravel = jax.flatten_util.ravel_pytree(start)
        loss = _objective(SPEC, data.x, data.y)
        vg = jax.jit(jax.value_and_grad(lambda f: loss(f, unravel)))
        first = float(vg(flat)[0])
        iters = 60
        ref = scipy.optimize.minimize(
            lambda f: tuple(np.asarray(v, np.float64) for v in vg(jnp.asarray(f))),
            np.asarray(flat),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": iters, "gtol": 0.0, "ftol": 0.0},
        )
        cfg = TrainConfig(epochs=iters, optimizer="lbfgs")
        res = jax.jit(make_train(SPEC, cfg))(jax.random.PRNGKey(2), data, Hparams(), start)
        ours = float(np.mean((np.asarray(apply(res.params, data.x, "tanh")) - y) ** 2))
    assert ours < first / 20 and ref.fun < first / 20
    # Two implementations of one method: within a factor of two of each other.
    assert 0.5 < ours / ref.fun < 2.0
    assert np.all(np.diff(np.asarray(res.history.objective)) <= 1e-12)  # monotone descent


def test_max_fun_limits_function_evaluations_and_warns():
    x, y = _xy()
    model = MLPRegressor((16,), optimizer="lbfgs", max_fun=12, epochs=500, random_state=0)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        model.fit(x, y[:, 0])
    # Each iteration costs at least one evaluation: the limit stops it early.
    assert model.n_iter_ <= 12


def test_convergence_warning_at_the_epoch_limit_and_none_after_convergence():
    x, y = _xy()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(5\) reached"):
        MLPRegressor((8,), epochs=5, random_state=0).fit(x, y[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MLPRegressor((8,), epochs=2000, learning_rate=1e-2, random_state=0)
        model.fit(x, y[:, 0])
    assert model.n_iter_ < 2000
    # No rule (tol=None), no warning: the run is meant to take every epoch.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        MLPRegressor((8,), epochs=5, tol=None, random_state=0).fit(x, y[:, 0])


def test_ensemble_members_stop_on_their_own_and_the_warning_counts_the_rest():
    x, y = _xy()
    with pytest.warns(ConvergenceWarning, match="of 3 members"):
        MLPRegressor((8,), epochs=5, n_ensemble=3, random_state=0).fit(x, y[:, 0])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_input_gives_the_dense_predictions(fmt):
    rng = np.random.default_rng(6)
    dense = rng.normal(size=(60, 8)) * (rng.random((60, 8)) < 0.3)
    y = dense @ rng.normal(size=8)
    sparse = scipy.sparse.csr_matrix(dense) if fmt == "csr" else scipy.sparse.csc_matrix(dense)
    kw = dict(hidden_layer_sizes=(8,), epochs=30, tol=None, random_state=0)
    a = MLPRegressor(**kw).fit(sparse, y)
    b = MLPRegressor(**kw).fit(dense, y)
    for la, lb in zip(a.params_, b.params_, strict=True):
        np.testing.assert_array_equal(la.W, lb.W)
    np.testing.assert_array_equal(a.predict(sparse), b.predict(dense))
    np.testing.assert_array_equal(a.predict(dense), b.predict(sparse))


def test_layer_is_the_models_parameter_type():
    # The L-BFGS tests above build parameters with init/apply; they are Layer tuples.
    assert isinstance(init(jax.random.PRNGKey(0), SPEC)[0], Layer)
