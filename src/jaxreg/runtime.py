"""Process-wide JAX settings that only the CLI applies, for its own process (rank 0).

The library never calls this behind a user's back. A user who wants the same settings in
their own process calls ``configure_process`` first thing, before JAX runs anything
(XLA flags and the CPU device count are read when JAX's backend starts).
"""

from __future__ import annotations

import os
import pathlib

ENV_CACHE = "JAXREG_CACHE_DIR"


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jaxreg" / "xla"


def configure_process(
    *,
    compilation_cache: bool | str | os.PathLike = True,
    fast_cpu: bool = True,
    n_cpu_devices: int | None = None,
) -> dict:
    """Apply the CLI's process settings; returns what was set.

    Call it before JAX runs anything: the XLA options and the CPU device count are read
    when JAX's backend starts, so after that they are left alone (and not reported).

    Args:
      compilation_cache: True for JAX's persistent compilation cache in
        ``$JAXREG_CACHE_DIR`` or ``~/.cache/jaxreg/xla``; a path for another folder;
        False to disable it.
      fast_cpu: set XLA CPU options that suit small training loops (see
        benchmarks/README.md for what they measured).
      n_cpu_devices: expose this many CPU devices, so that ``jaxreg.fit_many`` (sweeps,
        ensembles) splits its model axis over them; ``cpu_cores()`` uses every core.
    """
    import jax

    done: dict = {}
    started = _backend_started()
    if compilation_cache:
        path = (
            pathlib.Path(compilation_cache)
            if not isinstance(compilation_cache, bool)
            else pathlib.Path(os.environ.get(ENV_CACHE) or default_cache_dir())
        )
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"The compilation cache folder {str(path)!r} cannot be used: {exc.strerror or exc}."
            ) from None
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        done["compilation_cache"] = str(path)
    if n_cpu_devices and not started:
        jax.config.update("jax_num_cpu_devices", int(n_cpu_devices))
        done["n_cpu_devices"] = int(n_cpu_devices)
    done["fast_cpu"] = bool(fast_cpu) and not started and _set_fast_cpu_flags()
    return done


def start_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict:
    """Join this process to a multi-process JAX run (``jax.distributed.initialize``); with
    no arguments JAX reads the cluster from the environment (SLURM, Open MPI, Kubernetes).
    CPU collectives go through gloo (``jax_cpu_collectives_implementation``), so CPU-only
    processes can reduce across hosts. Call it before JAX runs anything. Returns the
    process index and count."""
    import jax

    if jax.distributed.is_initialized():  # a second call (a command run from a script)
        index, count = jax.process_index(), jax.process_count()
        if (num_processes not in (None, count)) or (process_id not in (None, index)):
            raise ValueError(
                f"jax.distributed already runs as process {index} of {count}; it cannot "
                f"start again as process {process_id} of {num_processes}."
            )
        return {"process_index": index, "process_count": count}
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=DISTRIBUTED_TIMEOUT,
            heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
        )
    except (RuntimeError, ValueError) as exc:  # one line: where and why it failed
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"with coordinator {coordinator}" if coordinator else "from the environment"
        raise ValueError(f"jax.distributed could not start {where}: {text}") from None
    return {"process_index": jax.process_index(), "process_count": jax.process_count()}


# Seconds the processes wait for each other at start-up, and before a missing one (a crash,
# an error) ends the others.
DISTRIBUTED_TIMEOUT = 120
HEARTBEAT_SECONDS = 10


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # a JAX without it: assume started
        return True


# XLA CPU flags for small training loops (jax/jaxlib 0.10.2; measurements and reasons in
# benchmarks/README.md). Together they let XLA compile a whole small while loop (the epoch
# loop) into one native function instead of dispatching every operation of every epoch:
# - the small-while-loop pass hoists loops whose cost analysis stays under this many bytes
#   (default 1 kB, so an epoch loop never qualifies) into one kernel
#   (xla/service/cpu/small_while_loop_hoisting_pass.cc); the loop must contain no custom
#   fusion, hence:
# - no YNNPACK dot fusions (``kind=kCustom``; an empty list disables them);
# - dots inside that kernel use XLA's tiled LLVM IR GEMM, which needs single-threaded
#   Eigen and, for a sample axis longer than 128, the "force" option; without it they call
#   Eigen's runtime matmul, which costs about 4x more per epoch here.
FAST_CPU_XLA_FLAGS: tuple[str, ...] = (
    "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000,"
    "xla_force_enable_experimental_llvm_ir_gemm",
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_multi_thread_eigen=false",
)


# With the options above, the lane-blocked weight gradient of small layers
# (model._affine_small) runs fastest with 512-bit vectors where the CPU has them: the
# lecture's epoch 13.2 -> 11.5 us on a 2-core AVX-512 Xeon (benchmarks/README.md). LLVM takes
# the width as a preference, so it is set only where AVX-512 is present.
WIDE_VECTOR_FLAG = "--xla_cpu_prefer_vector_width=512"


def _has_avx512() -> bool:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # a NumPy without it: keep XLA's default width
        return False
    return bool(features.get("AVX512F"))


def small_loop_flags() -> bool:
    """Whether this process's XLA was started with ``FAST_CPU_XLA_FLAGS`` (by
    ``configure_process`` or by hand) on the CPU: the training engine then takes the
    gradients of small layers in the form that suits XLA's single-kernel loops."""
    flags = os.environ.get("XLA_FLAGS", "")
    if not all(f in flags for f in FAST_CPU_XLA_FLAGS):
        return False
    import jax

    return jax.default_backend() == "cpu"


def _set_fast_cpu_flags() -> bool:
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = [*FAST_CPU_XLA_FLAGS, *([WIDE_VECTOR_FLAG] if _has_avx512() else [])]
    extra = [f for f in wanted if f.split("=")[0] not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
    return True
