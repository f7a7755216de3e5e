"""The compiled training run: ``make_train(spec, cfg) -> train(key, data, hparams)``.

``train`` is pure and its whole epoch loop runs inside one ``jax.jit``: minibatch
sampling, updates, loss recording, early stopping and best-params tracking happen on the
device. ``jax.vmap(train)`` trains many models at once. Internally the engine uses the lane
layout of ``jaxreg.model`` (samples on the last axis); results come back in the lecture's
layout.

Runs can also be cut into equal chunks with ``make_engine`` (``init`` / ``run`` /
``finish``): epoch ``e`` draws its minibatches from ``fold_in(key, e)``, so any cut gives
exactly the parameters of one uninterrupted run.

Rank 3: imports data, model, loss, optim.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg.data import Dataset
from jaxreg.loss import l2_penalty, mse_per_output
from jaxreg.model import ACTIVATIONS, MLPSpec, apply_lanes, from_lanes, init, to_lanes
from jaxreg.optim import SCHEDULES, Hparams, check_hparams, learning_rate_at, make_optimizer
from jaxreg.runtime import cpu_cores

__all__ = [
    "Engine",
    "History",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "compile_count",
    "fit",
    "fit_many",
    "make_engine",
    "make_train",
]

SAMPLINGS = ("full", "shuffle", "bootstrap")
OBJECTIVES = ("mse", "rmse")
_SAMPLE_SALT = 0x5A3D  # fold_in constant separating the sampling stream from init keys


NON_FINITE_MESSAGE = ("Solver produced non-finite parameter weights. The input data may "
                      "contain large values and need to be preprocessed.")


class TrainingDivergedError(ValueError, FloatingPointError):
    """Training produced non-finite losses or parameters (a ``ValueError``, as scikit-learn
    raises for non-finite weights, and a ``FloatingPointError``)."""


@dataclass(frozen=True)
class TrainConfig:
    """Static training configuration (hashable; a change recompiles).

    Attributes:
      epochs: passes over the training data.
      optimizer: a name from ``jaxreg.optim.OPTIMIZERS`` (``gd`` is the hand-coded update).
      schedule: a name from ``jaxreg.optim.SCHEDULES``.
      batch_size: rows per minibatch; None for full-batch training.
      sampling: ``full`` (one step per epoch on all rows), ``shuffle`` (a permutation per
        epoch cut into batches; the last one partial), or ``bootstrap`` (each step draws
        ``batch_size`` rows with replacement).
      steps_per_epoch: ``bootstrap`` only; default ``ceil(n / batch_size)``.
      objective: ``mse`` or ``rmse`` (the linear blog's loss); the L2 penalty is added.
      record_every: record train/validation MSE every this many epochs (before the
        epoch's update); 0 records nothing.
      patience: early stopping: stop once validation MSE has not improved for this many
        epochs (checked at record points); None trains all epochs.
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

    def __post_init__(self):
        from jaxreg.optim import OPTIMIZERS

        _check_int("TrainConfig.epochs", self.epochs, 1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {list(OPTIMIZERS)}. "
                             f"Got {self.optimizer!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {list(SCHEDULES)}. "
                             f"Got {self.schedule!r}.")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"TrainConfig.sampling must be one of {list(SAMPLINGS)}. "
                             f"Got {self.sampling!r}.")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective must be one of {list(OBJECTIVES)}. "
                             f"Got {self.objective!r}.")
        if self.sampling == "full":
            if self.batch_size is not None:
                raise ValueError("TrainConfig.batch_size must be None when sampling='full'. "
                                 f"Got {self.batch_size!r}; use sampling='shuffle' or "
                                 "'bootstrap' for minibatches.")
        else:
            _check_int("TrainConfig.batch_size", self.batch_size, 1)
        if self.steps_per_epoch is not None:
            if self.sampling != "bootstrap":
                raise ValueError("TrainConfig.steps_per_epoch applies only to "
                                 f"sampling='bootstrap'. Got sampling={self.sampling!r}.")
            _check_int("TrainConfig.steps_per_epoch", self.steps_per_epoch, 1)
        _check_int("TrainConfig.record_every", self.record_every, 0)
        if self.record_every and self.epochs % self.record_every:
            raise ValueError("TrainConfig.record_every must divide epochs. "
                             f"Got record_every={self.record_every} with "
                             f"epochs={self.epochs}.")
        if self.patience is not None:
            _check_int("TrainConfig.patience", self.patience, 1)
            if not self.record_every:
                raise ValueError("TrainConfig.patience needs record_every >= 1 (validation "
                                 "is checked at record points). Got record_every=0.")

    def steps(self, n: int) -> int:
        """Optimizer steps per epoch for ``n`` training rows."""
        if self.sampling == "full":
            return 1
        if self.sampling == "bootstrap" and self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return math.ceil(n / min(self.batch_size, n))


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}. Got {value!r}.")


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
    optimization objective of the steps that followed ``(R,)``."""

    epoch: jax.Array
    train_mse: jax.Array
    val_mse: jax.Array
    objective: jax.Array


class TrainResult(NamedTuple):
    """What a training run returns.

    ``params`` are the final parameters; ``best_params`` those of the best validation
    check when early stopping (``cfg.patience``) with validation data, else ``params``;
    ``train_mse``/``val_mse`` are per-output MSE of ``best_params`` after training;
    ``epochs_run`` counts epochs actually trained (fewer when stopped early).
    ``compile_seconds``/``run_seconds`` are filled in by ``fit``.
    """

    params: Any
    best_params: Any
    best_epoch: Any
    epochs_run: Any
    history: History
    train_mse: Any
    val_mse: Any
    compile_seconds: float = float("nan")
    run_seconds: float = float("nan")


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
    has_val = data.x_val is not None
    xv_t = data.x_val.T if has_val else None
    yv_t = data.y_val.T if has_val else None
    return x_t, y_t, xv_t, yv_t


def make_engine(spec: MLPSpec, cfg: TrainConfig) -> Engine:
    """Build the pure pieces of a training run for ``spec`` and ``cfg`` (Python setup once)."""
    act = ACTIVATIONS[spec.activation]
    opt = make_optimizer(cfg.optimizer)

    def predict_t(params_t, x_t):
        return apply_lanes(params_t, x_t, act)

    def objective(params_t, x_t, y_t, w, l2):
        per_out = mse_per_output(predict_t(params_t, x_t), y_t, w, axis=1)
        loss = jnp.mean(per_out)
        if cfg.objective == "rmse":
            # sqrt has an infinite derivative at 0: a minibatch fitted exactly gets 0 loss
            # and a zero gradient instead of NaN.
            safe = jnp.where(loss > 0, loss, 1.0)
            loss = jnp.where(loss > 0, jnp.sqrt(safe), 0.0)
        return loss + l2 * l2_penalty(params_t)

    value_and_grad = jax.value_and_grad(objective)
    # Best-params tracking (and its restore) belongs to early stopping only.
    track_best = cfg.patience is not None

    def engine_init(key, data: Dataset, hparams: Hparams, params=None) -> TrainState:
        if params is None:
            params = init(key, spec, dtype=data.x.dtype)
        params_t = to_lanes(params)
        hp = hparams.astype(data.x.dtype)
        inf = jnp.asarray(jnp.inf, data.x.dtype)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(params_t, opt.init(params_t, hp), zero, zero, params_t, inf, zero,
                          zero, jnp.zeros((), bool))

    def update(params_t, opt_state, step, x_t, y_t, w, hp, total_steps):
        loss, grads = value_and_grad(params_t, x_t, y_t, w, hp.l2)
        lr = learning_rate_at(cfg.schedule, hp, step, total_steps)
        params_t, opt_state = opt.step(params_t, grads, opt_state, lr, hp)
        return params_t, opt_state, loss

    def one_epoch(state: TrainState, skey, x_t, y_t, w, hp):
        n = x_t.shape[1]
        steps = cfg.steps(n)
        total_steps = cfg.epochs * steps
        params_t, opt_state, step = state.params, state.opt_state, state.step
        if cfg.sampling == "full":
            params_t, opt_state, loss = update(params_t, opt_state, step, x_t, y_t, w, hp,
                                               total_steps)
            return params_t, opt_state, step + 1, loss
        ekey = jax.random.fold_in(skey, state.epoch)
        batch = min(cfg.batch_size, n)
        pad = 0
        if cfg.sampling == "shuffle":
            perm = jax.random.permutation(ekey, n)
            pad = steps * batch - n
            idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(steps, batch)
            mask = (jnp.arange(steps * batch) < n).reshape(steps, batch).astype(x_t.dtype)
        else:
            idx = jax.random.randint(ekey, (steps, batch), 0, n)
            mask = None

        def body(carry, inputs):
            params_t, opt_state, step = carry
            idx_b, mask_b = inputs
            w_b = None if w is None else w[idx_b]
            if pad:
                w_b = mask_b if w_b is None else w_b * mask_b
            params_t, opt_state, loss = update(params_t, opt_state, step, x_t[:, idx_b],
                                               y_t[:, idx_b], w_b, hp, total_steps)
            return (params_t, opt_state, step + 1), loss

        (params_t, opt_state, step), losses = lax.scan(body, (params_t, opt_state, step),
                                                       (idx, mask))
        return params_t, opt_state, step, jnp.mean(losses)

    def epoch_fn(state: TrainState, skey, x_t, y_t, w, hp):
        def go(state):
            params_t, opt_state, step, loss = one_epoch(state, skey, x_t, y_t, w, hp)
            return state._replace(params=params_t, opt_state=opt_state, step=step,
                                  epoch=state.epoch + 1), loss

        if cfg.patience is None:
            return go(state)
        # Early stopping: once stopped, epochs are skipped (the loop keeps its fixed length).
        return lax.cond(state.stopped, lambda s: (s, jnp.asarray(jnp.nan, x_t.dtype)), go,
                        state)

    def evaluate(params_t, x_t, y_t, w, xv_t, yv_t):
        train = mse_per_output(predict_t(params_t, x_t), y_t, w, axis=1)
        if xv_t is None:
            val = jnp.full_like(train, jnp.nan)
        else:
            val = mse_per_output(predict_t(params_t, xv_t), yv_t, None, axis=1)
        return train, val

    def check_best(state: TrainState, val_k):
        val = jnp.mean(val_k)
        better = val < state.best_val
        since = jnp.where(better, 0, state.since_best + cfg.record_every)
        stopped = state.stopped
        if cfg.patience is not None:
            stopped = stopped | (since >= cfg.patience)
        best_params = jax.tree.map(lambda b, p: jnp.where(better, p, b), state.best_params,
                                   state.params)
        return state._replace(
            best_params=best_params,
            best_val=jnp.where(better, val, state.best_val),
            best_epoch=jnp.where(better, state.epoch, state.best_epoch),
            since_best=since,
            stopped=stopped,
        )

    def engine_run(state: TrainState, key, data: Dataset, hparams: Hparams, n_epochs: int):
        x_t, y_t, xv_t, yv_t = _lanes(data)
        w = data.w
        hp = hparams.astype(data.x.dtype)
        skey = jax.random.fold_in(key, _SAMPLE_SALT)
        k = data.y.shape[1]
        if not cfg.record_every:
            def plain(_, s):
                return epoch_fn(s, skey, x_t, y_t, w, hp)[0]

            state = lax.fori_loop(0, n_epochs, plain, state)
            empty = jnp.zeros((0,), x_t.dtype)
            hist = History(jnp.zeros((0,), jnp.int32), jnp.zeros((0, k), x_t.dtype),
                           jnp.zeros((0, k), x_t.dtype), empty)
            return state, hist

        def chunk(s, _):
            train_k, val_k = evaluate(s.params, x_t, y_t, w, xv_t, yv_t)
            epoch0 = s.epoch
            if track_best and xv_t is not None:
                s = check_best(s, val_k)

            def inner(s, _):
                return epoch_fn(s, skey, x_t, y_t, w, hp)

            s, losses = lax.scan(inner, s, None, length=cfg.record_every)
            return s, History(epoch0, train_k, val_k, jnp.nanmean(losses))

        if n_epochs % cfg.record_every:
            raise ValueError(f"n_epochs must be a multiple of record_every="
                             f"{cfg.record_every}. Got {n_epochs}.")
        return lax.scan(chunk, state, None, length=n_epochs // cfg.record_every)

    def engine_finish(state: TrainState, data: Dataset, history: History) -> TrainResult:
        x_t, y_t, xv_t, yv_t = _lanes(data)
        if track_best and xv_t is not None:
            _, val_k = evaluate(state.params, x_t, y_t, data.w, xv_t, yv_t)
            state = check_best(state, val_k)
            best_t, best_epoch = state.best_params, state.best_epoch
        else:
            best_t, best_epoch = state.params, state.epoch
        train_k, val_k = evaluate(best_t, x_t, y_t, data.w, xv_t, yv_t)
        return TrainResult(from_lanes(state.params), from_lanes(best_t), best_epoch,
                           state.epoch, history, train_k, val_k)

    return Engine(spec, cfg, engine_init, engine_run, engine_finish)


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
    engine = make_engine(spec, cfg)

    def train(key, data: Dataset, hparams: Hparams, params=None) -> TrainResult:
        state = engine.init(key, data, hparams, params)
        state, history = engine.run(state, key, data, hparams, cfg.epochs)
        return engine.finish(state, data, history)

    return train


# ------------------------------------------------------------ host-side runner

_COMPILED: dict[Any, Any] = {}
_COMPILES = 0


def compile_count() -> int:
    """How many training executables ``fit`` has compiled in this process."""
    return _COMPILES


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (treedef, tuple((np.shape(x), jnp.result_type(x), _sharding_key(x))
                           for x in leaves))


def _sharding_key(x):
    sharding = getattr(x, "sharding", None)
    if sharding is None or len(sharding.device_set) == 1:
        return None
    return (tuple(d.id for d in sharding.mesh.devices.flat), str(sharding.spec))


def _compiled(cache_key, build: Callable, args):
    """Compile ``build()`` for ``args`` once per ``cache_key`` and argument signature."""
    global _COMPILES
    # The random-number mode changes what init and sampling compile to.
    full_key = (cache_key, _signature(args), jax.config.jax_enable_x64,
                jax.config.jax_threefry_partitionable)
    hit = _COMPILED.get(full_key)
    if hit is not None:
        return hit, 0.0
    t0 = time.perf_counter()
    exe = jax.jit(build()).lower(*args).compile()
    seconds = time.perf_counter() - t0
    _COMPILES += 1
    _COMPILED[full_key] = exe
    return exe, seconds


def compiled_train(spec: MLPSpec, cfg: TrainConfig, *args, wrap=None):
    """The compiled ``train`` for these argument shapes, cached; returns
    ``(executable, compile_seconds)`` with ``compile_seconds`` 0 on a cache hit.

    ``wrap`` (hashable) transforms the pure function before jit, e.g. a vmap.
    """

    def build():
        fn = make_train(spec, cfg)
        return fn if wrap is None else wrap(fn)

    return _compiled(("train", spec, cfg, wrap), build, args)


class Progress(NamedTuple):
    """What a chunked ``fit`` (or ``fit_many``) reports after each chunk.

    ``epoch`` counts the epochs the run has gone through; with a model axis, ``state`` and
    ``history`` carry it first (``history`` arrays ``(M, R, ...)``) and a member stopped
    early keeps its own smaller ``state.epoch``.
    """

    epoch: int
    epochs: int
    state: TrainState
    history: History
    compile_seconds: float
    run_seconds: float


def _fit_chunked(spec, cfg, data, hp, key, params, chunk_epochs, callback, resume,
                 layout=None):
    """The chunked run of one model, or of a model axis when ``layout`` is
    ``(batching, devices)`` (then ``key``, ``hp`` and ``params`` carry it first)."""
    if not cfg.record_every:
        raise ValueError("chunk_epochs needs cfg.record_every >= 1. Got record_every=0.")
    if (not isinstance(chunk_epochs, int) or chunk_epochs < 1
            or chunk_epochs % cfg.record_every or cfg.epochs % chunk_epochs):
        raise ValueError("chunk_epochs must be a positive multiple of record_every "
                         f"({cfg.record_every}) that divides epochs ({cfg.epochs}). "
                         f"Got {chunk_epochs!r}.")
    engine = make_engine(spec, cfg)

    def per_model(fn, mapped):
        return fn if layout is None else _over_models(fn, mapped, *layout)

    compile_s = 0.0
    if resume is None:
        init_args = (key, data, hp) if params is None else (key, data, hp, params)
        mapped = (True, False, True, True)[:len(init_args)]
        exe, c = _compiled(("init", spec, cfg, layout),
                           lambda: per_model(engine.init, mapped), init_args)
        compile_s += c
        state = exe(*init_args)
        history = None
    else:
        state, history = resume
    run_args = (state, key, data, hp)
    exe_run, c = _compiled(
        ("run", spec, cfg, chunk_epochs, layout),
        lambda: per_model(lambda s, k, d, h: engine.run(s, k, d, h, chunk_epochs),
                          (True, True, False, True)), run_args)
    compile_s += c
    exe_finish, c = _compiled(
        ("finish", spec, cfg, layout),
        lambda: per_model(lambda s, d: engine.finish(s, d, None), (True, False)), (state, data))
    compile_s += c
    run_s = 0.0
    axis = 0 if layout is None else 1  # the history's record axis

    def finished(state) -> bool:
        done = np.asarray(state.epoch) >= cfg.epochs
        if cfg.patience is not None:
            done = done | np.asarray(state.stopped)
        return bool(np.all(done))

    while not finished(state):
        t0 = time.perf_counter()
        state, h = jax.block_until_ready(exe_run(state, key, data, hp))
        run_s += time.perf_counter() - t0
        h = jax.tree.map(np.asarray, h)
        history = h if history is None else jax.tree.map(
            lambda a, b: np.concatenate([a, b], axis=axis), history, h)
        if callback is not None:
            callback(Progress(int(np.max(state.epoch)), cfg.epochs, state, history, compile_s,
                              run_s))
    if history is None:
        history = jax.tree.map(np.asarray, _empty_history(data))
        if layout is not None:
            m = int(np.shape(key)[0])
            history = jax.tree.map(lambda a: np.broadcast_to(a, (m, *a.shape)), history)
    t0 = time.perf_counter()
    result = jax.block_until_ready(exe_finish(state, data))
    run_s += time.perf_counter() - t0
    return result._replace(history=history), compile_s, run_s


def _empty_history(data: Dataset):
    k = data.y.shape[1]
    dt = data.x.dtype
    return History(jnp.zeros((0,), jnp.int32), jnp.zeros((0, k), dt), jnp.zeros((0, k), dt),
                   jnp.zeros((0,), dt))


def check_finite(result: TrainResult, hparams: Hparams | None = None,
                 unit: str = "epoch") -> None:
    """Raise ``TrainingDivergedError`` with a hint if a result holds non-finite values.

    ``result`` may hold one model or a leading model axis (``fit_many``); the message
    names the first diverged model, the first recorded ``unit`` (epoch or step) whose loss
    was not finite, and that model's learning rate.
    """
    batched = np.ndim(result.epochs_run) > 0
    leaves = jax.tree.leaves(result.params) + [result.train_mse]

    def finite(x):
        x = np.asarray(x)
        return np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1) if batched else np.array(
            [np.isfinite(x).all()])

    ok = np.logical_and.reduce([finite(x) for x in leaves])
    if ok.all():
        return
    i = int(np.argmin(ok))
    who = f" in model {i} of {ok.size}" if ok.size > 1 else ""
    where = "by the end of training"
    tr = np.asarray(result.history.train_mse)
    epochs = np.asarray(result.history.epoch)
    if batched:
        tr, epochs = tr[i], epochs[i]
    if tr.size:
        bad = ~np.all(np.isfinite(tr.reshape(tr.shape[0], -1)), axis=1)
        if bad.any():
            where = f"at {unit} {int(epochs[bad.argmax()])}"
    lr = ""
    if hparams is not None:
        rates = np.asarray(hparams.learning_rate, dtype=float).reshape(-1)
        lr = f" (learning_rate={rates[i if rates.size > 1 else 0]:g})"
    raise TrainingDivergedError(
        f"{NON_FINITE_MESSAGE} Training diverged{who}: the loss or the parameters became NaN "
        f"or infinite {where}{lr}. Lower the learning rate, standardize x and y, or add an L2 "
        "penalty.")


def fit(spec: MLPSpec, cfg: TrainConfig, data: Dataset, hparams: Hparams = Hparams(),
        key=None, params=None, check: bool = True, *, chunk_epochs: int | None = None,
        callback: Callable[[Progress], None] | None = None,
        resume: tuple[TrainState, History] | None = None) -> TrainResult:
    """Train one model: compile (cached), run, time both apart, and check the result.

    Args:
      spec, cfg: the model and the static training configuration.
      data: a ``Dataset``; arrays are used as given (validate them first with
        ``jaxreg.data.check_xy`` at a public boundary).
      hparams: traced hyperparameters; validated here.
      key: a PRNG key or an int seed (default 0).
      params: initial parameters instead of ``init(key, spec)``.
      check: raise ``TrainingDivergedError`` when the result is not finite.
      chunk_epochs: run in equal compiled chunks of this many epochs (one compilation),
        calling ``callback(Progress)`` between chunks, e.g. to draw a progress bar or write
        a checkpoint. Sampling depends only on ``key`` and the epoch number, so the result
        equals an uninterrupted chunked run exactly.
      resume: ``(state, history)`` from a ``Progress`` (or a checkpoint) to continue from;
        needs ``chunk_epochs``.

    Returns:
      A ``TrainResult`` with ``compile_seconds`` and ``run_seconds`` filled in.
    """
    check_hparams(hparams)
    key = _as_key(key)
    n = int(np.shape(data.x)[0])
    if cfg.sampling == "bootstrap" and cfg.batch_size > n:
        raise ValueError(f"batch_size must not exceed the number of training rows for "
                         f"bootstrap sampling. Got batch_size={cfg.batch_size} with {n} rows.")
    hp = Hparams(*(jnp.asarray(v, data.x.dtype) for v in hparams))
    if params is None and resume is None:
        # Initialize outside the compiled run: the same values, and threefry's hashing then
        # runs op by op (cached) instead of doubling the training program's compile time.
        params = init(key, spec, dtype=data.x.dtype)
    if chunk_epochs is not None or resume is not None:
        if chunk_epochs is None:
            raise ValueError("resume needs chunk_epochs. Got chunk_epochs=None.")
        result, compile_s, run_s = _fit_chunked(spec, cfg, data, hp, key, params,
                                                chunk_epochs, callback, resume)
        result = result._replace(compile_seconds=compile_s, run_seconds=run_s)
        if check:
            check_finite(result, hparams)
        return result
    args = (key, data, hp) if params is None else (key, data, hp, params)
    exe, compile_s = compiled_train(spec, cfg, *args)
    t0 = time.perf_counter()
    result = jax.block_until_ready(exe(*args))
    run_s = time.perf_counter() - t0
    result = result._replace(compile_seconds=compile_s, run_seconds=run_s)
    if check:
        check_finite(result, hparams)
    return result


def _over_models(fn, mapped: tuple[bool, ...], batching: str, devices: tuple | None):
    """``fn`` applied to every model of a model axis.

    ``mapped[i]`` says whether argument ``i`` carries the model axis first (the others,
    such as the data, are shared). ``batching`` is ``vmap`` (one batched program) or ``map``
    (a loop over models of the single-model program; XLA:CPU can compile that loop's body
    into one native function with the CLI's options, see ``jaxreg.runtime``). ``devices``
    splits the model axis with ``shard_map``: each device trains its own models and no
    value crosses devices.
    """

    def looped(*args):
        if batching == "vmap":
            return jax.vmap(fn, in_axes=tuple(0 if m else None for m in mapped))(*args)

        def one(own):
            it = iter(own)
            return fn(*(next(it) if m else a for a, m in zip(args, mapped, strict=True)))

        return lax.map(one, tuple(a for a, m in zip(args, mapped, strict=True) if m))

    if devices is None:
        return looped
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(devices), ("models",))
    # check_vma=False: the lane layout's custom VJP (model._affine) returns a cotangent for
    # the replicated data, which the check would want summed over devices.
    return jax.shard_map(looped, mesh=mesh,
                         in_specs=tuple(PartitionSpec("models") if m else PartitionSpec()
                                        for m in mapped),
                         out_specs=PartitionSpec("models"), check_vma=False)


@functools.cache
def _models_wrap(batching: str, devices: tuple | None):
    """``fit_many``'s wrap of ``train(keys, data, hp, params)`` (cached: the same object for
    the same layout, so ``compiled_train`` finds its executable again)."""
    return lambda fn: _over_models(fn, (True, False, True, True), batching, devices)


def fit_many(spec: MLPSpec, cfg: TrainConfig, data: Dataset, hparams: Hparams = Hparams(),
             keys=None, n_models: int | None = None, check: bool = True,
             devices=None, threads: int | None = None, batching: str | None = None, *,
             params=None, chunk_epochs: int | None = None,
             callback: Callable[[Progress], None] | None = None,
             resume: tuple[TrainState, History] | None = None) -> TrainResult:
    """Train ``M`` models of one architecture in one compiled call.

    Args:
      keys: ``M`` PRNG keys (an ``(M, 2)`` array of raw keys), or a list of int seeds.
      hparams: each field a scalar (shared) or an array of length ``M``.
      n_models: ``M`` when ``keys`` is None (then seeds ``0..M-1``).
      devices: devices to split the model axis over (``shard_map`` over a one-axis
        ``Mesh``); None uses every local device. The models are independent, so the split
        needs no communication; ``M`` is padded to a multiple of the device count and the
        padding dropped.
      threads: with a single CPU device (JAX's default), the model axis is cut into this
        many equal parts that run at once from host threads, one compiled executable for
        all parts: XLA runs one execution's small operations one after another on one
        core, so this is how the other cores get work. None uses one part per available
        core on a CPU device and 1 elsewhere; 1 disables it. Chunked runs use one part.
      batching: ``vmap`` (one batched program) or ``map`` (a loop over models of the
        single-model program). None picks ``map`` on CPU (as fast for tens of models, much
        faster and smaller for hundreds, whose batched activations outgrow the caches;
        benchmarks/README.md) and ``vmap`` on accelerators.
      params: initial parameters with a leading model axis instead of ``init(key, spec)``.
      chunk_epochs, callback, resume: as for ``fit``, with the model axis first in
        ``Progress.state``/``Progress.history`` and in ``resume``; all models advance
        together, chunk by chunk, until every one has finished or stopped early.

    One model (``M == 1``) is ``fit``'s single-model run, equal to it bit for bit, with
    the model axis added.

    Returns:
      A ``TrainResult`` whose arrays have a leading model axis of length ``M``.
    """
    if keys is None:
        if n_models is None:
            raise ValueError("fit_many needs keys or n_models. Got neither.")
        keys = list(range(n_models))
    if isinstance(keys, list | tuple | range):
        if not keys:
            raise ValueError("fit_many needs at least one key. Got an empty list.")
        keys = jnp.stack([_as_key(int(k)) for k in keys])
    m = int(np.shape(keys)[0])
    if threads is not None:
        _check_int("threads", threads, 1)
    if batching not in (None, "vmap", "map"):
        raise ValueError(f"batching must be None, 'vmap' or 'map'. Got {batching!r}.")
    if resume is not None and chunk_epochs is None:
        raise ValueError("resume needs chunk_epochs. Got chunk_epochs=None.")
    check_hparams(hparams)
    hp = Hparams(*(jnp.broadcast_to(jnp.asarray(v, data.x.dtype), (m,)) for v in hparams))
    if m == 1:
        return _fit_one_as_many(spec, cfg, data, hp, keys, params, check, chunk_epochs,
                                callback, resume)
    devices = tuple(jax.local_devices() if devices is None else devices)
    on_cpu = devices[0].platform == "cpu"
    if batching is None:
        batching = "map" if on_cpu else "vmap"
    parts = 1
    if len(devices) == 1 and chunk_epochs is None:
        parts = min(m, (cpu_cores() if on_cpu else 1) if threads is None else threads)
    pad = -m % (len(devices) * parts)

    def padded(tree, xp=jnp):  # repeat the last model; its copies are dropped again
        return tree if not pad else jax.tree.map(
            lambda a: xp.concatenate([a, xp.repeat(xp.asarray(a)[-1:], pad, 0)]), tree)

    def unpadded(tree):
        return tree if not pad else jax.tree.map(lambda a: a[:m], tree)

    keys, hp = padded((keys, hp))
    if params is None and resume is None:
        params = jax.vmap(lambda k: init(k, spec, dtype=data.x.dtype))(keys)  # see fit
    elif params is not None:
        params = padded(jax.tree.map(lambda a: jnp.asarray(a, data.x.dtype), params))
    split = whole = None
    if len(devices) > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        mesh = Mesh(np.array(devices), ("models",))
        split, whole = (NamedSharding(mesh, PartitionSpec("models")),
                        NamedSharding(mesh, PartitionSpec()))

    def place(k, d, h, p):  # the model axis split over the devices, the data on each
        if split is None:
            return k, d, h, p
        return (jax.device_put(k, split), jax.device_put(d, whole), jax.device_put(h, split),
                None if p is None else jax.device_put(p, split))

    layout = (batching, devices if len(devices) > 1 else None)
    if chunk_epochs is not None:
        if resume is not None:
            state, history = resume
            state = padded(jax.tree.map(jnp.asarray, state))
            resume = (state if split is None else jax.device_put(state, split),
                      padded(jax.tree.map(np.asarray, history), np))
        k, d, h, p = place(keys, data, hp, params)
        cb = None if callback is None else (lambda pr: callback(pr._replace(
            state=unpadded(pr.state), history=unpadded(pr.history))))
        result, compile_s, run_s = _fit_chunked(spec, cfg, d, h, k, p, chunk_epochs, cb,
                                                resume, layout=layout)
    else:
        size = (m + pad) // parts
        chunks = [place(keys[i:i + size], data, jax.tree.map(lambda a, i=i: a[i:i + size], hp),
                        jax.tree.map(lambda a, i=i: a[i:i + size], params))
                  for i in range(0, m + pad, size)]
        exe, compile_s = compiled_train(spec, cfg, *chunks[0], wrap=_models_wrap(*layout))
        t0 = time.perf_counter()
        if parts > 1:
            result = _run_in_threads(exe, chunks)
        else:
            result = jax.block_until_ready(exe(*chunks[0]))
        run_s = time.perf_counter() - t0
    result = unpadded(result)._replace(compile_seconds=compile_s, run_seconds=run_s)
    if check:
        check_finite(result, hparams)
    return result


def _fit_one_as_many(spec, cfg, data, hp, keys, params, check, chunk_epochs, callback,
                     resume) -> TrainResult:
    """One model: the single-model run (equal bit for bit to ``fit``, chunked or not), its
    results, progress and resume state carrying a model axis of length 1."""

    def first(tree):
        return None if tree is None else jax.tree.map(lambda a: a[0], tree)

    def with_axis(tree):  # device arrays stay on the device, host values on the host
        return jax.tree.map(lambda a: a[None] if hasattr(a, "ndim") else np.asarray(a)[None],
                            tree)

    cb = None if callback is None else (lambda pr: callback(pr._replace(
        state=with_axis(pr.state), history=with_axis(pr.history))))
    one = fit(spec, cfg, data, Hparams(*(v[0] for v in hp)), key=keys[0],
              params=first(params), check=check, chunk_epochs=chunk_epochs, callback=cb,
              resume=None if resume is None else (first(resume[0]), first(resume[1])))
    return with_axis(one._replace(compile_seconds=0.0, run_seconds=0.0))._replace(
        compile_seconds=one.compile_seconds, run_seconds=one.run_seconds)


def _run_in_threads(exe, chunks):
    """Run ``exe`` on each argument tuple from its own thread; concatenate the results."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        outs = list(pool.map(lambda a: jax.block_until_ready(exe(*a)), chunks))
    return jax.tree.map(lambda *a: jnp.concatenate(a), *outs)


def _as_key(key):
    if key is None:
        key = 0
    if isinstance(key, int | np.integer):
        return jax.random.PRNGKey(int(key))
    return key
