"""jaxreg.engine: the pure training run against NumPy backpropagation and Optax.

These are core tests: ``conftest.py`` runs them with and without jit, and CI runs them again
with ``JAX_ENABLE_X64=1``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig, make_engine, make_train
from jaxreg.model import MLPSpec, init
from jaxreg.optim import Hparams

SPEC = MLPSpec(
    (2, 5, 1), activation="tanh", init="glorot_uniform", bias_init="normal", key_scheme="split"
)
KEY = jax.random.PRNGKey(3)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (24, 2))
    y = np.sin(2 * x[:, :1]) + 0.3 * x[:, 1:]
    dt = jnp.zeros(()).dtype  # float64 under JAX_ENABLE_X64=1, else float32
    return Dataset(
        jnp.asarray(x[:16], dt),
        jnp.asarray(y[:16], dt),
        jnp.asarray(x[16:], dt),
        jnp.asarray(y[16:], dt),
    )


def _numpy_grads(params, x, y):
    """Backpropagation of mean((tanh(x W0 + b0) W1 + b1 - y)^2) written out in NumPy."""
    (w0, b0), (w1, b1) = [
        (np.asarray(p.W, np.float64), np.asarray(p.b, np.float64)) for p in params
    ]
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    h = np.tanh(x @ w0 + b0)
    out = h @ w1 + b1
    g_out = 2 * (out - y) / out.size
    g_w1, g_b1 = h.T @ g_out, g_out.sum(axis=0, keepdims=True)
    g_h = g_out @ w1.T * (1 - h**2)
    g_w0, g_b0 = x.T @ g_h, g_h.sum(axis=0, keepdims=True)
    loss = float(np.mean((out - y) ** 2))
    return loss, [(g_w0, g_b0), (g_w1, g_b1)]


def _tol(data):
    return (
        dict(rtol=1e-5, atol=1e-6) if data.x.dtype == jnp.float32 else dict(rtol=1e-10, atol=1e-12)
    )


def test_full_batch_gd_equals_numpy_backpropagation(data):
    epochs, lr = 5, 0.1
    res = make_train(SPEC, TrainConfig(epochs, "gd", record_every=1))(KEY, data, Hparams(lr))
    params = [
        (np.asarray(p.W, np.float64), np.asarray(p.b, np.float64))
        for p in init(KEY, SPEC, dtype=data.x.dtype)
    ]
    losses = []
    for _ in range(epochs):
        from jaxreg.model import Layer

        loss, grads = _numpy_grads([Layer(w, b) for w, b in params], data.x, data.y)
        losses.append(loss)
        params = [
            (w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, grads, strict=True)
        ]
    np.testing.assert_allclose(np.asarray(res.history.train_mse)[:, 0], losses, **_tol(data))
    for layer, (w, b) in zip(res.params, params, strict=True):
        np.testing.assert_allclose(layer.W, w, **_tol(data))
        np.testing.assert_allclose(layer.b, b, **_tol(data))
    assert int(res.epochs_run) == epochs and int(res.best_epoch) == epochs


@pytest.mark.optax_reference
def test_adam_with_l2_equals_optax(data):
    epochs, lr, l2 = 4, 0.05, 1e-3
    res = make_train(SPEC, TrainConfig(epochs, "adam", record_every=0))(KEY, data, Hparams(lr, l2))
    params = init(KEY, SPEC, dtype=data.x.dtype)

    def objective(p):
        pred = p[1].W.T @ jnp.tanh(p[0].W.T @ data.x.T + p[0].b.T) + p[1].b.T
        penalty = sum(jnp.sum(layer.W**2) for layer in p)
        return jnp.mean((pred - data.y.T) ** 2) + l2 * penalty

    opt = optax.adam(lr)
    state = opt.init(params)
    for _ in range(epochs):
        grads = jax.grad(objective)(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    for a, b in zip(res.params, params, strict=True):
        np.testing.assert_allclose(a.W, b.W, **_tol(data))
        np.testing.assert_allclose(a.b, b.b, **_tol(data))


def test_chunks_of_the_engine_equal_one_train(data):
    cfg = TrainConfig(12, "adam", batch_size=5, sampling="shuffle", record_every=2, patience=4)
    hp = Hparams(0.05)
    whole = make_train(SPEC, cfg)(KEY, data, hp)
    eng = make_engine(SPEC, cfg)
    state = eng.init(KEY, data, hp)
    parts = []
    for _ in range(3):
        state, h = eng.run(state, KEY, data, hp, 4)
        parts.append(h)
    history = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    chunked = eng.finish(state, data, history)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **_tol(data))


def test_early_stopping_restores_the_best_recorded_parameters(data):
    # The validation targets are noise: validation MSE soon stops improving.
    noisy = data._replace(y_val=data.y_val + 3.0)
    cfg = TrainConfig(60, "adam", record_every=1, patience=5)
    res = make_train(SPEC, cfg)(KEY, noisy, Hparams(0.2))
    val = np.asarray(res.history.val_mse)[:, 0]
    epochs = np.asarray(res.history.epoch)
    trained = epochs < int(res.epochs_run)
    best = int(np.nanargmin(np.where(trained, val, np.inf)))
    assert int(res.best_epoch) == int(epochs[best])
    assert int(res.epochs_run) < 60
    np.testing.assert_allclose(res.val_mse[0], val[best], **_tol(data))


@pytest.mark.parametrize("weighted", [False, True])
def test_evaluation_in_blocks_equals_one_pass(weighted):
    """Beyond EVAL_ROWS rows the MSE is summed block by block (bounded memory); it equals
    NumPy's weighted mean of the squared errors over all rows."""
    from jaxreg import engine
    from jaxreg.model import init, to_lanes

    spec = MLPSpec((3, 16, 2), activation="tanh")
    params_t = to_lanes(init(jax.random.PRNGKey(0), spec))
    rows = 2 * engine.EVAL_ROWS + 7
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, rows)).astype(np.float32)
    y = rng.normal(size=(2, rows)).astype(np.float32)
    w = rng.random(rows).astype(np.float32) if weighted else None
    got = np.asarray(engine._mse(spec, params_t, x, y, w))
    err = (np.asarray(engine._predict(spec, params_t, x), np.float64) - y) ** 2
    want = err.mean(axis=1) if w is None else (err * w).sum(axis=1) / w.sum()
    np.testing.assert_allclose(got, want, rtol=2e-5)
