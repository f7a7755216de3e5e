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


@pytest.mark.parametrize("o, k, n", [(10, 10, 400), (16, 3, 32), (4, 20, 48), (5, 6, 37)])
def test_small_layer_gradients_equal_autodiff(o, k, n):
    """``_affine_small`` (the form under XLA's single-kernel loops) gives the gradients of
    ``w @ x + b``: lane-blocked where the widths and sample count allow, else as
    ``_affine``."""
    from jaxreg.model import _affine_small, _lane_blocked_grad

    key = jax.random.PRNGKey(5)
    w, x, c = (
        jax.random.normal(jax.random.fold_in(key, i), s)
        for i, s in enumerate([(o, k), (k, n), (o, n)])
    )
    b = jax.random.normal(jax.random.fold_in(key, 9), (o, 1))

    def loss(f, w, b, x):
        return jnp.sum(c * jnp.tanh(f(w, b, x)))

    got = jax.grad(functools.partial(loss, _affine_small), argnums=(0, 1, 2))(w, b, x)
    want = jax.grad(functools.partial(loss, lambda w, b, x: w @ x + b), argnums=(0, 1, 2))(w, b, x)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5)
    if n % 16 == 0:
        g = np.asarray(c, np.float64)
        np.testing.assert_allclose(
            _lane_blocked_grad(c, x), g @ np.asarray(x, np.float64).T, rtol=1e-5, atol=1e-4
        )
