"""Equinox: ``eqx.nn.MLP`` (its ``eqx.nn.Linear`` layers hold ``weight`` as ``(out, in)``),
Optax for the updates.

Variants:

- ``eqx-step``: the step under ``eqx.filter_jit`` (``eqx.filter_value_and_grad``,
  ``eqx.apply_updates``), called from a Python loop: Equinox's documented training loop.
- ``eqx-loop``: the whole loop in one ``jax.jit``: the model ``eqx.partition``-ed into
  arrays and static parts once, ``eqx.combine``-d inside a ``lax.fori_loop`` (full batch)
  or ``lax.scan`` (minibatches), compiled ahead of time (timed apart).

Ensembles: ``jax.vmap`` over the model axis (of the jitted step, or of the whole loop).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from common import as_numpy, batches, epoch_orders


def versions() -> str:
    import equinox

    return f"equinox {equinox.__version__}, jax {jax.__version__}"


class _Core:
    """An ``eqx.nn.MLP`` of ``sizes`` (equal hidden widths) and an Optax optimizer."""

    def __init__(self, sizes, tx):
        import equinox as eqx
        import jax.numpy as jnp

        widths = set(sizes[1:-1])
        if len(widths) != 1:
            raise ValueError(f"eqx.nn.MLP needs equal hidden widths, got {sizes}")
        self.eqx, self.tx = eqx, tx
        self.model = eqx.nn.MLP(
            sizes[0],
            sizes[-1],
            widths.pop(),
            len(sizes) - 2,
            activation=jnp.tanh,
            key=jax.random.PRNGKey(0),  # its own weights are overwritten each run
        )
        _, self.static = eqx.partition(self.model, eqx.is_array)

        def loss_fn(model, x, y):
            return jnp.mean((jax.vmap(model)(x) - y) ** 2)

        self.loss_fn = loss_fn

    def with_params(self, params):
        """The model with ``(W (in, out), b)`` pairs (``W`` transposed to Equinox's layout);
        with a leading model axis, a batch of models."""
        import jax.numpy as jnp

        weights = [jnp.swapaxes(jnp.asarray(w), -1, -2) for w, _ in params]
        biases = [jnp.asarray(b) for _, b in params]
        return self.eqx.tree_at(
            lambda m: [layer.weight for layer in m.layers] + [layer.bias for layer in m.layers],
            self.model,
            weights + biases,
        )

    def state_of(self, params):
        """``(arrays of the model, optimizer state)``: pure, so it works under ``jax.vmap``."""
        eqx = self.eqx
        arrays, _ = eqx.partition(self.with_params(params), eqx.is_array)
        return arrays, self.tx.init(arrays)

    def step_state(self, state, x, y):
        """One update as a pure function of ``(arrays, optimizer state)``."""
        eqx = self.eqx
        arrays, opt_state = state
        model = eqx.combine(arrays, self.static)
        grads = eqx.filter_grad(self.loss_fn)(model, x, y)
        updates, opt_state = self.tx.update(grads, opt_state, arrays)
        return eqx.apply_updates(arrays, updates), opt_state

    def params_of(self, state):
        arrays = state[0]
        return [(jax.numpy.swapaxes(la.weight, -1, -2), la.bias) for la in arrays.layers]


def _tx(opt: str, lr: float):
    import optax

    return optax.sgd(lr) if opt == "gd" else optax.adam(lr, eps=1e-8)


def _filter_step(core):
    eqx = core.eqx

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads = eqx.filter_grad(core.loss_fn)(model, x, y)
        updates, opt_state = core.tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state

    return step


class _Trainer:
    """A trainer: ``train(params, run_index) -> params``, with ``info()``."""

    def __init__(self, fn, compile_s=None, note=""):
        self.fn, self.compile_s, self.note = fn, compile_s, note
        self.exe_s: list[float] = []

    def __call__(self, params, run_index: int = 0):
        return self.fn(params, run_index)

    def info(self) -> dict:
        note = self.note
        if self.exe_s:
            note += f"; the compiled executable alone {np.median(self.exe_s):.3f} s"
        return {"compile_s": self.compile_s, "note": note.strip("; ")}


def _zeros(sizes, m=None):
    lead = () if m is None else (m,)
    return [
        (np.zeros((*lead, a, b), np.float32), np.zeros((*lead, b), np.float32))
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def _aot(fn, *args):
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    from jax import lax

    core = _Core(sizes, _tx(opt, lr))
    x, y = jax.device_put(np.asarray(x)), jax.device_put(np.asarray(y))
    if variant == "eqx-step":
        step = _filter_step(core)

        def train(params, run_index=0):
            model = core.with_params(params)
            opt_state = core.tx.init(core.eqx.filter(model, core.eqx.is_array))
            for _ in range(epochs):
                model, opt_state = step(model, opt_state, x, y)
            return as_numpy(jax.block_until_ready(core.params_of((model, None))))

        return _Trainer(train)

    def loop(state, x, y):
        return lax.fori_loop(0, epochs, lambda _, s: core.step_state(s, x, y), state)

    exe, compile_s = _aot(loop, core.state_of(_zeros(sizes)), x, y)

    def train(params, run_index=0):
        state = core.state_of(params)
        t0 = time.perf_counter()
        state = jax.block_until_ready(exe(state, x, y))
        trainer.exe_s.append(time.perf_counter() - t0)
        return as_numpy(core.params_of(state))

    trainer = _Trainer(train, compile_s)
    return trainer


def many(variant: str, lr: float, epochs: int, x, y, sizes, m: int):
    from jax import lax

    core = _Core(sizes, _tx("gd", lr))
    x, y = jax.device_put(np.asarray(x)), jax.device_put(np.asarray(y))
    states_of = jax.jit(jax.vmap(core.state_of))
    params_of = jax.jit(jax.vmap(core.params_of))
    if variant == "eqx-step":
        step = jax.jit(jax.vmap(core.step_state, in_axes=(0, None, None)))

        def train(stacked):
            state = states_of(stacked)
            for _ in range(epochs):
                state = step(state, x, y)
            return _stacked(jax.block_until_ready(params_of(state)))

        return train, _Trainer(None, note="jax.jit(jax.vmap(step)) called from a Python loop").info

    def loop(state, x, y):
        return lax.fori_loop(0, epochs, lambda _, s: core.step_state(s, x, y), state)

    template = jax.eval_shape(states_of, _zeros(sizes, m))
    exe, compile_s = _aot(jax.vmap(loop, in_axes=(0, None, None)), template, x, y)

    def train(stacked):
        return _stacked(jax.block_until_ready(params_of(exe(states_of(stacked), x, y))))

    return train, _Trainer(None, compile_s, "jax.jit(jax.vmap(whole loop))").info


def _stacked(params):
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params]


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    """Adam on minibatches in the shared NumPy orders, the last batch of an epoch partial.
    ``eqx-step``: NumPy gathers each batch on the host for the ``filter_jit`` step;
    ``eqx-loop``: one jitted call scans every epoch's batches (gathered on the device)."""
    import jax.numpy as jnp
    from jax import lax

    core = _Core(sizes, _tx("adam", lr))
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    n = x.shape[0]
    if variant == "eqx-step":
        step = _filter_step(core)

        def train(params, run_index=0):
            model = core.with_params(params)
            opt_state = core.tx.init(core.eqx.filter(model, core.eqx.is_array))
            for order in epoch_orders(seed, run_index, n, epochs):
                for idx in batches(order, batch):
                    model, opt_state = step(model, opt_state, x[idx], y[idx])
            return as_numpy(jax.block_until_ready(core.params_of((model, None))))

        return _Trainer(train)

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

    orders0 = jax.ShapeDtypeStruct((epochs, n), jnp.int32)
    exe, compile_s = _aot(loop, core.state_of(_zeros(sizes)), orders0, xd, yd)

    def train(params, run_index=0):
        state = core.state_of(params)
        orders = jax.device_put(epoch_orders(seed, run_index, n, epochs))
        t0 = time.perf_counter()
        state = jax.block_until_ready(exe(state, orders, xd, yd))
        trainer.exe_s.append(time.perf_counter() - t0)
        return as_numpy(core.params_of(state))

    trainer = _Trainer(train, compile_s, "orders drawn with NumPy, passed in")
    return trainer
