"""The lane forward pass carries custom VJPs (plain products, bias sums as products); its
gradients must equal autodiff of the lecture-layout ``apply`` and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreg.model import MLPSpec, apply, apply_lanes, from_lanes, init, to_lanes


@functools.partial(jax.jit, static_argnums=3)
def _loss_lanes(params_t, x, y, act):
    return jnp.mean((apply_lanes(params_t, x.T, act).T - y) ** 2)


@functools.partial(jax.jit, static_argnums=3)
def _loss_plain(params, x, y, act):
    return jnp.mean((apply(params, x, act) - y) ** 2)


@pytest.mark.parametrize(
    "sizes, act", [((1, 7, 5, 1), "tanh"), ((3, 4, 2), "relu"), ((2, 6, 6, 3), "gelu")]
)
def test_lane_gradients_equal_lecture_layout_autodiff(sizes, act):
    key = jax.random.PRNGKey(3)
    params = init(key, MLPSpec(sizes, activation=act))
    x = jax.random.normal(jax.random.fold_in(key, 1), (37, sizes[0]))
    y = jax.random.normal(jax.random.fold_in(key, 2), (37, sizes[-1]))
    g_lanes = from_lanes(jax.grad(_loss_lanes)(to_lanes(params), x, y, act))
    g_plain = jax.grad(_loss_plain)(params, x, y, act)
    for a, b in zip(jax.tree.leaves(g_lanes), jax.tree.leaves(g_plain), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_lane_gradients_match_finite_differences_in_float64():
    with jax.enable_x64(True):
        spec = MLPSpec((1, 4, 3, 1))
        params_t = to_lanes(init(jax.random.PRNGKey(0), spec, dtype=jnp.float64))
        x = jnp.linspace(0.0, 5.0, 23, dtype=jnp.float64)[:, None]
        y = jnp.sin(x)
        grads = jax.grad(_loss_lanes)(params_t, x, y, "tanh")
        leaves, treedef = jax.tree.flatten(params_t)
        eps = 1e-6
        for i, leaf in enumerate(leaves):
            flat = np.asarray(leaf).ravel()
            for j in range(flat.size):
                bumped = []
                for sign in (1, -1):
                    f = flat.copy()
                    f[j] += sign * eps
                    new = list(leaves)
                    new[i] = jnp.asarray(f.reshape(leaf.shape))
                    bumped.append(
                        float(_loss_lanes(jax.tree.unflatten(treedef, new), x, y, "tanh"))
                    )
                fd = (bumped[0] - bumped[1]) / (2 * eps)
                got = float(np.asarray(jax.tree.leaves(grads)[i]).ravel()[j])
                assert got == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_lane_gradients_under_vmap_equal_one_at_a_time():
    spec = MLPSpec((1, 5, 1))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(3)])
    params_t = jax.vmap(lambda k: to_lanes(init(k, spec)))(keys)
    x = jnp.linspace(0.0, 1.0, 11)[:, None]
    y = x**2
    grad = jax.grad(_loss_lanes)
    batched = jax.jit(jax.vmap(lambda p: grad(p, x, y, "tanh")))(params_t)
    for m in range(3):
        one = grad(jax.tree.map(lambda p, m=m: p[m], params_t), x, y, "tanh")
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(one), strict=True):
            np.testing.assert_allclose(a[m], b, rtol=1e-6, atol=1e-7)
