"""Rows padded to bucket sizes: zero weight, never sampled, and no new compilations.

The estimator pads training rows to ``bucket_rows(n)`` with zero-weight rows
(``Dataset.n`` real rows) and prediction batches to a power of two, so that the folds of a
cross-validation, ``partial_fit`` batches and ``GridSearchCV`` reuse executables.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.model_selection import cross_val_score

from jaxreg import MLPRegressor
from jaxreg.data import Dataset, bucket_rows, pad_rows
from jaxreg.engine import TrainConfig, make_train
from jaxreg.model import MLPSpec, init
from jaxreg.optim import Hparams

SPEC = MLPSpec((3, 8, 1), activation="tanh", key_scheme="split")


def test_bucket_sizes():
    sizes = [bucket_rows(n) for n in range(1, 5000)]
    assert all(s >= n for n, s in zip(range(1, 5000), sizes, strict=True))
    assert max(s / n for n, s in zip(range(17, 5000), sizes[16:], strict=True)) <= 1.25
    assert bucket_rows(353) == bucket_rows(354)  # the training folds of a 442-row table


def _padded(x, y, w, size, fill=0.0):
    n = x.shape[0]
    xp, yp = pad_rows(x, size), pad_rows(y, size)
    xp[n:], yp[n:] = fill, fill  # garbage in the padding must change nothing
    return Dataset(
        jnp.asarray(xp, jnp.float32),
        jnp.asarray(yp, jnp.float32),
        w=jnp.asarray(pad_rows(w, size), jnp.float32),
        n=jnp.asarray(n, jnp.int32),
    )


@pytest.mark.parametrize("sampling", ["shuffle", "bootstrap", "full"])
def test_padding_rows_change_nothing(sampling):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(50, 1))
    w = rng.uniform(0.5, 2.0, 50)
    batch = None if sampling == "full" else 16
    cfg = TrainConfig(epochs=30, optimizer="adam", sampling=sampling, batch_size=batch)
    train = jax.jit(make_train(SPEC, cfg))
    key, hp = jax.random.PRNGKey(4), Hparams(1e-2)
    runs = [
        train(key, _padded(x, y, w, size, fill), hp)
        for size, fill in [(64, 0.0), (64, 1e6), (96, 0.0), (128, -3.0)]
    ]
    for other in runs[1:]:
        for a, b in zip(runs[0].params, other.params, strict=True):
            np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(runs[0].history.objective, other.history.objective)
    if sampling == "full":  # the same loss as the unpadded data
        plain = train(
            key,
            Dataset(*(jnp.asarray(a, jnp.float32) for a in (x, y)), w=jnp.asarray(w, jnp.float32)),
            hp,
        )
        for a, b in zip(runs[0].params, plain.params, strict=True):
            np.testing.assert_allclose(a.W, b.W, rtol=2e-5, atol=2e-6)


def test_padded_rows_are_never_drawn_into_a_minibatch():
    # A linear model with a negligible learning rate does not move; the recorded
    # objective of an epoch is the mean over its minibatches of their weighted MSE. With
    # y = 1 on real rows and 1000 on padded rows, any padded row drawn would show.
    x = np.zeros((37, 3))
    y = np.ones((37, 1))
    cfg = TrainConfig(epochs=5, optimizer="sgd", sampling="shuffle", batch_size=8)
    spec = MLPSpec((3, 1), activation="identity", key_scheme="split")
    zeros = jax.tree.map(jnp.zeros_like, init(jax.random.PRNGKey(0), spec))
    data = _padded(x, y, np.ones(37), 64, 1e3)
    res = jax.jit(make_train(spec, cfg))(jax.random.PRNGKey(0), data, Hparams(1e-30), zeros)
    # Zero weights and biases predict 0: every real row's squared error is exactly 1.
    np.testing.assert_array_equal(np.asarray(res.history.objective), 1.0)


def _compiles():
    count = [0]

    def listener(event, *args, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    return count


def test_cross_validation_compiles_at_most_twice_after_a_warm_up_fit():
    X, y = load_diabetes(return_X_y=True)
    count = _compiles()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
        MLPRegressor(epochs=20, random_state=0).fit(X, y)
        before = count[0]
        cross_val_score(MLPRegressor(epochs=20, random_state=0), X, y, cv=5)
        assert count[0] - before <= 2
        before = count[0]
        model = MLPRegressor(epochs=20, random_state=0)
        for n in (40, 45, 33, 47, 38):  # one bucket of batch sizes
            model.partial_fit(X[:n], y[:n])
        first = count[0] - before
        for n in (41, 46, 34):
            model.partial_fit(X[:n], y[:n])
        assert count[0] - before == first  # later batches of the bucket compile nothing


def test_a_batch_size_of_every_row_is_the_bucket_and_compiles_once():
    # An explicit batch_size >= the training rows is one batch an epoch, as "auto" is on a
    # table under 200 rows: the padded bucket, so row counts of one bucket (the folds of a
    # cross-validation, each with batch_size=len(its rows)) share the executable.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(170, 4))
    y = np.tanh(X @ rng.normal(size=4)) + 0.05 * rng.normal(size=170)
    kw = dict(hidden_layer_sizes=(8,), epochs=15, tol=None, random_state=0)
    count = _compiles()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short fits
        auto = MLPRegressor(**kw).fit(X[:166], y[:166])
        before = count[0]
        fits = {n: MLPRegressor(batch_size=n, **kw).fit(X[:n], y[:n]) for n in (166, 167, 170)}
        assert count[0] == before  # every fit reused the "auto" fit's executable
        big = MLPRegressor(batch_size=10_000, **kw).fit(X[:166], y[:166])
    for est in (fits[166], big):
        for a, b in zip(auto.params_, est.params_, strict=True):
            np.testing.assert_array_equal(a.W, b.W)
            np.testing.assert_array_equal(a.b, b.b)
    assert not np.array_equal(fits[167].params_[0].W, fits[166].params_[0].W)
