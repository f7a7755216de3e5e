import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxreg.loss import l2_penalty, mse, mse_loss, mse_per_output, rmse
from jaxreg.model import MLPSpec, init
from jaxreg.optim import Hparams, check_hparams, gd, learning_rate_at, make_optimizer


def test_losses_against_numpy():
    rng = np.random.default_rng(0)
    p, y, w = rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), rng.random(20)
    assert np.isclose(mse(p, y), np.mean((p - y) ** 2))
    assert np.isclose(rmse(p, y), np.sqrt(np.mean((p - y) ** 2)))
    np.testing.assert_allclose(
        mse_per_output(p, y, w), np.average((p - y) ** 2, axis=0, weights=w), rtol=1e-6
    )
    np.testing.assert_allclose(
        mse_per_output(p.T, y.T, w, axis=1), np.average((p - y) ** 2, axis=0, weights=w), rtol=1e-6
    )


def test_l2_penalty_counts_weights_not_biases():
    params = init(jax.random.PRNGKey(0), MLPSpec((2, 3, 1)))
    expect = sum(float(np.sum(np.asarray(p.W) ** 2)) for p in params)
    assert np.isclose(l2_penalty(params), expect)
    params2 = tuple(p._replace(b=p.b * 100) for p in params)
    assert np.isclose(l2_penalty(params2), expect)


def test_gradient_against_finite_differences():
    with jax.enable_x64(True):
        spec = MLPSpec((2, 5, 1))
        params = init(jax.random.PRNGKey(1), spec, dtype=jnp.float64)
        rng = np.random.default_rng(1)
        x, y = rng.normal(size=(30, 2)), rng.normal(size=(30, 1))
        grads = jax.grad(mse_loss)(params, x, y)
        loss = jax.jit(mse_loss)
        leaves, treedef = jax.tree.flatten(params)
        gleaves = jax.tree.leaves(grads)
        eps = 1e-6
        for i, leaf in enumerate(leaves):
            for j in range(leaf.size):
                bump = np.zeros(leaf.size)
                bump[j] = eps
                plus = list(leaves)
                minus = list(leaves)
                plus[i] = leaf + bump.reshape(leaf.shape)
                minus[i] = leaf - bump.reshape(leaf.shape)
                fd = (
                    loss(jax.tree.unflatten(treedef, plus), x, y)
                    - loss(jax.tree.unflatten(treedef, minus), x, y)
                ) / (2 * eps)
                assert np.isclose(float(gleaves[i].ravel()[j]), float(fd), rtol=1e-5, atol=1e-8)


def test_gd_step_is_p_minus_lr_g_and_equals_optax_sgd():
    params = init(jax.random.PRNGKey(2), MLPSpec((1, 4, 1)))
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    new, _ = gd().step(params, grads, (), 0.1, Hparams())
    for p, n in zip(jax.tree.leaves(params), jax.tree.leaves(new), strict=True):
        np.testing.assert_array_equal(n, np.asarray(p) - np.float32(0.1) * np.float32(0.5))
    sgd = make_optimizer("sgd")
    hp = Hparams(learning_rate=jnp.float32(0.1))
    new2, _ = sgd.step(params, grads, sgd.init(params, hp), jnp.float32(0.1), hp)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(new2), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.optax_reference
def test_every_optimizer_name_matches_optax():
    params = init(jax.random.PRNGKey(3), MLPSpec((1, 3, 1)))
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)
    hp = Hparams().astype(jnp.float32)
    refs = {
        "adam": optax.adam(1e-3),
        "rmsprop": optax.rmsprop(1e-3),
        "momentum": optax.sgd(1e-3, 0.9),
        "nesterov": optax.sgd(1e-3, 0.9, nesterov=True),
        "adamw": optax.adamw(1e-3, weight_decay=1e-4),
        "adagrad": optax.adagrad(1e-3),
    }
    for name, ref in refs.items():
        opt = make_optimizer(name)
        state, rstate, p, q = opt.init(params, hp), ref.init(params), params, params
        for _ in range(3):
            p, state = opt.step(p, grads, state, hp.learning_rate, hp)
            u, rstate = ref.update(grads, rstate, q)
            q = optax.apply_updates(q, u)
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


@pytest.mark.optax_reference
def test_schedules_match_optax():
    hp = Hparams(
        learning_rate=3e-3, decay_rate=0.5, transition_steps=1000.0, alpha=0.1, warmup_steps=100.0
    ).astype(jnp.float32)
    steps = jnp.arange(0, 4001, 37, dtype=jnp.int32)
    exp = optax.exponential_decay(0.003, 1000, 0.5)
    np.testing.assert_array_equal(
        jax.vmap(lambda s: learning_rate_at("exponential", hp, s, 4000))(steps), exp(steps)
    )
    cos = optax.cosine_decay_schedule(0.003, 4000, alpha=0.1)
    np.testing.assert_allclose(
        jax.vmap(lambda s: learning_rate_at("cosine", hp, s, 4000))(steps), cos(steps), rtol=1e-5
    )
    wc = optax.warmup_cosine_decay_schedule(0.0, 0.003, 100, 4000, end_value=0.0003)
    np.testing.assert_allclose(
        jax.vmap(lambda s: learning_rate_at("warmup_cosine", hp, s, 4000))(steps),
        wc(steps),
        rtol=1e-4,
        atol=1e-9,
    )
    assert float(learning_rate_at("constant", hp, 123, 4000)) == np.float32(3e-3)


@pytest.mark.parametrize(
    "field, value, rule, shown",
    [
        ("learning_rate", -1.0, r"\(0, inf\)", "-1.0"),
        ("learning_rate", float("nan"), r"\(0, inf\)", "nan"),
        ("l2", -0.1, r"\[0, inf\)", "-0.1"),
        ("momentum", 1.0, r"\[0, 1\)", "1.0"),
        ("alpha", 2.0, r"\[0, 1\]", "2.0"),
        ("learning_rate", "fast", r"\(0, inf\)", "'fast'"),
        ("l2", np.float32(-0.1), r"\[0, inf\)", "-0.1"),
        ("l2", np.array([0.0, -0.5]), r"\[0, inf\)", "an array containing -0.5"),
        ("l2", np.array([]), r"\[0, inf\)", "an empty array"),
    ],
)
def test_check_hparams_names_the_field(field, value, rule, shown):
    with pytest.raises(
        ValueError,
        match=f"^The '{field}' parameter of Hparams must be a float "
        f"in {rule}. Got {shown} instead.$",
    ):
        check_hparams(Hparams()._replace(**{field: value}))
    check_hparams(Hparams(learning_rate=np.array([1e-3, 1e-2])))


def test_unknown_optimizer_and_schedule():
    with pytest.raises(
        ValueError,
        match="'name' parameter of make_optimizer must be a str "
        "among .*'adam'.* Got 'adamax' instead",
    ):
        make_optimizer("adamax")
    with pytest.raises(
        ValueError,
        match="'schedule' parameter of learning_rate_at must be a "
        "str among .*'cosine'.* Got 'step' instead",
    ):
        learning_rate_at("step", Hparams(), 0, 10)
