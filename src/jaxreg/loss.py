"""Losses and penalties. Params first, then data. Rank 2: imports model.

``y`` and predictions are ``(n, k)``; ``w`` is ``(n,)`` sample weights or None. With
weights, each sample's squared error counts in proportion to its weight.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxreg.model import apply

__all__ = ["l2_penalty", "mse", "mse_per_output", "mse_loss", "rmse"]


def mse_per_output(pred, y, w=None, axis: int = 0):
    """Mean squared error of each output column, ``(k,)``; samples on ``axis``."""
    sq = (pred - y) ** 2
    if w is None:
        return jnp.mean(sq, axis=axis)
    w = jnp.expand_dims(w, 1 - axis)
    return jnp.sum(w * sq, axis=axis) / jnp.sum(w)


def mse(pred, y, w=None):
    """Mean squared error over all samples and outputs (the lecture's ``jnp.mean((f - y)**2)``)."""
    if w is None:
        return jnp.mean((pred - y) ** 2)
    return jnp.mean(mse_per_output(pred, y, w))


def rmse(pred, y, w=None):
    """Root mean squared error (the linear blog's loss)."""
    return jnp.sqrt(mse(pred, y, w))


def l2_penalty(params):
    """Sum of squared weights of every layer, biases excluded (as in the lecture's exercise)."""
    total = 0.0
    for layer in params:
        total += jnp.sum(layer.W**2)
    return total


def mse_loss(params, x, y, activation: str = "tanh"):
    """``mse(apply(params, x), y)``: the lecture's ``loss_fn``."""
    return mse(apply(params, x, activation), y)
