"""Model: a frozen MLP spec, params as a tuple of ``Layer(W, b)``, init and apply.

Convention (the lecture's): ``x`` is ``(n, d)``, ``W`` is ``(fan_in, fan_out)``, ``b`` is
``(1, fan_out)`` and a layer computes ``x @ W + b``. Hidden layers apply the activation,
the last layer is affine. ``apply(params, x)`` takes params first.

The training engine works in a *lane layout* instead: samples on the last axis
(``x_t`` is ``(d, n)``) and transposed weights (``W_t`` is ``(fan_out, fan_in)``,
``b_t`` is ``(fan_out, 1)``), so the sample axis fills the CPU's vector lanes and every
product is a plain matrix product. ``to_lanes``/``from_lanes`` convert exactly.
Rank 1: imports only rank 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxreg import runtime, validate

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "Layer",
    "MLPSpec",
    "apply",
    "apply_lanes",
    "from_lanes",
    "init",
    "n_params",
    "to_lanes",
]


class Layer(NamedTuple):
    """One affine layer: ``W`` of shape ``(fan_in, fan_out)``, ``b`` of shape ``(1, fan_out)``."""

    W: Any  # a JAX or NumPy array
    b: Any


def _identity(x):
    return x


ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "identity": _identity,
}

# PyTorch's recommended gains (torch.nn.init.calculate_gain); 1 where none is defined.
_DEFAULT_GAIN = {"tanh": 5.0 / 3.0, "relu": math.sqrt(2.0), "selu": 0.75}

INITIALIZERS = ("he_normal", "kaiming_normal", "glorot_uniform", "lecun_normal", "normal")
_BIAS_INITS = ("ones", "zeros", "normal", "glorot_uniform")
_KEY_SCHEMES = ("chain", "split")


@dataclass(frozen=True)
class MLPSpec:
    """A multilayer perceptron, static under jit.

    Attributes:
      layer_sizes: widths from input to output, e.g. ``(1, 10, 10, 10, 1)``.
      activation: one of ``ACTIVATIONS`` for hidden layers.
      init: weight initializer. ``he_normal`` is the lecture's ``normal * sqrt(2/fan_in)``;
        ``kaiming_normal`` is ``normal * gain / sqrt(fan_in)`` (gain from ``gain`` or the
        activation); ``glorot_uniform``; ``lecun_normal`` is ``normal * sqrt(1/fan_in)``.
        ``normal`` is a standard normal (the linear blog's ``randn``).
      gain: Kaiming gain; None picks the activation's recommended gain.
      bias_init: ``ones`` (the lecture), ``zeros``, ``normal`` (standard normal) or
        ``glorot_uniform`` (scikit-learn's: uniform within the layer's Glorot bound
        ``sqrt(6 / (fan_in + fan_out))``, as its weights).
      key_scheme: how ``init`` derives layer keys: ``chain`` (the lecture: split the key
        once per layer and carry the first half) or ``split`` (the blog: one split into
        as many keys as layers).
    """

    layer_sizes: tuple[int, ...] = (1, 10, 10, 10, 1)
    activation: str = "tanh"
    init: str = "he_normal"
    gain: float | None = None
    bias_init: str = "ones"
    key_scheme: str = "chain"

    def __post_init__(self):
        sizes = tuple(self.layer_sizes)
        object.__setattr__(self, "layer_sizes", sizes)
        # Python ints only (not NumPy's): the spec is written to JSON as it is.
        if len(sizes) < 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
        ):
            raise validate.bad(
                "MLPSpec",
                "layer_sizes",
                "a sequence of positive ints listing at least an input and an output width",
                sizes,
            )
        validate.choice("MLPSpec", "activation", self.activation, ACTIVATIONS)
        validate.choice("MLPSpec", "init", self.init, INITIALIZERS)
        validate.choice("MLPSpec", "bias_init", self.bias_init, _BIAS_INITS)
        validate.choice("MLPSpec", "key_scheme", self.key_scheme, _KEY_SCHEMES)
        if self.gain is not None:
            validate.real("MLPSpec", "gain", self.gain, low=0, low_open=True)

    @property
    def n_params(self) -> int:
        s = self.layer_sizes
        return sum(a * b + b for a, b in zip(s[:-1], s[1:], strict=True))

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]


def n_params(spec_or_params) -> int:
    """Number of trainable scalars of a spec or a params tuple."""
    if isinstance(spec_or_params, MLPSpec):
        return spec_or_params.n_params
    return sum(int(leaf.size) for leaf in jax.tree.leaves(spec_or_params))


def _init_weight(key, spec: MLPSpec, fan_in: int, fan_out: int, dtype):
    shape = (fan_in, fan_out)
    if spec.init == "he_normal":
        # Written exactly as the lecture writes it, so its keys give its weights.
        return jax.random.normal(key, shape=shape, dtype=dtype) * jnp.sqrt(2 / fan_in)
    if spec.init == "kaiming_normal":
        gain = spec.gain if spec.gain is not None else _DEFAULT_GAIN.get(spec.activation, 1.0)
        # The blog's order of operations: normal * gain / sqrt(fan_in).
        return jax.random.normal(key, shape, dtype=dtype) * gain / jnp.sqrt(float(fan_in))
    if spec.init == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, dtype=dtype, minval=-limit, maxval=limit)
    if spec.init == "normal":
        return jax.random.normal(key, shape, dtype=dtype)
    # lecun_normal
    return jax.random.normal(key, shape, dtype=dtype) * jnp.sqrt(1 / fan_in)


def init(key, spec: MLPSpec, dtype=jnp.float32) -> tuple[Layer, ...]:
    """Initial parameters for ``spec`` from ``key``.

    With the lecture's spec (``he_normal``, ``ones``, ``chain``), ``PRNGKey(1234)`` gives
    the lecture's weights exactly.

    Example:
      >>> params = init(jax.random.PRNGKey(1234), MLPSpec((1, 10, 10, 10, 1)))
      >>> [p.W.shape for p in params]
      [(1, 10), (10, 10), (10, 10), (10, 1)]
    """
    sizes = spec.layer_sizes
    n_layers = len(sizes) - 1
    if spec.key_scheme == "chain":
        keys = []
        for _ in range(n_layers):
            key, subkey = jax.random.split(key)
            keys.append(subkey)
    else:
        keys = list(jax.random.split(key, n_layers))
    layers = []
    for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True):
        w = _init_weight(k, spec, fan_in, fan_out, dtype)
        if spec.bias_init == "normal":
            b = jax.random.normal(jax.random.fold_in(k, 1), (1, fan_out), dtype=dtype)
        elif spec.bias_init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            b = jax.random.uniform(
                jax.random.fold_in(k, 1), (1, fan_out), dtype=dtype, minval=-limit, maxval=limit
            )
        else:
            fill = jnp.ones if spec.bias_init == "ones" else jnp.zeros
            b = fill((1, fan_out), dtype=dtype)
        layers.append(Layer(w, b))
    return tuple(layers)


def apply(params, x, activation: str | Callable = "tanh"):
    """Forward pass: ``x`` of shape ``(n, d)`` to predictions of shape ``(n, k)``."""
    sigma = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    *hidden, last = params
    for layer in hidden:
        x = sigma(x @ layer.W + layer.b)
    return x @ last.W + last.b


def to_lanes(params) -> tuple[Layer, ...]:
    """Params in the lane layout: ``W_t = W.T`` of shape ``(fan_out, fan_in)`` and
    ``b_t = b.T`` of shape ``(fan_out, 1)``."""
    return tuple(Layer(p.W.T, p.b.T) for p in params)


def from_lanes(params_t) -> tuple[Layer, ...]:
    """Inverse of ``to_lanes`` (exact: a transpose moves values, it does not round them)."""
    return tuple(Layer(p.W.T, p.b.T) for p in params_t)


@jax.custom_vjp
def _affine(w, b, x):
    """``w @ x + b`` whose gradient is made of plain ``(m, k) @ (k, n)`` products only.

    Autodiff of ``w @ x + b`` gives ``g @ x.T`` and ``w.T @ g`` as dots that contract a
    leading axis (a "transposed" dot) and the bias gradient as a sum over the lanes.
    XLA:CPU compiles transposed dots inside a single-kernel while loop as slow generic loops
    and a lane sum as a sequential loop (see benchmarks/README.md), so the backward pass
    materializes the two small transposes (an optimization barrier keeps XLA from folding
    them back into the dots) and takes the bias gradient as the product ``g @ ones``. The
    values are the same sums.

    Inside ``jax.shard_map`` this needs ``check_vma=False`` (a custom VJP's cotangent for a
    replicated input such as the data would otherwise have to be summed over devices).
    """
    return w @ x + b


def _affine_fwd(w, b, x):
    return w @ x + b, (w, x)


def _affine_bwd(res, g):
    w, x = res
    x_t, w_t = jax.lax.optimization_barrier((x.T, w.T))
    ones = jnp.ones((g.shape[1], 1), g.dtype)
    return g @ x_t, g @ ones, w_t @ g


_affine.defvjp(_affine_fwd, _affine_bwd)

LANE_BLOCK = 16  # lanes per partial sum in _lane_blocked_grad (one AVX-512 register)
SMALL_WIDTH = 16  # widest layer whose weight gradient _affine_small takes by lane blocks


def _lane_blocked_grad(g, x):
    """``g @ x.T`` for ``g`` ``(o, n)`` and ``x`` ``(k, n)``, ``n`` a multiple of
    ``LANE_BLOCK``: elementwise products summed over blocks of lanes, ``(o, k, LANE_BLOCK)``,
    then the last ``LANE_BLOCK`` lanes by a product with ones. Inside XLA's single-kernel
    loop this is one vectorized pass (a sum over a non-lane axis), where the product with a
    transposed ``x`` runs a tiled GEMM whose 10-wide output does not fill a vector."""
    o, k, n = g.shape[0], x.shape[0], g.shape[1]
    blocks = n // LANE_BLOCK
    part = jnp.sum(
        g.reshape(o, 1, blocks, LANE_BLOCK) * x.reshape(1, k, blocks, LANE_BLOCK), axis=2
    )
    ones = jnp.ones((LANE_BLOCK, 1), g.dtype)
    return (part.reshape(o * k, LANE_BLOCK) @ ones).reshape(o, k)


@jax.custom_vjp
def _affine_small(w, b, x):
    """``_affine`` for processes running XLA's single-kernel loops (``runtime.
    small_loop_flags``): the weight gradient of a layer with both widths in
    ``2..SMALL_WIDTH`` over a multiple of ``LANE_BLOCK`` samples comes from
    ``_lane_blocked_grad`` (the lecture's epoch: 15.0 -> 11.5 us, benchmarks/README.md);
    other layers as ``_affine``. With XLA's default options the lane-blocked form is slower
    (a separate reduction kernel against YNNPACK's product), hence two functions."""
    return w @ x + b


def _affine_small_bwd(res, g):
    w, x = res
    o, k, n = g.shape[0], x.shape[0], g.shape[1]
    if 1 < o <= SMALL_WIDTH and 1 < k <= SMALL_WIDTH and n % LANE_BLOCK == 0:
        w_t = jax.lax.optimization_barrier(w.T)
        ones = jnp.ones((n, 1), g.dtype)
        return _lane_blocked_grad(g, x), g @ ones, w_t @ g
    return _affine_bwd(res, g)


_affine_small.defvjp(_affine_fwd, _affine_small_bwd)


def apply_lanes(params_t, x_t, activation: str | Callable = "tanh"):
    """Forward pass in the lane layout: ``x_t`` ``(d, n)`` to ``(k, n)``.

    Differentiable in reverse mode (each layer carries a custom VJP; see ``_affine``).
    """
    sigma = ACTIVATIONS[activation] if isinstance(activation, str) else activation
    affine = _affine_small if runtime.small_loop_flags() else _affine
    *hidden, last = params_t
    for layer in hidden:
        x_t = sigma(affine(layer.W, layer.b, x_t))
    return affine(last.W, last.b, x_t)


# Rows per block of apply_members. A forward pass over a million rows at once moves every
# layer's activations (256 MB at width 64 in float32) through memory; blocks of 4096 rows stay
# in the caches and run 3-4x faster (1,048,576 x 8 rows, 8-64-32-1: 0.33 -> 0.12 s in float32,
# 0.54 -> 0.23 s in float64; benchmarks/README.md).
PREDICT_BLOCK = 4096


@functools.cache
def _members_forward(activation: str):
    one = jax.vmap(lambda p, x: apply(p, x, activation), in_axes=(0, None))

    def blocked(params, x):
        n, d = x.shape
        if n <= PREDICT_BLOCK:
            return one(params, x)
        blocks = -(-n // PREDICT_BLOCK)
        x = jnp.pad(x, ((0, blocks * PREDICT_BLOCK - n), (0, 0)))
        out = jax.lax.map(lambda xb: one(params, xb), x.reshape(blocks, PREDICT_BLOCK, d))
        out = jnp.moveaxis(out, 0, 1)  # (M, blocks, PREDICT_BLOCK, k)
        return out.reshape(out.shape[0], blocks * PREDICT_BLOCK, out.shape[-1])[:, :n]

    return jax.jit(blocked)


def apply_members(params, x, activation: str = "tanh"):
    """Every member's output at once: ``params`` with a leading member axis ``M`` and ``x``
    ``(n, d)`` give ``(M, n, k)``; one compiled function per activation and shape. Beyond
    ``PREDICT_BLOCK`` rows, the rows go through in blocks of that many."""
    return _members_forward(activation)(params, x)
