"""Minibatch orders beyond SORT_SHUFFLE_ROWS (a keyed Feistel permutation): uniform, a
function of the key alone, padding last, free of host callbacks, and the same in chunked
runs. Dtype-independent, so not part of the float64 pass."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import chisquare

from jaxreg import engine
from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig, make_engine, make_train
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams

KEY = jax.random.PRNGKey(3)


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (24, 2)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + 0.3 * x[:, 1:]).astype(np.float32)
    return Dataset(
        jnp.asarray(x[:16]), jnp.asarray(y[:16]), jnp.asarray(x[16:]), jnp.asarray(y[16:])
    )


def test_feistel_orders_are_uniform_deterministic_and_keep_padding_last(monkeypatch):
    """Every order of 5 real rows as likely (chi-square over 6,000 keys), the padding rows
    in place, and the key alone deciding."""
    monkeypatch.setattr(engine, "SORT_SHUFFLE_ROWS", 4)
    order = jax.jit(jax.vmap(lambda k: engine._shuffled(k, 7, jnp.int32(5))))
    keys = jax.random.split(jax.random.PRNGKey(1), 6_000)
    got = np.asarray(order(keys))
    np.testing.assert_array_equal(got[:, 5:], np.broadcast_to([5, 6], (6_000, 2)))
    np.testing.assert_array_equal(
        np.sort(got[:, :5], axis=1), np.broadcast_to(np.arange(5), (6_000, 5))
    )
    np.testing.assert_array_equal(np.asarray(order(keys[:3])), got[:3])  # the key decides
    seen = {t: 0 for t in itertools.permutations(range(5))}
    for row in map(tuple, got[:, :5]):
        seen[row] += 1
    assert chisquare(list(seen.values())).pvalue > 1e-3


def test_feistel_orders_place_every_row_uniformly():
    """Over 300 rows (a domain of 512) and 4,000 keys: each row's position is uniform over
    the deciles (chi-square per row; about as many small p-values as chance gives), and a
    row is followed by the next row no more often than 1 in 300."""
    rows = 300
    order = jax.jit(jax.vmap(lambda k: engine._feistel_order(k, rows, rows)))
    got = np.asarray(order(jax.random.split(jax.random.PRNGKey(2), 4_000)))
    np.testing.assert_array_equal(np.sort(got, axis=1), np.broadcast_to(np.arange(rows), got.shape))
    position = np.argsort(got, axis=1)  # position[k, r]: where row r comes under key k
    p = np.array(
        [
            chisquare(np.bincount(position[:, r] * 10 // rows, minlength=10)).pvalue
            for r in range(rows)
        ]
    )
    assert p.min() > 1e-5 and np.mean(p < 0.01) < 0.04, (p.min(), np.mean(p < 0.01))
    successor = np.mean(got[:, 1:] - got[:, :-1] == 1)
    assert abs(successor - 1 / rows) < 0.5 / rows


def test_the_training_loop_of_a_large_table_has_no_host_callback():
    """JAX's persistent compilation cache refuses executables with host callbacks; the
    order of more than SORT_SHUFFLE_ROWS rows is computed inside the compiled function."""
    rows = engine.SORT_SHUFFLE_ROWS + 1
    text = jax.jit(lambda k: engine._shuffled(k, rows)).lower(KEY).as_text()
    assert "callback" not in text.lower()
    assert "stablehlo.sort" not in text  # the O(rows) permutation, not the sort


def test_feistel_orders_train_the_same_in_chunks(monkeypatch):
    """The order of an epoch depends on its key only: chunked runs equal one."""
    data = _data()
    monkeypatch.setattr(engine, "SORT_SHUFFLE_ROWS", 8)
    spec = MLPSpec((2, 7, 1), activation="softplus")  # not compiled by other tests
    cfg = TrainConfig(4, "adam", batch_size=5, sampling="shuffle", record_every=2)
    hp = Hparams(0.05)
    whole = make_train(spec, cfg)(KEY, data, hp)
    eng = make_engine(spec, cfg)
    state = eng.init(KEY, data, hp)
    parts = []
    for _ in range(2):
        state, h = eng.run(state, KEY, data, hp, 2)
        parts.append(h)
    history = jax.tree.map(lambda *a: jnp.concatenate(a), *parts)
    chunked = eng.finish(state, data, history)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
