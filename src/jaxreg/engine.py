"""The pure training run: ``make_train(spec, cfg) -> train(key, data, hparams)``. Rank 3.

``train`` is pure and its whole epoch loop runs inside one ``jax.jit``: minibatch
sampling, updates, loss recording, early stopping and best-params tracking happen on the
device. ``jax.vmap(train)`` trains many models at once. Internally the engine uses the lane
layout of ``jaxreg.model`` (samples on the last axis); results come back in the lecture's
layout.

Runs can also be cut into equal chunks with ``make_engine`` (``init`` / ``run`` /
``finish``): epoch ``e`` draws its minibatches from ``fold_in(key, e)``, so any cut gives
exactly the parameters of one uninterrupted run. The step functions below take the static
``spec``/``cfg`` first; ``make_engine`` binds them. Nothing here compiles, times or touches
the host: that is ``jaxreg.runner``'s job.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxreg import runtime, validate
from jaxreg.data import Dataset
from jaxreg.loss import l2_penalty, mse_per_output
from jaxreg.model import ACTIVATIONS, MLPSpec, apply_lanes, from_lanes, init, to_lanes
from jaxreg.optim import (
    SCHEDULES,
    Hparams,
    LbfgsState,
    lbfgs_init,
    lbfgs_step,
    learning_rate_at,
    make_optimizer,
)

__all__ = [
    "MONITORS",
    "OBJECTIVES",
    "SAMPLINGS",
    "Engine",
    "History",
    "StreamEngine",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "empty_history",
    "epoch_order",
    "make_engine",
    "make_stream_engine",
    "make_train",
    "sampling_key",
]

SAMPLINGS = ("full", "shuffle", "bootstrap")
MONITORS = ("val", "train")
OBJECTIVES = ("mse", "rmse")
_SAMPLE_SALT = 0x5A3D  # fold_in constant separating the sampling stream from init keys
HISTORY_ROWS = 16_384  # the history's training MSE: every row up to this many, then a sample
# Evaluation passes over more rows go block by block: 200,000 rows through 8-64-32-1 take
# 104 ms in blocks of 65,536 and 21 ms in blocks of 8,192 under the CLI's single-threaded
# XLA options (29 and 18 ms with XLA's defaults): a block's activations stay in the caches.
EVAL_ROWS = 8_192
SORT_SHUFFLE_ROWS = 65_536  # minibatch orders of more rows come from a Feistel permutation
FEISTEL_ROUNDS = 6


@dataclass(frozen=True)
class TrainConfig:
    """Static training configuration (hashable; a change recompiles).

    Attributes:
      epochs: passes over the training data.
      optimizer: a name from ``jaxreg.optim.OPTIMIZERS`` (``gd`` is the hand-coded update;
        ``lbfgs`` is full-batch L-BFGS with a zoom line search, one iteration an epoch,
        that ignores the learning rate and the schedule).
      schedule: a name from ``jaxreg.optim.SCHEDULES``.
      batch_size: rows per minibatch; None for full-batch training.
      sampling: ``full`` (one step per epoch on all rows), ``shuffle`` (a permutation per
        epoch cut into batches; the last one partial), or ``bootstrap`` (each step draws
        ``batch_size`` rows with replacement).
      steps_per_epoch: ``bootstrap`` only; default ``ceil(n / batch_size)``.
      objective: ``mse`` or ``rmse`` (the linear blog's loss); the L2 penalty is added.
      record_every: record train/validation MSE every this many epochs (before the
        epoch's update); 0 records nothing.
      patience: the stopping rule: stop once the monitored loss has not improved by
        more than ``tol`` for this many epochs (checked at record points); None trains
        all epochs. scikit-learn's ``n_iter_no_change=k`` is ``patience=k + 1``.
      monitor: ``val``: the validation MSE, checked before the epochs of each record
        point, with the best parameters kept and returned (early stopping; a run
        without validation data never stops); ``train``: the mean training objective of
        the epochs since the last record point (scikit-learn's rule without early
        stopping; the final parameters are returned).
      tol: the improvement the stopping rule asks for; for ``lbfgs`` also the gradient
        max-norm at which it has converged (scikit-learn's ``tol``).
      max_fun: ``lbfgs`` only: stop after this many function evaluations (None: no
        limit besides ``epochs``).
    """

    epochs: int = 1000
    optimizer: str = "adam"
    schedule: str = "constant"
    batch_size: int | None = None
    sampling: str = "full"
    steps_per_epoch: int | None = None
    objective: str = "mse"
    record_every: int = 1
    patience: int | None = None
    monitor: str = "val"
    tol: float = 0.0
    max_fun: int | None = None

    def __post_init__(self):
        from jaxreg.optim import OPTIMIZERS

        owner = "TrainConfig"
        validate.integer(owner, "epochs", self.epochs, low=1)
        validate.choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        validate.choice(owner, "schedule", self.schedule, SCHEDULES)
        validate.choice(owner, "sampling", self.sampling, SAMPLINGS)
        validate.choice(owner, "objective", self.objective, OBJECTIVES)
        validate.choice(owner, "monitor", self.monitor, MONITORS)
        validate.real(owner, "tol", self.tol, low=0)
        if self.optimizer == "lbfgs" and self.sampling != "full":
            raise validate.bad(
                owner,
                "sampling",
                "'full' with optimizer='lbfgs' (L-BFGS is full-batch)",
                self.sampling,
            )
        lbfgs, full = self.optimizer == "lbfgs", self.sampling == "full"
        rule = f"None unless optimizer='lbfgs' (it is {self.optimizer!r})"
        validate.unused(owner, "max_fun", self.max_fun, not lbfgs, rule)
        if self.max_fun is not None:
            validate.integer(owner, "max_fun", self.max_fun, low=1)
        rule = "None when sampling='full' (use sampling='shuffle' or 'bootstrap' for minibatches)"
        validate.unused(owner, "batch_size", self.batch_size, full, rule)
        if not full:
            validate.integer(owner, "batch_size", self.batch_size, low=1)
        rule = f"None unless sampling='bootstrap' (sampling is {self.sampling!r})"
        bootstrap = self.sampling == "bootstrap"
        validate.unused(owner, "steps_per_epoch", self.steps_per_epoch, not bootstrap, rule)
        if self.steps_per_epoch is not None:
            validate.integer(owner, "steps_per_epoch", self.steps_per_epoch, low=1)
        validate.integer(owner, "record_every", self.record_every, low=0)
        if self.record_every and self.epochs % self.record_every:
            raise validate.bad(
                owner, "record_every", f"0 or a divisor of epochs={self.epochs}", self.record_every
            )
        if self.patience is not None:
            validate.integer(owner, "patience", self.patience, low=1)
            if not self.record_every:
                raise validate.bad(
                    owner,
                    "patience",
                    "None when record_every=0 (validation is checked at record points)",
                    self.patience,
                )

    def steps(self, n: int) -> int:
        """Optimizer steps per epoch for ``n`` training rows."""
        if self.sampling == "full":
            return 1
        if self.sampling == "bootstrap" and self.steps_per_epoch is not None:
            return self.steps_per_epoch
        batch = n if self.batch_size is None else min(self.batch_size, n)
        return math.ceil(n / batch)


class TrainState(NamedTuple):
    """Everything that changes during training (params in the lane layout)."""

    params: Any
    opt_state: Any
    epoch: jax.Array  # epochs completed
    step: jax.Array  # optimizer updates completed (drives the schedule)
    best_params: Any
    best_val: jax.Array
    best_epoch: jax.Array
    since_best: jax.Array
    stopped: jax.Array


class History(NamedTuple):
    """Per record point (before that epoch's update): ``epoch`` ``(R,)``, train and
    validation MSE per output ``(R, k)`` (NaN without validation data), and the mean
    optimization objective of the steps that followed ``(R,)``.

    The training MSE is over every training row up to ``HISTORY_ROWS`` rows, and over an
    evenly strided sample of them (every ``ceil(rows / HISTORY_ROWS)``-th row) beyond:
    a pass over a million rows at every record point costs a quarter of an epoch.
    ``TrainResult.train_mse`` uses the same rows; validation always uses every row."""

    epoch: Any  # JAX arrays on the device, NumPy arrays once on the host
    train_mse: Any
    val_mse: Any
    objective: Any


class TrainResult(NamedTuple):
    """What a training run returns.

    ``params`` are the final parameters; ``best_params`` those of the best validation
    check when early stopping (``cfg.patience``) with validation data, else ``params``;
    ``train_mse``/``val_mse`` are per-output MSE of ``best_params`` after training (the
    training MSE over the history's rows: every row up to ``HISTORY_ROWS``, a strided
    sample beyond; the validation MSE over every validation row);
    ``epochs_run`` counts epochs actually trained (fewer when stopped early);
    ``converged`` says whether the stopping rule (``cfg.patience``, or L-BFGS's own) ended
    the run before ``cfg.epochs`` (and, for L-BFGS, before ``cfg.max_fun``). Arrays only:
    timings travel beside it (``jaxreg.runner.Timings``).
    """

    params: Any
    best_params: Any
    best_epoch: Any
    epochs_run: Any
    history: History
    train_mse: Any
    val_mse: Any
    converged: Any


class Engine(NamedTuple):
    """Pure pieces of a training run, for chunked runs (progress bars, checkpoints).

    ``init(key, data, hparams, params=None) -> TrainState``;
    ``run(state, key, data, hparams, n_epochs) -> (TrainState, History)`` with
    ``n_epochs`` static (a multiple of ``cfg.record_every``);
    ``finish(state, data, history) -> TrainResult``.
    """

    spec: MLPSpec
    cfg: TrainConfig
    init: Callable
    run: Callable
    finish: Callable


def _lanes(data: Dataset):
    x_t = data.x.T
    y_t = data.y.T
    xv_t = None if data.x_val is None else data.x_val.T
    yv_t = None if data.y_val is None else data.y_val.T
    return x_t, y_t, xv_t, yv_t


def empty_history(k: int, dtype) -> History:
    """A ``History`` with no record points for ``k`` outputs."""
    return History(
        jnp.zeros((0,), jnp.int32),
        jnp.zeros((0, k), dtype),
        jnp.zeros((0, k), dtype),
        jnp.zeros((0,), dtype),
    )


# ---------------------------------------------------------------- step functions


def _predict(spec: MLPSpec, params_t, x_t):
    return apply_lanes(params_t, x_t, ACTIVATIONS[spec.activation])


def _objective(spec: MLPSpec, cfg: TrainConfig, params_t, x_t, y_t, w, l2, fit: bool = False):
    """The training objective; with ``fit``, also the per-output MSE it was made of."""
    per_out = mse_per_output(_predict(spec, params_t, x_t), y_t, w, axis=1)
    loss = jnp.mean(per_out)
    if cfg.objective == "rmse":
        # sqrt has an infinite derivative at 0: a minibatch fitted exactly gets 0 loss and a
        # zero gradient instead of NaN.
        safe = jnp.where(loss > 0, loss, 1.0)
        loss = jnp.where(loss > 0, jnp.sqrt(safe), 0.0)
    loss = loss + l2 * l2_penalty(params_t)
    return (loss, per_out) if fit else loss


def _init(
    spec: MLPSpec, cfg: TrainConfig, key, data: Dataset, hparams: Hparams, params=None
) -> TrainState:
    if params is None:
        params = init(key, spec, dtype=data.x.dtype)
    params_t = to_lanes(params)
    hp = hparams.astype(data.x.dtype)
    inf = jnp.asarray(jnp.inf, data.x.dtype)
    zero = jnp.zeros((), jnp.int32)
    if cfg.optimizer == "lbfgs":
        opt_state = lbfgs_init(params_t)
    else:
        opt_state = make_optimizer(cfg.optimizer).init(params_t, hp)
    return TrainState(
        params_t, opt_state, zero, zero, params_t, inf, zero, zero, jnp.zeros((), bool)
    )


DATA_AXIS = "data"  # the mesh axis that data-parallel training lays the rows over


def _over_data(*arrays):
    """Lay each array's last axis (the rows, in the lane layout) over the ``data`` axis of the
    mesh being traced under, if it has one; XLA then splits every product over the rows and
    sums the gradients across devices. Elsewhere: the arrays unchanged."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return arrays
    from jax.sharding import PartitionSpec

    return tuple(
        None
        if a is None
        else lax.with_sharding_constraint(a, PartitionSpec(*(None,) * (a.ndim - 1), DATA_AXIS))
        for a in arrays
    )


def _update(
    spec: MLPSpec,
    cfg: TrainConfig,
    params_t,
    opt_state,
    step,
    x_t,
    y_t,
    w,
    hp,
    total_steps,
    fit: bool = False,
):
    """One optimizer step: ``(params, opt_state, loss)``, and with ``fit`` the per-output
    MSE on these rows at the incoming parameters as a fourth element."""
    # A minibatch gathered from rows spread over devices is spread over them again.
    x_t, y_t, w = _over_data(x_t, y_t, w)
    objective = functools.partial(_objective, spec, cfg, fit=True)
    (loss, per_out), grads = jax.value_and_grad(objective, has_aux=True)(
        params_t, x_t, y_t, w, hp.l2
    )
    lr = learning_rate_at(cfg.schedule, hp, step, total_steps)
    params_t, opt_state = make_optimizer(cfg.optimizer).step(params_t, grads, opt_state, lr, hp)
    return (params_t, opt_state, loss, per_out) if fit else (params_t, opt_state, loss)


def _one_epoch(
    spec: MLPSpec,
    cfg: TrainConfig,
    state: TrainState,
    skey,
    x_t,
    y_t,
    w,
    hp,
    n_real=None,
    fit: bool = False,
):
    if n_real is not None and cfg.sampling != "full" and cfg.optimizer != "lbfgs":
        return _one_padded_epoch(spec, cfg, state, skey, x_t, y_t, w, hp, n_real)
    n = x_t.shape[1]
    steps = cfg.steps(n)
    total_steps = cfg.epochs * steps
    params_t, opt_state, step = state.params, state.opt_state, state.step
    if cfg.optimizer == "lbfgs":

        def fun(p):
            return _objective(spec, cfg, p, x_t, y_t, w, hp.l2)

        params_t, opt_state, loss = lbfgs_step(params_t, opt_state, fun, cfg.tol)
        return params_t, opt_state, step + 1, loss
    if cfg.sampling == "full":  # with ``fit``, also the rows' MSE at the incoming parameters
        params_t, opt_state, *loss = _update(
            spec, cfg, params_t, opt_state, step, x_t, y_t, w, hp, total_steps, fit
        )
        return params_t, opt_state, step + 1, *loss
    ekey = jax.random.fold_in(skey, state.epoch)
    batch = min(cfg.batch_size, n)
    pad = 0
    if cfg.sampling == "shuffle":
        perm = _shuffled(ekey, n)
        pad = steps * batch - n
        idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, batch)
        mask = (jnp.arange(steps * batch) < n).reshape(steps, batch).astype(x_t.dtype)
    else:
        idx = jax.random.randint(ekey, (steps, batch), 0, n)
        mask = None

    x_rows, y_rows = x_t.T, y_t.T  # see _one_padded_epoch

    def body(carry, inputs):
        params_t, opt_state, step = carry
        idx_b, mask_b = inputs
        w_b = None if w is None else w[idx_b]
        if pad:
            w_b = mask_b if w_b is None else w_b * mask_b
        params_t, opt_state, loss = _update(
            spec,
            cfg,
            params_t,
            opt_state,
            step,
            x_rows[idx_b].T,
            y_rows[idx_b].T,
            w_b,
            hp,
            total_steps,
        )
        return (params_t, opt_state, step + 1), loss

    (params_t, opt_state, step), losses = lax.scan(body, (params_t, opt_state, step), (idx, mask))
    return params_t, opt_state, step, jnp.mean(losses)


def _shuffled(key, rows: int, n=None):
    """A uniformly random order of ``rows`` row positions, the first ``n`` (traced; default
    all) real rows first and the padding after them in place; a pure function of ``key``.

    Up to ``SORT_SHUFFLE_ROWS`` rows: one unstable sort of random 31-bit keys carrying the
    positions (on the CPU less than half of ``jax.random.permutation``'s rounds of stable
    sorts: 48 against 108 ms for 200,000 rows). Beyond, a sort costs a quarter of a
    minibatch epoch (270 ms a million rows), so the order is a keyed Feistel permutation
    (``_feistel_order``, O(rows): 23 ms a million rows), computed inside the compiled
    function: no host callback, so JAX's persistent cache can keep the training loop.
    """
    if rows > SORT_SHUFFLE_ROWS:
        return _feistel_order(key, rows, rows if n is None else n)
    bits = jax.random.bits(key, (rows,), jnp.uint32) >> 1
    iota = lax.iota(jnp.int32, rows)
    if n is not None:
        bits = jnp.where(iota < n, bits, jnp.uint32(0xFFFFFFFF))
    return lax.sort((bits, iota), num_keys=1, is_stable=False)[1]


def _mix32(h):
    """A 32-bit integer hash with full avalanche (MurmurHash3's finalizer constants)."""
    h = h * jnp.uint32(0x9E3779B1)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _feistel_order(key, rows: int, n):
    """The first ``n`` (traced) of ``rows`` positions in a random order, then ``n..rows-1``.

    A balanced Feistel network of ``FEISTEL_ROUNDS`` rounds, with round functions keyed by
    ``key``, is a bijection of ``[0, 4**h)`` (``4**h >= rows``); the images below ``n``,
    taken in the order of their preimages, are an order of the ``n`` real rows (a
    cumulative sum places them). A test checks it against the uniform distribution (the
    120 orders of 5 rows, positions over 300 rows) with SciPy's chi-square test.
    """
    half = max(1, ((rows - 1).bit_length() + 1) // 2)
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
    i = lax.iota(jnp.uint32, 1 << (2 * half))
    left, right = i >> half, i & mask
    for r in range(FEISTEL_ROUNDS):
        left, right = right, left ^ (_mix32(right ^ round_keys[r]) & mask)
    image = (left << half) | right
    real = image < jnp.asarray(n).astype(jnp.uint32)
    place = jnp.where(real, jnp.cumsum(real.astype(jnp.int32)) - 1, rows)
    order = lax.iota(jnp.int32, rows)  # the padding rows stay where they are
    return order.at[place].set(image.astype(jnp.int32), mode="drop")


def _one_padded_epoch(spec: MLPSpec, cfg: TrainConfig, state: TrainState, skey, x_t, y_t, w, hp, n):
    """A minibatch epoch over padded rows: only the first ``n`` (traced) rows are drawn,
    and steps beyond the ``ceil(n / batch)`` that ``n`` rows need are skipped, so the
    result is that of the unpadded rows whatever the padded size."""
    rows = x_t.shape[1]
    batch = min(cfg.batch_size, rows)
    steps = cfg.steps(rows)  # an upper bound on the real rows' steps
    if cfg.sampling == "bootstrap" and cfg.steps_per_epoch is not None:
        real_steps = jnp.asarray(cfg.steps_per_epoch, jnp.int32)
    else:
        real_steps = (n + batch - 1) // batch
    total_steps = cfg.epochs * real_steps
    ekey = jax.random.fold_in(skey, state.epoch)
    if cfg.sampling == "shuffle":
        perm = _shuffled(ekey, rows, n)
        extra = steps * batch - rows
        idx = jnp.concatenate([perm, jnp.zeros((extra,), perm.dtype)]).reshape(steps, batch)
        mask = (
            (jnp.arange(steps * batch, dtype=jnp.int32) < n).reshape(steps, batch).astype(x_t.dtype)
        )
    else:
        idx = jax.random.randint(ekey, (steps, batch), 0, n)
        mask = jnp.ones((steps, batch), x_t.dtype)

    # Minibatches are gathered as whole rows of the row-major table and transposed to the
    # lane layout after the gather: one cache line a sample instead of one per feature
    # (x_t.T is the Dataset's own array, so no copy is made).
    x_rows, y_rows = x_t.T, y_t.T

    def body(carry, inputs):
        params_t, opt_state, step = carry
        i, idx_b, mask_b = inputs

        def update(carry):
            params_t, opt_state, step = carry
            params_t, opt_state, loss = _update(
                spec,
                cfg,
                params_t,
                opt_state,
                step,
                x_rows[idx_b].T,
                y_rows[idx_b].T,
                w[idx_b] * mask_b,
                hp,
                total_steps,
            )
            return (params_t, opt_state, step + 1), loss

        def skip(carry):
            return carry, jnp.zeros((), x_t.dtype)

        return lax.cond(i < real_steps, update, skip, carry)

    inputs = (jnp.arange(steps, dtype=jnp.int32), idx, mask)
    (params_t, opt_state, step), losses = lax.scan(
        body, (state.params, state.opt_state, state.step), inputs
    )
    return params_t, opt_state, step, jnp.sum(losses) / real_steps.astype(x_t.dtype)


def _epoch(
    spec: MLPSpec,
    cfg: TrainConfig,
    state: TrainState,
    skey,
    x_t,
    y_t,
    w,
    hp,
    n_real=None,
    fit: bool = False,
):
    """One epoch: ``(state, loss)``; with ``fit`` (full batch, first-order optimizers)
    ``(state, (loss, per-output MSE of the rows at the incoming parameters))``, NaN when
    the run had stopped."""
    lbfgs = cfg.optimizer == "lbfgs"

    def go(state):
        params_t, opt_state, step, loss, *mse_k = _one_epoch(
            spec, cfg, state, skey, x_t, y_t, w, hp, n_real, fit
        )
        if fit:
            loss = (loss, mse_k[0])
        stopped = state.stopped
        if lbfgs:  # L-BFGS's own rule, or its budget of function evaluations spent
            stopped = stopped | opt_state.converged
            if cfg.max_fun is not None:
                stopped = stopped | (opt_state.n_fun >= cfg.max_fun)
        return state._replace(
            params=params_t, opt_state=opt_state, step=step, epoch=state.epoch + 1, stopped=stopped
        ), loss

    if cfg.patience is None and not lbfgs:
        return go(state)
    # A stopped run skips its remaining epochs (the loop keeps its fixed length).
    nan = jnp.asarray(jnp.nan, x_t.dtype)
    skipped = (nan, jnp.full((y_t.shape[0],), nan)) if fit else nan
    return lax.cond(state.stopped, lambda s: (s, skipped), go, state)


def _mse(spec: MLPSpec, params_t, x_t, y_t, w):
    """Per-output MSE of ``params_t`` on lane-layout rows (``_sse`` over the weights' sum)."""
    if x_t.shape[1] <= EVAL_ROWS:
        return mse_per_output(_predict(spec, params_t, x_t), y_t, w, axis=1)
    total = x_t.shape[1] if w is None else jnp.sum(w)
    return _sse(spec, params_t, x_t, y_t, w) / total


def _sse(spec: MLPSpec, params_t, x_t, y_t, w):
    """Per-output sum of squared errors of ``params_t`` on lane-layout rows, row ``i``
    counted ``w[i]`` times (None: once). Beyond ``EVAL_ROWS`` rows it is summed over blocks
    of that many (``lax.map``), so a pass over a million rows holds one block's activations
    instead of all of them (64 x 1M float32 is 256 MB a layer)."""
    rows = x_t.shape[1]
    w = jnp.ones((rows,), x_t.dtype) if w is None else w
    if rows <= EVAL_ROWS:
        return jnp.sum(w[None, :] * (_predict(spec, params_t, x_t) - y_t) ** 2, axis=1)
    blocks = -(-rows // EVAL_ROWS)
    extra = blocks * EVAL_ROWS - rows

    def split(a):  # (c, rows) -> (blocks, c, EVAL_ROWS), zero-weight rows at the end
        a = jnp.pad(a, ((0, 0), (0, extra)))
        return a.reshape(a.shape[0], blocks, EVAL_ROWS).transpose(1, 0, 2)

    w_b = jnp.pad(w, (0, extra)).reshape(blocks, EVAL_ROWS)

    def block(args):
        xb, yb, wb = args
        return jnp.sum(wb[None, :] * (_predict(spec, params_t, xb) - yb) ** 2, axis=1)

    return jnp.sum(lax.map(block, (split(x_t), split(y_t), w_b)), axis=0)


def _val_mse(spec: MLPSpec, params_t, xv_t, yv_t, w_val, y_t):
    """The validation MSE per output; NaN (shaped as ``y_t``'s outputs) without it."""
    if xv_t is None:
        return jnp.full((y_t.shape[0],), jnp.nan, y_t.dtype)
    return _mse(spec, params_t, xv_t, yv_t, w_val)


def _evaluate(spec: MLPSpec, params_t, x_t, y_t, w, xv_t, yv_t, w_val=None):
    return _mse(spec, params_t, x_t, y_t, w), _val_mse(spec, params_t, xv_t, yv_t, w_val, y_t)


def _check_best(cfg: TrainConfig, state: TrainState, val_k) -> TrainState:
    val = jnp.mean(val_k)
    better = val < state.best_val
    improved = val < state.best_val - cfg.tol if cfg.tol else better
    since = jnp.where(improved, 0, state.since_best + cfg.record_every)
    stopped = state.stopped
    if cfg.patience is not None:
        stopped = stopped | (since >= cfg.patience)
    best_params = jax.tree.map(
        lambda b, p: jnp.where(better, p, b), state.best_params, state.params
    )
    return state._replace(
        best_params=best_params,
        best_val=jnp.where(better, val, state.best_val),
        best_epoch=jnp.where(better, state.epoch, state.best_epoch),
        since_best=since,
        stopped=stopped,
    )


def _check_train(cfg: TrainConfig, state: TrainState, loss) -> TrainState:
    """scikit-learn's rule on the training loss: count the epochs since the loss last
    fell more than ``tol`` below the best so far; stop once there are ``patience``."""
    improved = loss < state.best_val - cfg.tol
    since = jnp.where(improved, 0, state.since_best + cfg.record_every)
    return state._replace(
        best_val=jnp.fmin(state.best_val, loss),
        since_best=since,
        stopped=state.stopped | (since >= (cfg.patience or 0)),
    )


def _run(
    spec: MLPSpec,
    cfg: TrainConfig,
    state: TrainState,
    key,
    data: Dataset,
    hparams: Hparams,
    n_epochs: int,
):
    x_t, y_t, xv_t, yv_t = _lanes(data)
    w = data.w
    hp = hparams.astype(data.x.dtype)
    skey = jax.random.fold_in(key, _SAMPLE_SALT)
    epoch = functools.partial(_epoch, spec, cfg)
    n_real = data.n
    if not cfg.record_every:

        def plain(_, s):
            return epoch(s, skey, x_t, y_t, w, hp, n_real)[0]

        state = lax.fori_loop(0, n_epochs, plain, state)
        return state, empty_history(data.y.shape[1], x_t.dtype)

    xs_t, ys_t, ws = _history_rows(x_t, y_t, w)

    # Best-params tracking (and its restore) belongs to early stopping only.
    watch_val = cfg.patience is not None and cfg.monitor == "val" and xv_t is not None
    watch_train = cfg.patience is not None and cfg.monitor == "train"

    def record(s, train: bool = True):  # a record point: the history's MSEs, validation rule
        if train:
            train_k, val_k = _evaluate(spec, s.params, xs_t, ys_t, ws, xv_t, yv_t, data.w_val)
        else:
            train_k = None
            val_k = _val_mse(spec, s.params, xv_t, yv_t, data.w_val, y_t)
        if watch_val:
            s = _check_best(cfg, s, val_k)
        return s, train_k, val_k

    def close(s, loss, stopped):  # after record_every epochs: the training-loss rule
        if watch_train:  # epochs skipped after a stop leave the rule where it was
            s = lax.cond(stopped, lambda s: s, lambda s: _check_train(cfg, s, loss), s)
        return s

    def chunk(s, _):
        epoch0 = s.epoch
        s, train_k, val_k = record(s)

        def inner(s, _):
            return epoch(s, skey, x_t, y_t, w, hp, n_real)

        stopped = s.stopped
        s, losses = lax.scan(inner, s, None, length=cfg.record_every)
        loss = jnp.nanmean(losses)
        return close(s, loss, stopped), History(epoch0, train_k, val_k, loss)

    if n_epochs % cfg.record_every:
        raise validate.bad(
            "Engine.run", "n_epochs", f"a multiple of record_every={cfg.record_every}", n_epochs
        )
    points = n_epochs // cfg.record_every
    if not runtime.small_loop_flags():
        return lax.scan(chunk, state, None, length=points)

    # Under XLA's single-kernel loops (runtime.small_loop_flags) the same steps as one flat
    # loop over the epochs, the record points inside it behind a condition: nested loops
    # leave the outer body to XLA's per-operation dispatch, which made the lecture's history
    # (two forward passes every 10 epochs) cost 1.5 us an epoch; here 0.1-0.8.
    k = y_t.shape[0]
    dtype = x_t.dtype
    hist = History(
        jnp.zeros((points,), jnp.int32),
        jnp.zeros((points, k), dtype),
        jnp.zeros((points, k), dtype),
        jnp.zeros((points,), dtype),
    )
    nan = jnp.asarray(jnp.nan, dtype)
    zero = jnp.zeros((), dtype)
    # A full-batch step evaluates the training rows' MSE at the record point's parameters
    # anyway: the history takes it from there instead of a second forward pass (when the
    # history's rows are all the training rows).
    reuse = cfg.sampling == "full" and cfg.optimizer != "lbfgs" and xs_t.shape == x_t.shape

    def flat(i, carry):
        s, hist, total, count, stopped = carry
        j = i // cfg.record_every
        at_record = i % cfg.record_every == 0
        at_close = (i + 1) % cfg.record_every == 0
        # The conditions return small values and the history is written every epoch at
        # its record point's row (the same value unless this epoch is the record point):
        # buffers passed through a condition would be copied in and out of it.
        blank = jnp.zeros((k,), dtype)
        epoch0 = s.epoch

        def opening(s):
            s, train_k, val_k = record(s, train=not reuse)
            return s, (blank if reuse else train_k, val_k)

        if watch_val:
            s, (train_k, val_k) = lax.cond(at_record, opening, lambda s: (s, (blank, blank)), s)
        else:  # the rule changes nothing: only the parameters go through the condition
            train_k, val_k = lax.cond(
                at_record,
                lambda p: opening(s._replace(params=p))[1],
                lambda p: (blank, blank),
                s.params,
            )
        stopped = jnp.where(at_record, s.stopped, stopped)
        total = jnp.where(at_record, zero, total)
        count = jnp.where(at_record, zero, count)
        ran = ~s.stopped
        s, loss = epoch(s, skey, x_t, y_t, w, hp, n_real, reuse)
        if reuse:
            loss, fit_k = loss
            # A skipped epoch (a stopped run) left the parameters of the record point. The
            # outer condition is the loop's own (never batched), so under vmap, where the
            # inner one becomes a select, the extra pass still runs at record points only.
            train_k = lax.cond(
                at_record,
                lambda: lax.cond(ran, lambda: fit_k, lambda: _mse(spec, s.params, xs_t, ys_t, ws)),
                lambda: fit_k,
            )
        seen = ~jnp.isnan(loss)
        total = total + jnp.where(seen, loss, zero)
        count = count + seen.astype(dtype)
        chunk_loss = jnp.where(count > 0, total / count, nan)  # nanmean of the chunk's losses
        if watch_train:
            s = lax.cond(at_close, lambda s: close(s, chunk_loss, stopped), lambda s: s, s)

        def put(a, v, when):
            return a.at[j].set(jnp.where(when, v, a[j]))

        hist = History(
            put(hist.epoch, epoch0, at_record),
            put(hist.train_mse, train_k, at_record),
            put(hist.val_mse, val_k, at_record),
            put(hist.objective, chunk_loss, at_close),
        )
        return s, hist, total, count, stopped

    s, hist, *_ = lax.fori_loop(0, n_epochs, flat, (state, hist, zero, zero, jnp.zeros((), bool)))
    return s, hist


def _history_rows(x_t, y_t, w):
    """The rows the training MSE of the history and of the result is taken over: every
    row up to ``HISTORY_ROWS``, an evenly strided sample (every ``ceil(rows /
    HISTORY_ROWS)``-th row) beyond."""
    stride = -(-x_t.shape[1] // HISTORY_ROWS)
    return x_t[:, ::stride], y_t[:, ::stride], None if w is None else w[::stride]


def _finish(
    spec: MLPSpec, cfg: TrainConfig, state: TrainState, data: Dataset, history: History
) -> TrainResult:
    x_t, y_t, xv_t, yv_t = _lanes(data)
    if cfg.patience is not None and cfg.monitor == "val" and xv_t is not None:
        _, val_k = _evaluate(spec, state.params, x_t, y_t, data.w, xv_t, yv_t, data.w_val)
        state = _check_best(cfg, state, val_k)
        best_t, best_epoch = state.best_params, state.best_epoch
    else:
        best_t, best_epoch = state.params, state.epoch
    # A pass over every row of a large table would cost a third of an epoch (0.13 s of a
    # 0.61 s one-epoch fit on 1,000,000 rows): the training MSE uses the history's rows.
    xs_t, ys_t, ws = _history_rows(x_t, y_t, data.w)
    train_k, val_k = _evaluate(spec, best_t, xs_t, ys_t, ws, xv_t, yv_t, data.w_val)
    if isinstance(state.opt_state, LbfgsState):
        converged = state.opt_state.converged
    else:
        converged = state.stopped
    return TrainResult(
        from_lanes(state.params),
        from_lanes(best_t),
        best_epoch,
        state.epoch,
        history,
        train_k,
        val_k,
        converged,
    )


# ---------------------------------------------------------------- streamed minibatches
# A table streamed from disk (``jaxreg.stream``) reaches the device as chunks of minibatches
# the host prepared; these pieces run them with the same updates, record points and
# stopping rules as ``_run`` (``jaxreg.runner.run_stream`` drives them).


def _stream_record(spec: MLPSpec, cfg: TrainConfig, state: TrainState, sample: Dataset):
    """A record point: the history's training MSE on ``sample.x``/``y`` (a sample of the
    training rows) and validation MSE on ``sample.x_val``/``y_val``; with early stopping on
    the validation MSE, its rule (and the best parameters) as ``_run`` applies it."""
    x_t, y_t, xv_t, yv_t = _lanes(sample)
    train_k, val_k = _evaluate(spec, state.params, x_t, y_t, sample.w, xv_t, yv_t, sample.w_val)
    if cfg.patience is not None and cfg.monitor == "val" and xv_t is not None:
        state = _check_best(cfg, state, val_k)
    return state, (train_k, val_k)


def _stream_steps(spec: MLPSpec, cfg: TrainConfig, state: TrainState, batches, hparams: Hparams):
    """Optimizer steps on minibatches handed in: ``batches = (x (K, B, d), y (K, B, k),
    w (K, B), active, steps_per_epoch)``; steps ``active`` and after are skipped (the last
    chunk of an epoch), and ``w`` is 0 on the padding of a last, partial batch. Returns
    the state and the sum of the steps' objectives."""
    xb, yb, wb, active, steps_per_epoch = batches
    active = jnp.where(state.stopped, 0, active)  # a stopped model trains no more
    hp = hparams.astype(xb.dtype)
    total_steps = cfg.epochs * steps_per_epoch

    def body(carry, inputs):
        i, x, y, w = inputs

        def update(carry):
            params_t, opt_state, step = carry
            params_t, opt_state, loss = _update(
                spec, cfg, params_t, opt_state, step, x.T, y.T, w, hp, total_steps
            )
            return (params_t, opt_state, step + 1), loss

        return lax.cond(i < active, update, lambda c: (c, jnp.zeros((), xb.dtype)), carry)

    inputs = (jnp.arange(xb.shape[0], dtype=jnp.int32), xb, yb, wb)
    (params_t, opt_state, step), losses = lax.scan(
        body, (state.params, state.opt_state, state.step), inputs
    )
    return state._replace(params=params_t, opt_state=opt_state, step=step), jnp.sum(losses)


def _stream_epochs_done(cfg: TrainConfig, state: TrainState, _, losses):
    """After the epochs of a record point (``losses``: their mean objectives): the epoch
    count, and scikit-learn's rule on the training loss as ``_run`` applies it."""
    stopped = state.stopped  # since the record point: its epochs were skipped
    state = state._replace(epoch=state.epoch + jnp.where(stopped, 0, losses.shape[0]))
    loss = jnp.where(stopped, jnp.nan, jnp.nanmean(losses))
    if cfg.patience is not None and cfg.monitor == "train":
        state = lax.cond(stopped, lambda s: s, lambda s: _check_train(cfg, s, loss), state)
    return state, loss


def _stream_sse(spec: MLPSpec, params_t, x, y, w):
    """Per-output sum of squared errors of ``params_t`` on rows ``x`` ``(r, d)``, row ``i``
    counted ``w[i]`` times (0: padding)."""
    return _sse(spec, params_t, x.T, y.T, w)


def _stream_finish(spec: MLPSpec, cfg: TrainConfig, state: TrainState, sample: Dataset):
    """The final record (early stopping's last check) and the parameters to return (lane
    layout): the best ones with early stopping on validation, else the last."""
    if cfg.patience is not None and cfg.monitor == "val" and sample.x_val is not None:
        state, _ = _stream_record(spec, cfg, state, sample)
        return state, state.best_params, state.best_epoch
    return state, state.params, state.epoch


class StreamEngine(NamedTuple):
    """Pure pieces of a run on streamed minibatches (``jaxreg.runner.run_stream``):
    ``init(key, sample, hparams, params)``, ``record(state, sample) -> (state, (train,
    val))``, ``steps(state, batches, hparams) -> (state, objective sum)``,
    ``epochs_done(state, None, losses) -> (state, loss)``, ``finish(state, sample) ->
    (state, params_t, best_epoch)``, ``sse(params_t, (x, y, w))``."""

    init: Callable
    record: Callable
    steps: Callable
    epochs_done: Callable
    finish: Callable
    sse: Callable


def make_stream_engine(spec: MLPSpec, cfg: TrainConfig) -> StreamEngine:
    """The pure pieces of a streamed run for ``spec`` and ``cfg``, bound to them."""
    return StreamEngine(
        lambda key, sample, hp, params: _init(spec, cfg, key, sample, hp, params),
        functools.partial(_stream_record, spec, cfg),
        functools.partial(_stream_steps, spec, cfg),
        functools.partial(_stream_epochs_done, cfg),
        functools.partial(_stream_finish, spec, cfg),
        lambda params_t, xy: _stream_sse(spec, params_t, *xy),
    )


def sampling_key(key):
    """The key an epoch's minibatch order is folded from (``fold_in(it, epoch)``)."""
    return jax.random.fold_in(key, _SAMPLE_SALT)


@functools.partial(jax.jit, static_argnums=1)
def epoch_order(epoch_key, rows: int):
    """The order in which an epoch over ``rows`` unpadded rows visits them: the one
    ``make_train`` draws from ``epoch_key``."""
    return _shuffled(epoch_key, rows)


def make_engine(spec: MLPSpec, cfg: TrainConfig) -> Engine:
    """The pure pieces of a training run for ``spec`` and ``cfg``, bound to them."""
    return Engine(
        spec,
        cfg,
        functools.partial(_init, spec, cfg),
        functools.partial(_run, spec, cfg),
        functools.partial(_finish, spec, cfg),
    )


def make_train(spec: MLPSpec, cfg: TrainConfig) -> Callable:
    """A pure ``train(key, data, hparams, params=None) -> TrainResult`` for jit and vmap.

    ``key`` initializes the weights with ``init(key, spec)`` (so ``PRNGKey(1234)`` gives
    the lecture's weights) and, through ``fold_in``, drives minibatch sampling.

    Example:
      >>> from jaxreg.data import Dataset, lecture_data
      >>> xt, yt, xv, yv = lecture_data()
      >>> train = jax.jit(make_train(MLPSpec(), TrainConfig(epochs=4000, optimizer="gd")))
      >>> res = train(jax.random.PRNGKey(1234), Dataset(xt, yt, xv, yv), Hparams(1e-3))
      >>> print(f"{float(res.val_mse[0]):.6f}")
      0.042119
    """

    def train(key, data: Dataset, hparams: Hparams, params=None) -> TrainResult:
        state = _init(spec, cfg, key, data, hparams, params)
        state, history = _run(spec, cfg, state, key, data, hparams, cfg.epochs)
        return _finish(spec, cfg, state, data, history)

    return train
