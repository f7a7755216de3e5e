"""Flax NNX: ``nnx.Linear`` layers, ``nnx.Optimizer(model, tx, wrt=nnx.Param)``.

Variants:

- ``flax-step``: the training step under ``nnx.jit`` (modules passed in and updated in
  place), called from a Python loop: NNX's documented training loop.
- ``flax-loop``: the whole loop in one ``jax.jit``: ``nnx.split`` the model and its
  optimizer once, ``nnx.merge`` / ``optimizer.update`` / ``nnx.state`` inside a
  ``lax.fori_loop`` (full batch) or ``lax.scan`` (minibatches), compiled ahead of time
  (``lower().compile()``, timed apart).

Ensembles: ``jax.vmap`` of the functional step (``flax-step``: vmapped step, jitted, in a
Python loop) or of the whole loop (``flax-loop``).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from common import as_numpy, batches, epoch_orders


def versions() -> str:
    import flax
    import jax

    return f"flax {flax.__version__}, jax {jax.__version__}"


class _Core:
    """An NNX MLP of ``sizes`` and an optimizer, with functional views for the jit loops."""

    def __init__(self, sizes, tx):
        import jax.numpy as jnp
        from flax import nnx

        class MLP(nnx.Module):
            def __init__(self, sizes, rngs):
                pairs = zip(sizes[:-1], sizes[1:], strict=True)
                self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])

            def __call__(self, x):
                for layer in self.layers[:-1]:
                    x = jnp.tanh(layer(x))
                return self.layers[-1](x)

        self.nnx, self.tx = nnx, tx
        self.model = MLP(sizes, nnx.Rngs(0))  # its own weights are overwritten each run

        def loss_fn(model, x, y):
            return jnp.mean((model(x) - y) ** 2)

        self.loss_fn = loss_fn
        self.graphdef, _ = nnx.split((self.model, nnx.Optimizer(self.model, tx, wrt=nnx.Param)))

    def set_params(self, model, params) -> None:
        import jax.numpy as jnp

        for layer, (w, b) in zip(model.layers, params, strict=True):
            layer.kernel.value = jnp.asarray(w)
            layer.bias.value = jnp.asarray(b)

    def fresh(self, params):
        """The model with ``params`` and a fresh optimizer (NNX objects)."""
        self.set_params(self.model, params)
        return self.model, self.nnx.Optimizer(self.model, self.tx, wrt=self.nnx.Param)

    def state_of(self, params):
        """The functional state (``nnx.State``) of the model with ``params`` and a fresh
        optimizer; pure, so it works under ``jax.vmap`` (``params`` with a model axis)."""
        nnx = self.nnx
        graphdef, state = nnx.split(self.model)
        pure = nnx.to_pure_dict(state)
        for i, (w, b) in enumerate(params):
            pure["layers"][i]["kernel"], pure["layers"][i]["bias"] = w, b
        state = jax.tree.map(lambda a: a, state)  # a copy to fill
        nnx.replace_by_pure_dict(state, pure)
        model = nnx.merge(graphdef, state)
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        return nnx.state((model, optimizer))

    def step_state(self, state, x, y):
        """One update as a pure function of the state."""
        model, optimizer = self.nnx.merge(self.graphdef, state)
        grads = self.nnx.grad(self.loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return self.nnx.state((model, optimizer))

    def params_of(self, state):
        model, _ = self.nnx.merge(self.graphdef, state)
        return [(layer.kernel.value, layer.bias.value) for layer in model.layers]


def _tx(opt: str, lr: float):
    import optax

    return optax.sgd(lr) if opt == "gd" else optax.adam(lr, eps=1e-8)


def _nnx_step(core):
    nnx = core.nnx

    @nnx.jit
    def step(model, optimizer, x, y):
        grads = nnx.grad(core.loss_fn)(model, x, y)
        optimizer.update(model, grads)

    return step


class _Trainer:
    """``train(params, run_index) -> params`` for one workload, plus ``info()``."""

    compile_s = None
    note = ""

    def info(self) -> dict:
        return {"compile_s": self.compile_s, "note": self.note}


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    import jax
    from jax import lax

    core = _Core(sizes, _tx(opt, lr))
    x, y = jax.device_put(np.asarray(x)), jax.device_put(np.asarray(y))
    t = _Trainer()
    if variant == "flax-step":
        step = _nnx_step(core)

        def train(params, run_index=0):
            model, optimizer = core.fresh(params)
            for _ in range(epochs):
                step(model, optimizer, x, y)
            out = [(layer.kernel.value, layer.bias.value) for layer in model.layers]
            return as_numpy(jax.block_until_ready(out))

        return _Bound(train, t)

    def loop(state, x, y):
        return lax.fori_loop(0, epochs, lambda _, s: core.step_state(s, x, y), state)

    state0 = core.state_of(_zeros(sizes))
    t0 = time.perf_counter()
    exe = jax.jit(loop).lower(state0, x, y).compile()
    t.compile_s = time.perf_counter() - t0

    def train(params, run_index=0):
        state = core.state_of([(np.asarray(w), np.asarray(b)) for w, b in params])
        state = exe(state, x, y)
        return as_numpy(jax.block_until_ready(core.params_of(state)))

    return _Bound(train, t)


def _zeros(sizes):
    return [
        (np.zeros((a, b), np.float32), np.zeros(b, np.float32))
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


class _Bound:
    """A trainer: callable, with ``info()``."""

    def __init__(self, fn, trainer: _Trainer):
        self.fn, self.trainer = fn, trainer

    def __call__(self, params, run_index: int = 0):
        return self.fn(params, run_index)

    def info(self) -> dict:
        return self.trainer.info()


def many(variant: str, lr: float, epochs: int, x, y, sizes, m: int):
    """``jax.vmap`` over the model axis of the functional step or of the whole loop."""
    import jax
    from jax import lax

    core = _Core(sizes, _tx("gd", lr))
    x, y = jax.device_put(np.asarray(x)), jax.device_put(np.asarray(y))
    t = _Trainer()
    states_of = jax.jit(jax.vmap(core.state_of))
    params_of = jax.jit(jax.vmap(core.params_of))
    if variant == "flax-step":
        step = jax.jit(jax.vmap(core.step_state, in_axes=(0, None, None)))
        t.note = "jax.jit(jax.vmap(step)) called from a Python loop"

        def train(stacked):
            state = states_of(stacked)
            for _ in range(epochs):
                state = step(state, x, y)
            return as_stacked(jax.block_until_ready(params_of(state)))

        return train, t.info

    def loop(state, x, y):
        return lax.fori_loop(0, epochs, lambda _, s: core.step_state(s, x, y), state)

    template = jax.eval_shape(states_of, _zeros_stacked(sizes, m))
    t0 = time.perf_counter()
    exe = jax.jit(jax.vmap(loop, in_axes=(0, None, None))).lower(template, x, y).compile()
    t.compile_s = time.perf_counter() - t0
    t.note = "jax.jit(jax.vmap(whole loop))"

    def train(stacked):
        state = exe(states_of(stacked), x, y)
        return as_stacked(jax.block_until_ready(params_of(state)))

    return train, t.info


def _zeros_stacked(sizes, m):
    return [
        (np.zeros((m, a, b), np.float32), np.zeros((m, b), np.float32))
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def as_stacked(params):
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params]


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    """Adam on minibatches in the shared NumPy orders (``common.epoch_orders``), the last
    batch of an epoch partial. ``flax-step``: NumPy gathers the batch on the host and the
    ``nnx.jit`` step runs on it; ``flax-loop``: one jitted call scans every epoch's batches
    (gathered inside from the rows on the device; the partial batch as one more step)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    core = _Core(sizes, _tx("adam", lr))
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    n = x.shape[0]
    t = _Trainer()
    if variant == "flax-step":
        step = _nnx_step(core)

        def train(params, run_index=0):
            model, optimizer = core.fresh(params)
            for order in epoch_orders(seed, run_index, n, epochs):
                for idx in batches(order, batch):
                    step(model, optimizer, x[idx], y[idx])
            out = [(layer.kernel.value, layer.bias.value) for layer in model.layers]
            return as_numpy(jax.block_until_ready(out))

        return _Bound(train, t)

    full, rest = divmod(n, batch)
    xd, yd = jax.device_put(x), jax.device_put(y)

    def loop(state, orders, x, y):
        def epoch(state, order):
            def body(state, i):
                idx = lax.dynamic_slice(order, (i * batch,), (batch,))
                return core.step_state(state, x[idx], y[idx]), None

            state, _ = lax.scan(body, state, jnp.arange(full))
            if rest:
                idx = order[full * batch :]
                state = core.step_state(state, x[idx], y[idx])
            return state, None

        return lax.scan(epoch, state, orders)[0]

    state0 = core.state_of(_zeros(sizes))
    orders0 = jax.ShapeDtypeStruct((epochs, n), jnp.int32)
    t0 = time.perf_counter()
    exe = jax.jit(loop).lower(state0, orders0, xd, yd).compile()
    t.compile_s = time.perf_counter() - t0

    def train(params, run_index=0):
        state = core.state_of([(np.asarray(w), np.asarray(b)) for w, b in params])
        orders = jax.device_put(epoch_orders(seed, run_index, n, epochs))
        state = exe(state, orders, xd, yd)
        return as_numpy(jax.block_until_ready(core.params_of(state)))

    t.note = "orders drawn with NumPy, passed in"
    return _Bound(train, t)
