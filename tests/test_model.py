import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxreg.model import (
    Layer,
    MLPSpec,
    apply,
    apply_lanes,
    from_lanes,
    init,
    n_params,
    to_lanes,
)


def numpy_forward(params, x, act=np.tanh):
    for layer in params[:-1]:
        x = act(x @ np.asarray(layer.W) + np.asarray(layer.b))
    return x @ np.asarray(params[-1].W) + np.asarray(params[-1].b)


def test_init_reproduces_the_lectures_weights():
    # The lecture: key, subkey = split(key) per layer; W = normal * sqrt(2 / in); b = ones.
    key = jax.random.PRNGKey(1234)
    params = init(key, MLPSpec((1, 10, 10, 10, 1)))
    sizes = (1, 10, 10, 10, 1)
    for i, layer in enumerate(params):
        key, sub = jax.random.split(key)
        w = jax.random.normal(sub, (sizes[i], sizes[i + 1]), dtype=jnp.float32) * jnp.sqrt(
            jnp.float32(2 / sizes[i])
        )
        np.testing.assert_array_equal(layer.W, w)
        np.testing.assert_array_equal(layer.b, np.ones((1, sizes[i + 1])))


def test_split_scheme_and_kaiming_gain_follow_the_blog():
    key = jax.random.PRNGKey(7)
    spec = MLPSpec(
        (1, 128, 1), init="kaiming_normal", gain=5 / 3, bias_init="zeros", key_scheme="split"
    )
    p = init(key, spec)
    k1, k2 = jax.random.split(key, 2)
    f32 = jnp.float32  # init's default dtype, also under JAX_ENABLE_X64=1
    np.testing.assert_array_equal(p[0].W, jax.random.normal(k1, (1, 128), f32) * (5 / 3) / 1.0)
    np.testing.assert_allclose(
        p[1].W, jax.random.normal(k2, (128, 1), f32) * (5 / 3) / math.sqrt(128.0), rtol=1e-6
    )
    assert not np.any(p[0].b)


def test_glorot_uniform_bounds_and_lecun_scale():
    p = init(jax.random.PRNGKey(0), MLPSpec((50, 200, 1), init="glorot_uniform"))
    limit = np.sqrt(6 / 250)
    assert np.abs(p[0].W).max() <= limit and np.abs(p[0].W).max() > 0.9 * limit
    q = init(jax.random.PRNGKey(0), MLPSpec((400, 400, 1), init="lecun_normal"))
    assert abs(float(np.std(q[0].W)) - np.sqrt(1 / 400)) < 0.005


@pytest.mark.parametrize(
    "act, ref",
    [
        ("tanh", np.tanh),
        ("relu", lambda v: np.maximum(v, 0)),
        ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
        ("identity", lambda v: v),
        ("elu", lambda v: np.where(v > 0, v, np.expm1(v))),
    ],
)
def test_apply_matches_numpy(act, ref):
    spec = MLPSpec((3, 8, 5, 2), activation=act)
    params = init(jax.random.PRNGKey(2), spec)
    x = np.random.default_rng(0).normal(size=(17, 3)).astype(np.float32)
    np.testing.assert_allclose(
        apply(params, x, act), numpy_forward(params, x, ref), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        apply_lanes(to_lanes(params), x.T, act).T,
        numpy_forward(params, x, ref),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("n", [5, 64, 65, 3 * 64 + 7])
def test_apply_members_in_blocks_matches_each_member_and_numpy(n, monkeypatch):
    # Beyond PREDICT_BLOCK rows apply_members maps over blocks (padded at the end): each
    # member's rows as apply gives them, and as NumPy's forward pass.
    from jaxreg import model

    monkeypatch.setattr(model, "PREDICT_BLOCK", 64)
    model._members_forward.cache_clear()
    try:
        spec = MLPSpec((3, 8, 5, 2))
        members = [init(jax.random.PRNGKey(k), spec) for k in range(3)]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
        x = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
        out = np.asarray(model.apply_members(stacked, x))
        assert out.shape == (3, n, 2)
        for m, params in enumerate(members):
            alone = np.asarray(apply(params, x))
            np.testing.assert_allclose(out[m], alone, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(out[m], numpy_forward(params, x), rtol=1e-5, atol=1e-5)
    finally:
        model._members_forward.cache_clear()


def test_lane_conversion_is_exact():
    params = init(jax.random.PRNGKey(3), MLPSpec((2, 4, 1)))
    back = from_lanes(to_lanes(params))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=2, max_size=6))
def test_n_params_counts_every_weight_and_bias(sizes):
    spec = MLPSpec(tuple(sizes))
    params = jax.eval_shape(lambda k: init(k, spec), jax.random.PRNGKey(0))
    expect = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert n_params(spec) == n_params(params) == expect
    assert all(isinstance(p, Layer) for p in params)


def test_lecture_exercise_parameter_counts():
    assert MLPSpec((1, 10, 10, 10, 1)).n_params == 251
    assert MLPSpec((1, 6, 6, 6, 6, 6, 1)).n_params == 187


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(layer_sizes=(1,)),
            r"The 'layer_sizes' parameter of MLPSpec must be a sequence of "
            r"positive ints listing at least an input and an output width\. Got \(1,\) instead\.",
        ),
        (dict(layer_sizes=(1, 0, 1)), r"'layer_sizes' .* positive ints .* Got \(1, 0, 1\) instead"),
        (dict(layer_sizes=(1, 2.5, 1)), r"'layer_sizes' .* positive ints .* Got \(1, 2\.5, 1\)"),
        (
            dict(activation="swish"),
            r"'activation' parameter of MLPSpec must be a str among "
            r"\{'elu', 'gelu', .*\}\. Got 'swish' instead",
        ),
        (dict(init="xavier"), r"'init' parameter of MLPSpec must be a str among .* Got 'xavier'"),
        (
            dict(bias_init="twos"),
            r"'bias_init' parameter of MLPSpec must be a str among "
            r"\{'glorot_uniform', 'normal', 'ones', 'zeros'\}\. Got 'twos'",
        ),
        (dict(gain=-1.0), r"'gain' parameter of MLPSpec must be a float in \(0, inf\)\. Got -1\.0"),
    ],
)
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPSpec(**kwargs)


def test_spec_is_hashable_and_static():
    assert hash(MLPSpec()) == hash(MLPSpec((1, 10, 10, 10, 1)))
    assert MLPSpec([1, 2, 1]).layer_sizes == (1, 2, 1)
