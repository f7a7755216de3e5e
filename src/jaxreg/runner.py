"""The one host-side runner: the only place that compiles and calls training executables.

``run(spec, cfg, data, hparams, keys)`` trains ``M`` models of one architecture (one model
is ``M = 1``: there is always a model axis) and returns an ``Outcome``: the ``TrainResult``
(arrays with the model axis first), the ``Timings`` beside it, and the final state of a
chunked run (to resume from). Everything that varies is one argument:

- ``placement``: how the model axis meets the hardware, a ``Placement`` value chosen in one
  place (``placement_for``): the single-model program (``M = 1``), ``vmap`` (one batched
  program) or ``map`` (a loop of the single-model program), split over devices with
  ``shard_map`` and/or over host threads on one CPU device;
- ``chunk_epochs``: run in equal compiled chunks, calling ``callbacks`` between them
  (progress bars, checkpoint writers, early-stop reports); ``n_epochs`` stops after that
  many epochs (``partial_fit``'s one epoch);
- ``resume``: a ``(state, history)`` handed back from an earlier ``Progress``/``Outcome`` or
  a checkpoint.

Executables are cached (bounded, least recently used first out) by architecture,
configuration, placement and argument shapes, so equal shapes never recompile.

Rank 4: imports validate, data, model, optim and engine.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxreg import validate
from jaxreg.data import Dataset, pad_rows
from jaxreg.engine import (
    DATA_AXIS,
    History,
    TrainConfig,
    TrainResult,
    TrainState,
    empty_history,
    make_engine,
    make_train,
)
from jaxreg.errors import NON_FINITE_MESSAGE, TrainingDivergedError
from jaxreg.model import MLPSpec, from_lanes, init
from jaxreg.optim import Hparams, check_hparams
from jaxreg.runtime import cpu_cores, small_loop_flags

__all__ = [
    "Outcome",
    "Placement",
    "Progress",
    "Timings",
    "as_key",
    "check_finite",
    "compile_count",
    "fit",
    "fit_many",
    "gather_processes",
    "gather_rows",
    "placement_for",
    "run",
    "run_stream",
    "state_template",
]


class Timings(NamedTuple):
    """Seconds spent compiling (0 on a cache hit) and running, beside the arrays."""

    compile_seconds: float
    run_seconds: float


class Progress(NamedTuple):
    """What a chunked run reports to its callbacks after each chunk.

    ``epoch`` counts the epochs the run has gone through (the furthest model); ``state``
    and ``history`` carry the model axis first (``history`` arrays ``(M, R, ...)``); a model
    stopped early keeps its own smaller ``state.epoch``.
    """

    epoch: int
    epochs: int
    state: TrainState
    history: History
    timings: Timings


class Outcome(NamedTuple):
    """What ``run`` returns: the result (model axis first), its timings and, for a chunked
    run, the final ``(state, history)`` to resume from (None otherwise)."""

    result: TrainResult
    timings: Timings
    resume: tuple[TrainState, History] | None


@dataclasses.dataclass(frozen=True)
class Placement:
    """How the model axis (and, for data-parallel training, the rows) meet the hardware.

    ``batching``: ``single`` (one model: the single-model program, the axis added around
    it), ``vmap`` (one batched program) or ``map`` (a loop over models of the single-model
    program; XLA:CPU can compile that loop's body into one native function with the CLI's
    options). ``devices``: the devices of a mesh, or None (one device). ``data``: how many
    of them form the mesh's ``data`` axis: every minibatch (or the full batch) is split
    over it by rows, the parameters are replicated and XLA sums the gradients across it
    (data-parallel training). The other ``len(devices) // data`` form the ``models`` axis,
    which ``shard_map`` splits the model axis over (each device trains its own models).
    ``parts``: on one CPU device, cut the model axis into this many parts run at once from
    host threads (one executable).
    """

    batching: str = "single"
    devices: tuple | None = None
    parts: int = 1
    data: int = 1

    def __post_init__(self):
        validate.choice("Placement", "batching", self.batching, ("single", "vmap", "map"))
        n_dev = len(self.devices or (None,))
        validate.integer("Placement", "data", self.data, low=1)
        if n_dev % self.data:
            raise validate.bad(
                "Placement",
                "data",
                f"a divisor of the number of devices ({n_dev})",
                self.data,
            )
        if self.batching == "single" and self.models_axis > 1:
            raise validate.bad(
                "Placement",
                "devices",
                "None, empty or all on the data axis when batching='single' (one model)",
                self.devices,
            )
        if (self.batching == "single" or self.data > 1) and self.parts != 1:
            raise validate.bad(
                "Placement",
                "parts",
                "1 when batching='single' or data > 1 (no host threads)",
                self.parts,
            )

    @property
    def models_axis(self) -> int:
        """Devices along the ``models`` axis of the mesh (1 without a mesh)."""
        return len(self.devices or (None,)) // self.data

    @property
    def n_slots(self) -> int:
        """Models are padded to a multiple of this."""
        return self.models_axis * self.parts

    @functools.cached_property
    def mesh(self):
        """The ``jax.sharding.Mesh`` of ``devices``: axes ``("models",)``, or
        ``("models", "data")`` when data-parallel; None without devices."""
        if not self.devices:
            return None
        from jax.sharding import Mesh

        if self.data == 1:
            return Mesh(np.array(self.devices), ("models",))
        grid = np.array(self.devices).reshape(self.models_axis, self.data)
        return Mesh(grid, ("models", DATA_AXIS))


def placement_for(
    m: int,
    *,
    devices=None,
    threads: int | None = None,
    batching: str | None = None,
    chunked: bool = False,
    data_axis: int | None = None,
) -> Placement:
    """The placement of ``m`` models: every local device (``devices`` None), ``map`` on CPU
    and ``vmap`` on accelerators (``batching`` None), and on a single CPU device one host
    thread per core (``threads`` None; chunked runs use one).

    ``data_axis``: data-parallel training over a ``data`` axis of this many devices (0: all
    of them); the default devices are then every device of every process (``jax.devices()``),
    and the rest of them split the models.
    """
    threads = validate.integer("placement_for", "threads", threads, low=1, allow_none=True)
    validate.choice("placement_for", "batching", batching, ("vmap", "map"), allow_none=True)
    data = validate.integer("placement_for", "data_axis", data_axis, low=0, allow_none=True)
    if data is not None:
        devs = tuple(jax.devices() if devices is None else devices)
        data = data or len(devs)
        if data == 1:  # one device on the data axis: nothing to split
            return placement_for(
                m, devices=devs, threads=threads, batching=batching, chunked=chunked
            )
        if len(devs) % data:
            raise validate.bad(
                "placement_for", "data_axis", f"0 or a divisor of the {len(devs)} devices", data
            )
        on_cpu = devs[0].platform == "cpu"
        if m == 1:  # one model: a data axis of the first ``data`` devices
            return Placement("single", devs[:data], 1, data)
        return Placement(batching or ("map" if on_cpu else "vmap"), devs, 1, data)
    if m == 1:
        return Placement()
    # Every device of every process (a single process's own): the models split over all.
    devs = tuple(jax.devices() if devices is None else devices)
    on_cpu = devs[0].platform == "cpu"
    batching = batching or ("map" if on_cpu else "vmap")
    parts = 1
    if len(devs) == 1 and not chunked:
        parts = min(m, (cpu_cores() if on_cpu else 1) if threads is None else threads)
    return Placement(batching, devs if len(devs) > 1 else None, parts)


# ---------------------------------------------------------------- the compile cache

_CACHE_SIZE = 64
_CACHE: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_COMPILES = 0


def compile_count() -> int:
    """How many training executables this process has compiled."""
    return _COMPILES


def _sharding_key(x):
    sharding = getattr(x, "sharding", None)
    if sharding is None or len(sharding.device_set) == 1:
        return None
    return (tuple(d.id for d in sharding.mesh.devices.flat), str(sharding.spec))


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (
        treedef,
        tuple(
            (np.shape(x), x.dtype if hasattr(x, "dtype") else jnp.result_type(x), _sharding_key(x))
            for x in leaves
        ),
    )


# Process modes that change what the same Python code compiles to (read as attributes: they
# have context managers).
_MODE_FLAGS = ("jax_enable_x64", "jax_threefry_partitionable")


# XLA's matrix products on one thread, for one executable (XLA's compile options, so the
# process's own options stay as its user set them): a minibatch training loop on a CPU of at
# most two cores whose largest product (batch x fan-in x fan-out) is at most ONE_THREAD_MACS
# multiply-adds. On the 2-core VMs measured (benchmarks/README.md, "One thread for thin
# minibatch products") the second thread's synchronization costs more than its core gives
# at these sizes: the estimator's epoch of a million rows x 8 through 8-64-64-1, batch 1024,
# 1.18x faster by median (1.28x best); 8-256-256-1 (2**26) trains slower, and the lecture's
# full batch too. More cores were not measured, so they keep XLA's threads.
ONE_THREAD_MACS = 2**25
_ONE_THREAD = (("xla_cpu_multi_thread_eigen", False), ("xla_cpu_experimental_ynn_fusion_type", ""))


def _product_options(spec: MLPSpec, cfg: TrainConfig, placement: Placement) -> tuple:
    """The compile options of a training loop (``_ONE_THREAD`` or none), as a hashable
    tuple of pairs. A run in chunks gets them for its loop only (its final evaluation pass
    over every row is faster on XLA's threads); a whole run in one executable, for all of
    it (still faster than none: benchmarks/README.md)."""
    if (
        cfg.batch_size is None
        or cfg.optimizer == "lbfgs"
        or placement.batching != "single"
        or placement.data > 1
        or cpu_cores() > 2
        or small_loop_flags()  # their process options hold these already
        or jax.default_backend() != "cpu"
    ):
        return ()
    sizes = spec.layer_sizes
    widest = max(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return _ONE_THREAD if cfg.batch_size * widest <= ONE_THREAD_MACS else ()


def _compiled(
    cache_key,
    build: Callable,
    args,
    placement: Placement | None = None,
    options: tuple = (),
):
    """``(executable, compile_seconds)`` of ``jax.jit(build())`` for ``args``; compiled once
    per key, argument signature and XLA compile ``options`` (pairs) (0 seconds on a hit).
    With a data-parallel ``placement`` it is traced under the placement's mesh, and the
    outputs of a run with no ``models`` axis to split are replicated on every device."""
    mesh = placement.mesh if placement is not None and placement.data > 1 else None
    out_replicated = placement is not None and placement.models_axis == 1
    global _COMPILES
    # The random-number mode changes what init and sampling compile to.
    full_key = (
        cache_key,
        _signature(args),
        options,
        *(getattr(jax.config, flag) for flag in _MODE_FLAGS),
    )
    hit = _CACHE.get(full_key)
    if hit is not None:
        _CACHE.move_to_end(full_key)
        return hit, 0.0
    t0 = time.perf_counter()
    if mesh is None:
        exe = jax.jit(build()).lower(*args).compile(compiler_options=dict(options) or None)
    else:
        # Traced under the mesh: the engine lays minibatches over its data axis.
        from jax.sharding import NamedSharding, PartitionSpec

        with jax.set_mesh(mesh):
            exe = (
                jax.jit(build(), out_shardings=NamedSharding(mesh, PartitionSpec()))
                .lower(*args)
                .compile()
                if out_replicated
                else jax.jit(build()).lower(*args).compile()
            )
    seconds = time.perf_counter() - t0
    _COMPILES += 1
    _CACHE[full_key] = exe
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return exe, seconds


# ---------------------------------------------------------------- the model axis


class _Mapped(NamedTuple):
    """Which arguments of a function carry the model axis first (the data never does)."""

    key: bool = True
    data: bool = False
    hparams: bool = True
    other: bool = True  # params or state


@functools.cache
def _over_models(placement: Placement, arity: int) -> Callable[[Callable], Callable]:
    """A wrap applying a single-model function ``f(key|state, data, hparams, ...)`` to every
    model of the model axis (cached: the same object for the same placement, so cached
    executables are found again)."""
    mapped = tuple(_Mapped())[:arity]

    def wrap(fn):
        if placement.batching == "single":

            def single(*args):
                one = [
                    jax.tree.map(lambda a: a[0], a) if m else a
                    for a, m in zip(args, mapped, strict=True)
                ]
                return jax.tree.map(lambda a: a[None], fn(*one))

            return single

        def looped(*args):
            if placement.batching == "vmap":
                return jax.vmap(fn, in_axes=tuple(0 if m else None for m in mapped))(*args)

            def one(own):
                it = iter(own)
                return fn(*(next(it) if m else a for a, m in zip(args, mapped, strict=True)))

            return lax.map(one, tuple(a for a, m in zip(args, mapped, strict=True) if m))

        if placement.devices is None or placement.models_axis == 1:
            return looped  # no models axis to split: the data axis is XLA's (the mesh's)
        from jax.sharding import PartitionSpec

        # check_vma=False: the lane layout's custom VJP (model._affine) returns a cotangent
        # for the replicated data, which the check would want summed over devices. Only the
        # models axis is manual; a data axis stays XLA's to split.
        return jax.shard_map(
            looped,
            mesh=placement.mesh,
            in_specs=tuple(PartitionSpec("models") if m else PartitionSpec() for m in mapped),
            out_specs=PartitionSpec("models"),
            axis_names=frozenset({"models"}),
            check_vma=False,
        )

    return wrap


def _place(placement: Placement, tree, shared: bool = False):
    """Put a tree with the model axis (or a shared one) where the placement needs it."""
    if placement.devices is None or tree is None:
        return tree
    from jax.sharding import NamedSharding, PartitionSpec

    spec = PartitionSpec() if shared or placement.models_axis == 1 else PartitionSpec("models")
    return _global(tree, NamedSharding(placement.mesh, spec))


def _global(tree, sharding):
    """``tree``'s arrays as global arrays of ``sharding``, each process putting only the
    shards of its own devices (every process holds the same values)."""

    def one(a):
        if isinstance(a, jax.Array) and a.sharding == sharding:
            return a
        if sharding.is_fully_addressable:
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def _fetchable(tree):
    """``tree`` with every array split over other processes' devices gathered (NumPy), so
    that each process holds the whole result."""

    def one(a):
        if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(a, tiled=True)
        return a

    return jax.tree.map(one, tree)


def _place_rows(placement: Placement, data: Dataset) -> Dataset:
    """Data-parallel data: the rows (training and validation) padded to a multiple of the
    data axis with zero-weight rows and laid over it; ``n`` replicated."""
    from jax.sharding import NamedSharding, PartitionSpec

    k = placement.data
    dtype = np.dtype(data.x.dtype)

    def padded(x, y, w):
        """``(x, y, w)`` with zero-weight rows up to a multiple of ``k`` (w: 1 if None)."""
        count = int(np.shape(x)[0])
        size = -(-count // k) * k
        w = np.ones(count, dtype) if w is None else np.asarray(w)
        return tuple(pad_rows(np.asarray(a), size) for a in (x, y, w))

    rows = int(np.shape(data.x)[0])
    if rows % k:
        if data.n is None:  # the real rows, so that padding is never drawn into a batch
            data = data._replace(n=np.int32(rows))
        x, y, w = padded(data.x, data.y, data.w)
        data = data._replace(x=x, y=y, w=w)
    if data.x_val is not None and int(np.shape(data.x_val)[0]) % k:
        x, y, w = padded(data.x_val, data.y_val, data.w_val)
        data = data._replace(x_val=x, y_val=y, w_val=w)
    rows_spec = NamedSharding(placement.mesh, PartitionSpec(DATA_AXIS))
    n = data.n
    placed = _global(data._replace(n=None), rows_spec)
    if n is not None:
        n = _global(n, NamedSharding(placement.mesh, PartitionSpec()))
    return placed._replace(n=n)


# ---------------------------------------------------------------- the runner


def run(
    spec: MLPSpec,
    cfg: TrainConfig,
    data: Dataset,
    hparams: Hparams,
    keys,
    *,
    params=None,
    resume: tuple[TrainState, History] | None = None,
    chunk_epochs: int | None = None,
    n_epochs: int | None = None,
    callbacks: Sequence[Callable[[Progress], None]] = (),
    placement: Placement | None = None,
    check: bool = True,
) -> Outcome:
    """Train ``M = len(keys)`` models of one architecture.

    Args:
      spec, cfg: the model and the static training configuration.
      data: a ``Dataset`` shared by all models (validate it at a public boundary first).
      hparams: traced hyperparameters, each a scalar (shared) or an array of length ``M``.
      keys: ``(M, 2)`` PRNG keys: model ``i`` initializes from ``keys[i]`` (as
        ``init(keys[i], spec)``) and draws its minibatches from it.
      params: initial parameters with the model axis first, instead of ``init``.
      resume: ``(state, history)`` with the model axis first, to continue from (needs
        ``chunk_epochs``).
      chunk_epochs: run in equal compiled chunks of this many epochs (one compilation),
        calling every callback with a ``Progress`` after each. The result equals the
        unchunked run exactly: epoch ``e`` samples from ``fold_in(key, e)``.
      n_epochs: with ``chunk_epochs``, stop after this many more epochs (a multiple of
        ``chunk_epochs``) instead of at ``cfg.epochs``.
      callbacks: functions of a ``Progress``.
      placement: how the model axis meets the hardware; None: ``placement_for``.
      check: raise ``TrainingDivergedError`` when a result is not finite.

    Returns:
      An ``Outcome``: the ``TrainResult`` (model axis first), the ``Timings``, and the final
      ``(state, history)`` of a chunked run.
    """
    check_hparams(hparams)
    keys = jnp.asarray(keys)
    if keys.ndim != 2 or keys.shape[0] < 1:
        raise validate.bad(
            "run",
            "keys",
            "an (M, 2) array of PRNG keys with M >= 1",
            got=f"an array of shape {tuple(keys.shape)}",
        )
    m = int(keys.shape[0])
    n = int(np.shape(data.x)[0])
    if cfg.sampling == "bootstrap" and cfg.batch_size is not None and cfg.batch_size > n:
        raise validate.bad(
            "TrainConfig",
            "batch_size",
            f"at most the number of training rows ({n}) for bootstrap sampling",
            cfg.batch_size,
        )
    chunked = chunk_epochs is not None
    if (resume is not None or n_epochs is not None or callbacks) and not chunked:
        raise validate.bad(
            "run",
            "chunk_epochs",
            "an int when resume, n_epochs or callbacks are given",
            chunk_epochs,
        )
    if chunked:
        chunk_epochs, n_epochs = _check_chunks(cfg, chunk_epochs, n_epochs)
    placement = placement or placement_for(m, chunked=chunked)
    if m > 1 and placement.batching == "single":
        raise validate.bad(
            "run",
            "placement",
            f"a Placement with batching 'vmap' or 'map' for "
            f"{m} models (batching='single' trains one)",
            placement,
        )
    dtype = data.x.dtype
    # Host-side (NumPy) until the executable takes them: no eager device operations.
    hp = Hparams(*(np.broadcast_to(np.asarray(v, dtype), (m,)) for v in hparams))
    pad = -m % placement.n_slots

    def padded(tree, xp=jnp):  # repeat the last model; its copies are dropped again
        return (
            tree
            if not pad or tree is None
            else jax.tree.map(
                lambda a: xp.concatenate([a, xp.repeat(xp.asarray(a)[-1:], pad, 0)]), tree
            )
        )

    def unpadded(tree):
        return tree if not pad or tree is None else jax.tree.map(lambda a: a[:m], tree)

    keys, hp = padded((keys, hp))
    if params is None and resume is None:
        # Initialize outside the compiled run: the same values, and threefry's hashing then
        # runs op by op (cached) instead of doubling the training program's compile time.
        if int(keys.shape[0]) == 1:  # eager vmap costs ~5 ms a call; one model needs none
            params = _with_model_axis(init(keys[0], spec, dtype=dtype))
        else:
            params = jax.vmap(lambda k: init(k, spec, dtype=dtype))(keys)
    elif params is not None:
        params = padded(jax.tree.map(lambda a: jnp.asarray(a, dtype), params))
    keys, hp, params = (_place(placement, t) for t in (keys, hp, params))
    if placement.data > 1:
        shared = _place_rows(placement, data)
    else:
        shared = _place(placement, data, shared=True)
    if chunked:
        if resume is not None:
            state = _place(placement, padded(jax.device_put(resume[0])))
            resume = (state, padded(jax.tree.map(np.asarray, resume[1]), np))

        def report(pr: Progress) -> None:
            pr = pr._replace(state=unpadded(pr.state), history=unpadded(pr.history))
            for callback in callbacks:
                callback(pr)

        result, timings, final = _run_chunks(
            spec, cfg, shared, hp, keys, params, resume, chunk_epochs, n_epochs, report, placement
        )
        final = (unpadded(final[0]), unpadded(final[1]))
    else:
        result, timings = _run_whole(spec, cfg, shared, hp, keys, params, placement)
        final = None
    result = unpadded(_fetchable(result))
    if check:
        check_finite(result, hparams)
    return Outcome(result, timings, final)


def _check_chunks(cfg: TrainConfig, chunk_epochs, n_epochs) -> tuple[int, int | None]:
    if not cfg.record_every:
        raise validate.bad(
            "run",
            "chunk_epochs",
            "None when cfg.record_every=0 (chunks end at record points)",
            chunk_epochs,
        )
    if (
        not validate.is_int(chunk_epochs)
        or chunk_epochs < 1
        or chunk_epochs % cfg.record_every
        or cfg.epochs % chunk_epochs
    ):
        raise validate.bad(
            "run",
            "chunk_epochs",
            "a positive multiple of record_every "
            f"({cfg.record_every}) that divides epochs ({cfg.epochs})",
            chunk_epochs,
        )
    if n_epochs is not None and (
        not validate.is_int(n_epochs) or n_epochs < 1 or n_epochs % chunk_epochs
    ):
        raise validate.bad(
            "run",
            "n_epochs",
            f"None or a positive multiple of chunk_epochs ({chunk_epochs})",
            n_epochs,
        )
    # Python ints: the chunk length is a static argument and part of the compile-cache key.
    return int(chunk_epochs), None if n_epochs is None else int(n_epochs)


def _run_whole(spec, cfg, data, hp, keys, params, placement: Placement):
    """The whole run in one executable (per host-thread part)."""
    total = int(keys.shape[0])
    size = total // placement.parts
    parts = [(keys, data, hp, params)]
    if placement.parts > 1:
        parts = [
            (
                keys[i : i + size],
                data,
                jax.tree.map(lambda a, i=i: a[i : i + size], hp),
                jax.tree.map(lambda a, i=i: a[i : i + size], params),
            )
            for i in range(0, total, size)
        ]
    wrap = _over_models(placement, 4)
    exe, compile_s = _compiled(
        ("train", spec, cfg, placement),
        lambda: wrap(make_train(spec, cfg)),
        parts[0],
        placement,
        _product_options(spec, cfg, placement),
    )
    t0 = time.perf_counter()
    if len(parts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        # XLA runs one execution's small operations one after another on one core: threads
        # are how the other cores get work on one CPU device.
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            outs = list(pool.map(lambda a: jax.block_until_ready(exe(*a)), parts))
        result = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    else:
        result = jax.block_until_ready(exe(*parts[0]))
    return result, Timings(compile_s, time.perf_counter() - t0)


def _run_chunks(
    spec,
    cfg,
    data,
    hp,
    keys,
    params,
    resume,
    chunk_epochs,
    n_epochs,
    report: Callable[[Progress], None],
    placement: Placement,
):
    """Equal compiled chunks of every model, with a report after each."""
    engine = make_engine(spec, cfg)
    compile_s = 0.0
    if resume is None:
        exe, c = _compiled(
            ("init", spec, cfg, placement),
            lambda: _over_models(placement, 4)(engine.init),
            (keys, data, hp, params),
            placement,
        )
        compile_s += c
        state, history = exe(keys, data, hp, params), None
    else:
        state, history = resume
    exe_run, c = _compiled(
        ("run", spec, cfg, chunk_epochs, placement),
        lambda: _over_models(placement, 4)(lambda s, d, h, k: engine.run(s, k, d, h, chunk_epochs)),
        (state, data, hp, keys),
        placement,
        _product_options(spec, cfg, placement),
    )
    compile_s += c
    exe_finish, c = _compiled(
        ("finish", spec, cfg, placement),
        lambda: _over_models(placement, 2)(lambda s, d: engine.finish(s, d, None)),
        (state, data),
        placement,
    )
    compile_s += c
    run_s = 0.0
    limit = None if n_epochs is None else int(np.asarray(state.epoch).max()) + n_epochs

    def finished(state) -> bool:
        epochs = np.asarray(state.epoch)
        # n_epochs more epochs may go past cfg.epochs (partial_fit keeps training).
        done = epochs >= (cfg.epochs if limit is None else limit)
        if cfg.patience is not None or cfg.optimizer == "lbfgs":
            done = done | np.asarray(state.stopped)
        return bool(np.all(done))

    while not finished(state):
        t0 = time.perf_counter()
        state, h = jax.block_until_ready(exe_run(state, data, hp, keys))
        run_s += time.perf_counter() - t0
        h = jax.tree.map(np.asarray, h)
        history = (
            h
            if history is None
            else jax.tree.map(lambda a, b: np.concatenate([a, b], axis=1), history, h)
        )
        report(
            Progress(
                int(np.asarray(state.epoch).max()),
                cfg.epochs,
                state,
                history,
                Timings(compile_s, run_s),
            )
        )
    if history is None:
        m = int(keys.shape[0])
        history = jax.tree.map(
            lambda a: np.broadcast_to(np.asarray(a), (m, *a.shape)),
            empty_history(data.y.shape[1], data.x.dtype),
        )
    t0 = time.perf_counter()
    result = jax.block_until_ready(exe_finish(state, data))
    run_s += time.perf_counter() - t0
    return result._replace(history=history), Timings(compile_s, run_s), (state, history)


# ---------------------------------------------------------------- streamed tables


def run_stream(
    spec: MLPSpec,
    cfg: TrainConfig,
    stream,
    hparams: Hparams,
    keys,
    transform: Callable,
    *,
    params=None,
    resume: tuple[TrainState, History] | None = None,
    callbacks: Sequence[Callable[[Progress], None]] = (),
    chunk_steps: int = 64,
    check: bool = True,
) -> Outcome:
    """Train ``M = len(keys)`` models on a table streamed from disk (a
    ``jaxreg.stream.TableStream``): the host reads and shuffles (``stream.batches``), a
    thread prepares the next chunk of ``chunk_steps`` minibatches and puts it on the device
    while the current one trains, and the compiled pieces of ``jaxreg.engine`` run the
    steps, record points and stopping rules as ``run`` does. ``transform(values)`` turns a
    block of raw rows into standardized float32 ``(x, y)``.

    The epoch's order comes from model 0's key (every model sees the same minibatches):
    the engine's own order when the shuffle buffer holds every training row (so the run
    equals ``run`` on those rows in memory), else NumPy permutations of the row groups and
    of each buffer, seeded by the epoch's key. ``callbacks`` get a ``Progress`` after each
    record point's epochs; ``resume`` continues from one.

    Several processes (``jax.distributed``): each reads only its share of the row groups
    (``stream.process_index``/``process_count``; scanned with ``gather_processes``), every
    global minibatch is the processes' local ones side by side, laid over a ``data`` axis of
    all devices (data-parallel, the gradients summed by XLA), and the statistics, held-out
    and sample rows and final metrics are combined across processes.
    """
    import queue
    import threading

    from jaxreg.engine import epoch_order, make_stream_engine, sampling_key

    eng = make_stream_engine(spec, cfg)
    check_hparams(hparams)
    if cfg.sampling != "shuffle" or cfg.optimizer == "lbfgs":
        raise validate.bad(
            "run_stream",
            "cfg",
            "minibatch training with sampling='shuffle' (a streamed table is read in order)",
            f"sampling={cfg.sampling!r}, optimizer={cfg.optimizer!r}",
        )
    keys = jnp.asarray(keys)
    m = int(keys.shape[0])
    stats = stream.scan()
    assert cfg.batch_size is not None  # a shuffle config has one
    n_train, batch = stats.n_train, int(cfg.batch_size)
    every = cfg.record_every or cfg.epochs
    dtype = np.float32
    multi = jax.process_count() > 1
    if multi:
        placement = placement_for(m, data_axis=0)
        n_dev, n_local = jax.device_count(), jax.local_device_count()
        if batch * n_local % n_dev:
            raise validate.bad(
                "TrainConfig",
                "batch_size",
                f"a multiple of {n_dev // n_local} (the processes) when streaming over them",
                batch,
            )
        local_batch = batch * n_local // n_dev
        shares = gather_processes(np.array([stats.n_train_local, len(stats.x_val)]))
        steps_per_epoch = int(max(-(-int(c) // local_batch) for c in shares[:, 0]))
        has_val = bool(shares[:, 1].sum())
    else:
        placement = Placement() if m == 1 else Placement("vmap")
        local_batch = batch
        steps_per_epoch = -(-n_train // batch)
        has_val = len(stats.x_val) > 0
    n_chunks = -(-steps_per_epoch // chunk_steps)

    def rows(x, y):
        values = np.concatenate([x, y], axis=1)
        return transform(values) if len(values) else (x.astype(dtype), y.astype(dtype))

    xs, ys = rows(stats.x_sample, stats.y_sample)
    xv, yv = rows(stats.x_val, stats.y_val)
    if multi:
        sample = _global_sample(placement, xs, ys, xv, yv, has_val)
    else:
        sample = Dataset(
            jnp.asarray(xs),
            jnp.asarray(ys),
            jnp.asarray(xv) if has_val else None,
            jnp.asarray(yv) if has_val else None,
            jnp.ones((len(xs),), dtype),
        )
    hp = Hparams(*(np.broadcast_to(np.asarray(v, dtype), (m,)) for v in hparams))
    compile_s = 0.0

    def compiled(name, fn, arity, args):
        nonlocal compile_s
        exe, c = _compiled(
            (name, spec, cfg, placement),
            lambda: _over_models(placement, arity)(fn),
            args,
            placement,
            _product_options(spec, cfg, placement) if name == "stream-steps" else (),
        )
        compile_s += c
        return exe

    if resume is None:
        if params is None:
            params = jax.vmap(lambda k: init(k, spec, dtype=dtype))(keys)
        keys, hp, params = (_place(placement, t) for t in (keys, hp, params))
        init_exe = compiled(
            "stream-init",
            eng.init,
            4,
            (keys, sample, hp, params),
        )
        state = init_exe(keys, sample, hp, params)
        history: list = []
    else:
        state = _place(placement, jax.device_put(resume[0]))
        hp = _place(placement, hp)
        old = jax.tree.map(np.asarray, resume[1])
        history = [jax.tree.map(lambda a, i=i: a[:, i], old) for i in range(old.epoch.shape[1])]
    record = compiled("stream-record", eng.record, 2, (state, sample))
    d, k = len(stream.feature_names), len(stream.targets)
    mesh = placement.mesh if multi else None

    def put(xb, yb, wb, active):
        return _device_chunk(xb, yb, wb, chunk_steps, active, steps_per_epoch, local_batch, mesh)

    empty = (
        [np.zeros((local_batch, d), dtype)],
        [np.zeros((local_batch, k), dtype)],
        [np.zeros(local_batch, dtype)],
    )
    steps = compiled("stream-steps", eng.steps, 3, (state, put(*empty, 0), hp))
    done = compiled(
        "stream-done",
        eng.epochs_done,
        3,
        (state, None, np.zeros((m, every), dtype)),
    )
    skey = sampling_key(keys[0])

    def chunks(ekey):
        """The epoch's minibatches in chunks, prepared on a thread and put on the device."""
        bits = [int(b) for b in np.asarray(jax.random.key_data(ekey)).reshape(-1)]

        def order(count: int, i: int) -> np.ndarray:
            if i == 0 and stats.n_train_local <= stream.buffer_rows:
                return np.asarray(epoch_order(ekey, count))
            return np.random.default_rng(np.random.SeedSequence([*bits, i + 1])).permutation(count)

        out: queue.Queue = queue.Queue(maxsize=2)

        def produce():
            # Every process hands over the same number of chunks (its share may run out
            # first: then its part of a global batch is zero-weight padding).
            try:
                c = 0
                xb, yb, wb = [], [], []
                for x, y, w in stream.batches(local_batch, order, transform):
                    xb.append(x)
                    yb.append(y)
                    wb.append(w)
                    if len(xb) == chunk_steps:
                        out.put(
                            put(xb, yb, wb, min(chunk_steps, steps_per_epoch - c * chunk_steps))
                        )
                        c += 1
                        xb, yb, wb = [], [], []
                while c < n_chunks:
                    out.put(
                        put(
                            xb or empty[0],
                            yb or empty[1],
                            wb or empty[2],
                            min(chunk_steps, steps_per_epoch - c * chunk_steps),
                        )
                    )
                    c += 1
                    xb, yb, wb = [], [], []
                out.put(None)
            except BaseException as exc:  # handed to the training thread
                out.put(exc)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        while True:
            item = out.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()

    run_s = 0.0
    epoch = int(np.asarray(state.epoch).max())
    while epoch < cfg.epochs and not bool(np.all(np.asarray(state.stopped))):
        t0 = time.perf_counter()
        state, (train_k, val_k) = record(state, sample)
        if bool(np.all(np.asarray(state.stopped))):
            break
        losses = []
        for e in range(epoch, epoch + every):
            total = jnp.zeros((m,), dtype)
            for c in chunks(jax.random.fold_in(skey, e)):
                state, loss = steps(state, c, hp)
                total = total + loss
            losses.append(total / steps_per_epoch)
        epoch0 = np.asarray(state.epoch)
        state, loss = done(state, None, jnp.stack(losses, axis=1))
        jax.block_until_ready(state)
        run_s += time.perf_counter() - t0
        epoch += every
        history.append(History(epoch0, np.asarray(train_k), np.asarray(val_k), np.asarray(loss)))
        progress_history = _stack_history(history, m, len(stream.targets))
        for callback in callbacks:
            callback(
                Progress(epoch, cfg.epochs, state, progress_history, Timings(compile_s, run_s))
            )
    t0 = time.perf_counter()
    finish = compiled("stream-finish", eng.finish, 2, (state, sample))
    state, best_t, best_epoch = finish(state, sample)
    if multi:  # each process over its own rows, on its own device; then summed
        local_best = jax.tree.map(np.asarray, best_t)
        local_sse = jax.jit(jax.vmap(eng.sse, in_axes=(0, None)))

        def sse_of(x, y, w):
            return np.asarray(local_sse(local_best, (x, y, w)), np.float64)
    else:

        def sse_of(x, y, w):
            exe = compiled("stream-sse", eng.sse, 2, (best_t, (x, y, w)))
            return np.asarray(exe(best_t, (x, y, w)), np.float64)

    # The final training MSE over the history's rows (every stride-th training row), as
    # TrainResult documents and run() does for a table in memory: a pass over every training
    # row would read the whole file again (14 s of a 45 s one-epoch fit of 48M rows).
    train_sse = sse_of(jnp.asarray(xs), jnp.asarray(ys), jnp.ones((len(xs),), dtype))
    n_sample = len(xs)
    val_sse = np.zeros((m, k))
    if len(xv):
        val_sse = sse_of(jnp.asarray(xv), jnp.asarray(yv), jnp.ones((len(xv),), dtype))
    n_val = len(xv)
    if multi:
        train_sse = gather_processes(train_sse).sum(axis=0)
        val_sse = gather_processes(val_sse).sum(axis=0)
        n_sample = int(gather_processes(np.array([n_sample])).sum())
        n_val = int(shares[:, 1].sum())
    train_mse = (train_sse / n_sample).astype(dtype)
    val_mse = val_sse / n_val if has_val else np.full((m, k), np.nan)
    run_s += time.perf_counter() - t0
    hist = _stack_history(history, m, k)
    lanes = jax.vmap(from_lanes)
    result = TrainResult(
        lanes(state.params),
        lanes(best_t),
        best_epoch,
        state.epoch,
        hist,
        jnp.asarray(train_mse),
        jnp.asarray(val_mse, dtype),
        state.stopped,
    )
    if check:
        check_finite(result, hparams)
    return Outcome(result, Timings(compile_s, run_s), (state, hist))


def _device_chunk(xb, yb, wb, size: int, active: int, steps_per_epoch: int, rows: int, mesh):
    """``size`` minibatches of ``rows`` rows stacked and put on the device (the missing
    ones zero; ``active`` of them are run). With a ``mesh`` (several processes), each
    process's minibatches are its part of global ones laid over the mesh's data axis."""
    x, y, w = np.stack(xb), np.stack(yb), np.stack(wb)
    n = len(xb)
    if n < size:
        x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros((size - n, *y.shape[1:]), y.dtype)])
        w = np.concatenate([w, np.zeros((size - n, *w.shape[1:]), w.dtype)])
    scalars = (np.int32(active), np.int32(steps_per_epoch))
    if mesh is None:
        return jax.device_put((x, y, w, *scalars))
    from jax.sharding import NamedSharding, PartitionSpec

    lay = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    total = rows * jax.device_count() // jax.local_device_count()
    arrays = tuple(
        jax.make_array_from_process_local_data(lay, a, (size, total, *a.shape[2:]))
        for a in (x, y, w)
    )
    return (*arrays, *_global(scalars, NamedSharding(mesh, PartitionSpec())))


def gather_processes(a) -> np.ndarray:
    """Every process's ``a`` stacked (process order), on every process; in one process,
    ``a`` with a leading axis of 1."""
    a = np.asarray(a)
    if jax.process_count() == 1:
        return a[None]
    from jax.experimental import multihost_utils

    # 64-bit values travel as pairs of 32-bit words: JAX without x64 would round them.
    wide = a.dtype.itemsize == 8
    raw = np.ascontiguousarray(a.reshape(-1)).view(np.uint32) if wide else a
    out = np.asarray(multihost_utils.process_allgather(raw))
    if wide:
        out = np.ascontiguousarray(out).view(a.dtype).reshape(out.shape[0], *a.shape)
    return out


def gather_rows(a, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Every process's rows of ``a`` (``(n_i, ...)``; the counts may differ) concatenated
    in process order, on every process; in one process, ``a``. ``gather`` stacks every
    process's array (default ``gather_processes``)."""
    a = np.asarray(a)
    if gather is None:
        if jax.process_count() == 1:
            return a
        gather = gather_processes
    counts = np.asarray(gather(np.array([len(a)], np.int64))).reshape(-1)
    if counts.max() == 0:
        return a
    padded = np.zeros((int(counts.max()), *a.shape[1:]), a.dtype)
    padded[: len(a)] = a
    every = np.asarray(gather(padded))
    return np.concatenate([every[i, : int(c)] for i, c in enumerate(counts)])


def _global_sample(placement: Placement, xs, ys, xv, yv, has_val: bool) -> Dataset:
    """The processes' sample and held-out rows as global arrays over the data axis: each
    process's rows padded (weight 0) to the largest share, rounded to its devices."""
    from jax.sharding import NamedSharding, PartitionSpec

    lay = NamedSharding(placement.mesh, PartitionSpec(DATA_AXIS))
    n_local, n_dev = jax.local_device_count(), jax.device_count()
    counts = gather_processes(np.array([len(xs), len(xv)]))

    def spread(x, y, most):
        size = max(1, -(-int(most) // n_local)) * n_local
        w = pad_rows(np.ones(len(x), np.float32), size)
        total = size * n_dev // n_local
        return tuple(
            jax.make_array_from_process_local_data(lay, pad_rows(a, size), (total, *a.shape[1:]))
            for a in (x, y, w)
        )

    x, y, w = spread(xs, ys, counts[:, 0].max())
    if not has_val:
        return Dataset(x, y, None, None, w)
    x_val, y_val, w_val = spread(xv, yv, counts[:, 1].max())
    return Dataset(x, y, x_val, y_val, w, None, w_val)


def _stack_history(history: list, m: int, k: int) -> History:
    """Record points (each with the model axis) as one ``History`` of ``(M, R, ...)``."""
    if not history:
        return History(
            np.zeros((m, 0), np.int32),
            np.zeros((m, 0, k), np.float32),
            np.zeros((m, 0, k), np.float32),
            np.zeros((m, 0), np.float32),
        )
    return History(
        *(np.stack([np.asarray(getattr(h, f)) for h in history], axis=1) for f in History._fields)
    )


def check_finite(result: TrainResult, hparams: Hparams | None = None, unit: str = "epoch") -> None:
    """Raise ``TrainingDivergedError`` (scikit-learn's message, then a hint) if a result
    holds non-finite values.

    ``result`` may hold one model or a leading model axis; the message names the first
    diverged model, the first recorded ``unit`` (epoch or step) whose loss was not finite,
    and that model's learning rate.
    """
    batched = np.ndim(result.epochs_run) > 0
    leaves = jax.tree.leaves(result.params) + [result.train_mse]

    def finite(x):
        x = np.asarray(x)
        return (
            np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
            if batched
            else np.array([np.isfinite(x).all()])
        )

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
        "penalty."
    )


def state_template(spec: MLPSpec, cfg: TrainConfig, data: Dataset, hparams: Hparams, m: int):
    """``(state, history)`` of a run of ``m`` models as ``jax.ShapeDtypeStruct`` trees (the
    model axis first; the history with no record points), computing nothing: what a saved
    state must match to be resumed."""
    hp = Hparams(*(jnp.asarray(v, data.x.dtype) for v in hparams))
    one = jax.eval_shape(make_engine(spec, cfg).init, jax.random.PRNGKey(0), data, hp)

    def with_axis(t):
        return jax.ShapeDtypeStruct((m, *t.shape), t.dtype)

    history = empty_history(data.y.shape[1], data.x.dtype)
    return (jax.tree.map(with_axis, one), jax.tree.map(with_axis, history))


# ---------------------------------------------------------------- conveniences

# One dispatch for a whole tree instead of one eager slice per leaf (a host cost per call).
_with_model_axis = jax.jit(lambda tree: jax.tree.map(lambda a: a[None], tree))
_first_model = jax.jit(lambda tree: jax.tree.map(lambda a: a[0], tree))


def as_key(key):
    """A PRNG key from a key or an int seed (None is 0)."""
    if key is None:
        key = 0
    if isinstance(key, int | np.integer):
        return jax.random.PRNGKey(int(key))
    return key


def fit(
    spec: MLPSpec,
    cfg: TrainConfig,
    data: Dataset,
    hparams: Hparams = Hparams(),
    key=None,
    params=None,
    check: bool = True,
    *,
    chunk_epochs: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    resume: tuple[TrainState, History] | None = None,
    return_timings: bool = False,
):
    """Train one model: ``run`` with ``M = 1``, the model axis taken off again.

    ``key`` is a PRNG key or an int seed (default 0); ``params`` has no model axis;
    ``callback`` receives ``Progress`` with the axis (length 1, as ``run``'s callbacks), and
    ``resume`` takes its ``(state, history)`` as they are.
    Returns the ``TrainResult``, or ``(result, timings)`` with ``return_timings=True``.
    """

    def axis(tree):
        return None if tree is None else jax.tree.map(lambda a: jnp.asarray(a)[None], tree)

    out = run(
        spec,
        cfg,
        data,
        hparams,
        as_key(key)[None],
        params=axis(params),
        resume=resume,
        chunk_epochs=chunk_epochs,
        callbacks=() if callback is None else (callback,),
        check=check,
    )
    result = _first_model(out.result)
    return (result, out.timings) if return_timings else result


def fit_many(
    spec: MLPSpec,
    cfg: TrainConfig,
    data: Dataset,
    hparams: Hparams = Hparams(),
    keys=None,
    n_models: int | None = None,
    check: bool = True,
    devices=None,
    threads: int | None = None,
    batching: str | None = None,
    *,
    data_axis: int | None = None,
    params=None,
    chunk_epochs: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    resume: tuple[TrainState, History] | None = None,
    return_timings: bool = False,
):
    """Train ``M`` models of one architecture: ``run`` with keys from seeds or keys.

    ``keys``: ``M`` PRNG keys (an ``(M, 2)`` array) or a list of int seeds; ``n_models``
    gives seeds ``0..M-1``. ``devices``, ``threads``, ``batching`` and ``data_axis`` (a data
    axis of that many devices, 0 all: data-parallel training) choose the placement
    (``placement_for``). Returns the ``TrainResult`` (model axis first), or
    ``(result, timings)`` with ``return_timings=True``.
    """
    if keys is None:
        if n_models is None or not validate.is_int(n_models) or n_models < 1:
            raise validate.bad(
                "fit_many", "n_models", "an int in [1, inf) when keys is None", n_models
            )
        keys = list(range(int(n_models)))
    if isinstance(keys, list | tuple | range):
        if not keys:
            raise validate.bad(
                "fit_many",
                "keys",
                "None, a non-empty list of int seeds or an (M, 2) array of PRNG keys",
                keys,
            )
        keys = jnp.stack([as_key(int(k)) for k in keys])
    m = int(np.shape(keys)[0])
    placement = placement_for(
        m,
        devices=devices,
        threads=threads,
        batching=batching,
        chunked=chunk_epochs is not None,
        data_axis=data_axis,
    )
    out = run(
        spec,
        cfg,
        data,
        hparams,
        keys,
        params=params,
        resume=resume,
        chunk_epochs=chunk_epochs,
        callbacks=() if callback is None else (callback,),
        placement=placement,
        check=check,
    )
    return (out.result, out.timings) if return_timings else out.result
