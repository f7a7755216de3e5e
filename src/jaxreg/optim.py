"""Optimizers and learning-rate schedules. Rank 2: imports validate only.

Every value a sweep may vary travels in ``Hparams`` as a traced array, so changing a
learning rate, an L2 strength or a schedule parameter never recompiles. ``gd`` is the
lecture's hand-coded update ``p - lr * g`` through ``jax.tree.map``, kept as its own code
path; every other name is an Optax optimizer whose learning rate is injected each step
with ``optax.inject_hyperparams``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxreg import validate

__all__ = [
    "LBFGS_FTOL",
    "OPTIMIZERS",
    "SCHEDULES",
    "Hparams",
    "LbfgsState",
    "Optimizer",
    "check_hparams",
    "gd",
    "lbfgs_init",
    "lbfgs_step",
    "learning_rate_at",
    "make_optimizer",
]


class Hparams(NamedTuple):
    """Traced hyperparameters. Any field may be a scalar or, under vmap, a batch of them.

    Attributes:
      learning_rate: initial (peak) learning rate.
      l2: strength of the L2 penalty on weights (not biases), added to the loss.
      decay_rate: ``exponential`` schedule: factor per ``transition_steps`` steps.
      transition_steps: ``exponential`` schedule: steps per factor of ``decay_rate``.
      warmup_steps: ``warmup_cosine``: steps of linear warm-up from 0.
      alpha: ``cosine``/``warmup_cosine``: final learning rate as a fraction of the peak.
      momentum: ``momentum``/``nesterov``: the momentum coefficient.
      weight_decay: ``adamw``: decoupled weight decay.
    """

    learning_rate: Any = 1e-3
    l2: Any = 0.0
    decay_rate: Any = 0.5
    transition_steps: Any = 1000.0
    warmup_steps: Any = 0.0
    alpha: Any = 0.0
    momentum: Any = 0.9
    weight_decay: Any = 1e-4

    def astype(self, dtype) -> Hparams:
        return Hparams(*(jnp.asarray(v, dtype=dtype) for v in self))


SCHEDULES = ("constant", "exponential", "cosine", "warmup_cosine")


def check_hparams(hp: Hparams) -> None:
    """Validate host-side hyperparameters (scalars or arrays; never traced values), naming
    the bad field: ``The 'l2' parameter of Hparams must be a float in [0, inf). Got -1
    instead.``"""
    rules = {
        "learning_rate": (lambda v: v > 0, "a float in (0, inf)"),
        "l2": (lambda v: v >= 0, "a float in [0, inf)"),
        "decay_rate": (lambda v: v > 0, "a float in (0, inf)"),
        "transition_steps": (lambda v: v > 0, "a float in (0, inf)"),
        "warmup_steps": (lambda v: v >= 0, "a float in [0, inf)"),
        "alpha": (lambda v: (v >= 0) & (v <= 1), "a float in [0, 1]"),
        "momentum": (lambda v: (v >= 0) & (v < 1), "a float in [0, 1)"),
        "weight_decay": (lambda v: v >= 0, "a float in [0, inf)"),
    }
    for name, value in hp._asdict().items():
        ok, rule = rules[name]
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise validate.bad("Hparams", name, rule, value) from None
        good = np.isfinite(arr) & ok(arr)
        if arr.size == 0 or not np.all(good):
            shown = np.asarray(value)  # its own dtype: a float32 shows as written
            if arr.size == 0:
                got = "an empty array"
            elif arr.ndim == 0:
                got = validate.show(shown[()])
            else:
                got = f"an array containing {validate.show(shown[~good][0])}"
            raise validate.bad("Hparams", name, rule, got=got)


def learning_rate_at(schedule: str, hp: Hparams, step, total_steps: int):
    """Learning rate for update number ``step`` (0-based) under ``schedule``.

    ``exponential`` is written as ``optax.exponential_decay`` computes it, so the lecture's
    exercise (``exponential_decay(0.003, 1000, 0.5)``) is reproduced bit for bit;
    ``cosine`` decays to ``alpha * lr`` over ``total_steps``; ``warmup_cosine`` rises
    linearly from 0 over ``warmup_steps`` and then follows the cosine.
    """
    validate.choice("learning_rate_at", "schedule", schedule, SCHEDULES)
    lr = hp.learning_rate
    if schedule == "constant":
        return lr
    # The step counter is an int: convert it once, explicitly, to the learning rate's dtype
    # (what implicit promotion did, written out).
    dtype = jnp.result_type(lr)
    s = jnp.asarray(step).astype(dtype)
    if schedule == "exponential":
        p = s / hp.transition_steps
        return jnp.where(step <= 0, lr, lr * jnp.power(hp.decay_rate, p))
    total = jnp.asarray(total_steps, dtype)
    if schedule == "cosine":
        t = jnp.minimum(s, total) / total
        return lr * ((1 - hp.alpha) * 0.5 * (1 + jnp.cos(math.pi * t)) + hp.alpha)
    # warmup_cosine
    warm = jnp.maximum(hp.warmup_steps, 1.0)
    rest = jnp.maximum(total - hp.warmup_steps, 1.0)
    t = jnp.clip((s - hp.warmup_steps) / rest, 0.0, 1.0)
    cos = lr * ((1 - hp.alpha) * 0.5 * (1 + jnp.cos(math.pi * t)) + hp.alpha)
    return jnp.where(s < hp.warmup_steps, lr * s / warm, cos)


class Optimizer(NamedTuple):
    """A pair of pure functions: ``init(params, hp) -> state`` and
    ``step(params, grads, state, lr, hp) -> (params, state)``."""

    init: Callable
    step: Callable


def gd() -> Optimizer:
    """The lecture's hand-coded gradient descent: ``p - lr * g`` on every leaf."""

    def init(params, hp):
        return ()

    def step(params, grads, state, lr, hp):
        def gradient_descent_step(p, g):
            return p - lr * g

        return jax.tree.map(gradient_descent_step, params, grads), state

    return Optimizer(init, step)


def _optax_factories() -> dict[str, tuple[Callable, tuple[str, ...]]]:
    # name -> (optax factory, Hparams fields injected besides the learning rate)
    return {
        "sgd": (lambda learning_rate: optax.sgd(learning_rate), ()),
        "momentum": (
            lambda learning_rate, momentum: optax.sgd(learning_rate, momentum),
            ("momentum",),
        ),
        "nesterov": (
            lambda learning_rate, momentum: optax.sgd(learning_rate, momentum, nesterov=True),
            ("momentum",),
        ),
        "adam": (lambda learning_rate: optax.adam(learning_rate), ()),
        "adamw": (
            lambda learning_rate, weight_decay: optax.adamw(
                learning_rate, weight_decay=weight_decay
            ),
            ("weight_decay",),
        ),
        "rmsprop": (lambda learning_rate: optax.rmsprop(learning_rate), ()),
        "adagrad": (lambda learning_rate: optax.adagrad(learning_rate), ()),
        "lion": (lambda learning_rate: optax.lion(learning_rate), ()),
    }


OPTIMIZERS = ("gd", *_optax_factories(), "lbfgs")


def make_optimizer(name: str) -> Optimizer:
    """The optimizer called ``name`` (see ``OPTIMIZERS``) as an ``Optimizer`` pair."""
    if name == "gd":
        return gd()
    validate.choice("make_optimizer", "name", name, OPTIMIZERS)
    if name == "lbfgs":
        raise validate.bad(
            "make_optimizer", "name", "a first-order optimizer (L-BFGS: lbfgs_step)", name
        )
    factories = _optax_factories()
    factory, extra = factories[name]
    injected = optax.inject_hyperparams(factory)

    def _hyper(hp, lr):
        return {"learning_rate": lr, **{k: getattr(hp, k) for k in extra}}

    # Optax's internals mix its int32 step count with Python floats: they rely on JAX's
    # standard dtype promotion, whatever a caller (the tests: "strict") has set around us.
    def init(params, hp):
        dtype = jax.tree.leaves(params)[0].dtype
        values = {k: jnp.asarray(v, dtype) for k, v in _hyper(hp, hp.learning_rate).items()}
        with jax.numpy_dtype_promotion("standard"):
            return injected(**values).init(params)

    def step(params, grads, state, lr, hp):
        dtype = jax.tree.leaves(params)[0].dtype
        hyper = {k: jnp.asarray(v, dtype) for k, v in _hyper(hp, lr).items()}
        state = state._replace(hyperparams={**state.hyperparams, **hyper})
        with jax.numpy_dtype_promotion("standard"):
            updates, state = injected(**hyper).update(grads, state, params)
            return optax.apply_updates(params, updates), state

    return Optimizer(init, step)


# ---------------------------------------------------------------- L-BFGS

LBFGS_MEMORY = 10  # pairs of the inverse-Hessian estimate (scipy's L-BFGS-B default)
LBFGS_LINESEARCH_STEPS = 20  # evaluations per line search at most (scipy's maxls)
# scipy's stopping rule on the relative reduction of the objective, (f_k - f_k+1) /
# max(|f_k|, |f_k+1|, 1) <= factr * eps with its default factr = 1e7 (float64 eps).
LBFGS_FTOL = 1e7 * float(np.finfo(np.float64).eps)


class LbfgsState(NamedTuple):
    """L-BFGS state: Optax's, the function evaluations so far, whether the last iteration
    met the stopping rule (gradient max-norm <= tol, or no relative reduction above
    ``LBFGS_FTOL``)."""

    inner: Any
    n_fun: jax.Array
    converged: jax.Array


def _lbfgs() -> optax.GradientTransformationExtraArgs:
    return optax.lbfgs(
        memory_size=LBFGS_MEMORY,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=LBFGS_LINESEARCH_STEPS),
    )


def lbfgs_init(params) -> LbfgsState:
    """The state of a fresh L-BFGS run from ``params``."""
    with jax.numpy_dtype_promotion("standard"):
        inner = _lbfgs().init(params)
    return LbfgsState(inner, jnp.zeros((), jnp.int32), jnp.zeros((), bool))


def lbfgs_step(params, state: LbfgsState, fun: Callable, tol):
    """One L-BFGS iteration with Optax's zoom line search on the full-batch ``fun``.

    Returns ``(params, state, value)``: ``value`` is ``fun`` at the incoming ``params``.
    The value and gradient at the accepted point come back from the line search, so an
    iteration costs its line-search evaluations only (plus one on the first iteration);
    ``state.n_fun`` counts them, as scikit-learn's ``max_fun`` does.
    """
    opt = _lbfgs()
    with jax.numpy_dtype_promotion("standard"):
        stored = optax.tree.get(state.inner, "value")
        value, grad = optax.value_and_grad_from_state(fun)(params, state=state.inner)
        updates, inner = opt.update(grad, state.inner, params, value=value, grad=grad, value_fn=fun)
        new_params = optax.apply_updates(params, updates)
    new_value = optax.tree.get(inner, "value")
    new_grad = optax.tree.get(inner, "grad")
    steps = jnp.asarray(optax.tree.get(inner, "num_linesearch_steps"), jnp.int32)
    fresh = (~jnp.isfinite(stored)).astype(jnp.int32)
    g_max = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree.leaves(new_grad)]))
    scale = jnp.maximum(jnp.maximum(jnp.abs(value), jnp.abs(new_value)), 1.0)
    reduction = (value - new_value) / scale
    converged = (g_max <= tol) | (reduction <= LBFGS_FTOL)
    return new_params, LbfgsState(inner, state.n_fun + fresh + steps, converged), value
