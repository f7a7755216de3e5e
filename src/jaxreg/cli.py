"""The ``jaxreg`` command line: parses arguments and delegates to ``jaxreg.apps``.

``main(argv) -> int`` so tests can call it. Importing this module must stay cheap (no JAX,
matplotlib or pandas) so that ``jaxreg --help`` answers at once; each command module adds
its parser with ``add_parser(subparsers)`` and runs with ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys

from jaxreg.apps.options import add_options

# command module names under jaxreg.apps, in the order --help lists them
COMMANDS = ("lecture", "sweepcmd", "demo", "fitcmd")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2 (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from jaxreg import __version__

    parser = _Parser(
        prog="jaxreg",
        description="Neural-network regression on JAX + Optax: fast, honest, practical.",
    )
    parser.add_argument("--version", action="version", version=f"jaxreg {__version__}")
    add_options(parser, "global")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"jaxreg.apps.{name}").add_parser(sub)
    return parser


def run() -> None:
    """The ``jaxreg`` console script and ``python -m jaxreg``: ``main()``, then the end of
    the process without the interpreter's teardown of every module and object (about
    0.6 s after a fit of a million rows; benchmarks/README.md). The ``atexit`` handlers
    still run and both streams are flushed first. A distributed run ends normally, so
    that JAX's coordination client shuts down in order, and so does a run under a profiler
    or tracer (``python -m cProfile``, a debugger), which writes its results after this.

    The cyclic garbage collector runs its youngest generation every 100,000 net
    allocations instead of CPython's 700: the imports leave some 250,000 long-lived objects
    (JAX, scikit-learn, pandas, matplotlib) that each full collection walked again, 0.5-0.7 s
    of a million-row fit, while the commands themselves make few reference cycles
    (benchmarks/README.md, "Start-up and garbage collection")."""
    gc.set_threshold(100_000, 20, 10)
    code = main()
    jax = sys.modules.get("jax")
    distributed = jax is not None and jax.distributed.is_initialized()
    if distributed or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
            code = code or 1
    os._exit(code)


def _one_line(exc: BaseException) -> str:
    """An error as one line: an OS error names the path and the system's reason."""
    if isinstance(exc, OSError) and exc.filename is not None:
        reason = exc.strerror or str(exc)
        return f"{reason}: {str(exc.filename)!r}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    # First, before JAX is imported: an interrupt must end the command with nothing replaced.
    from jaxreg import interrupts

    interrupts.install()
    command = "jaxreg"
    dist = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 0
        command = f"jaxreg {args.command}"
        # The scale-out options, checked before anything starts.
        dist = _distributed_args(args) if _wants_distributed(args) else None
        import warnings

        from jaxreg.runtime import configure_process, cpu_cores

        # Every numerical problem is checked and reported in words; NumPy's and JAX's
        # RuntimeWarnings would only repeat it on stderr.
        warnings.simplefilter("ignore", RuntimeWarning)
        # One CPU device per core: fit_many (sweeps, ensembles) splits its models over them.
        # The small-loop XLA options only where a command's steps are small (fit decides
        # from the rows, batch and widths it knows before JAX starts).
        small = getattr(args, "small_loop", None)
        configure_process(
            compilation_cache=False if args.no_cache else (args.cache_dir or True),
            fast_cpu=not args.default_xla and (small is None or small(args)),
            # JAX_NUM_CPU_DEVICES, when set, is the user's choice: JAX reads it itself.
            n_cpu_devices=(
                None if args.default_xla or os.environ.get("JAX_NUM_CPU_DEVICES") else cpu_cores()
            ),
        )
        if dist is not None:
            from jaxreg.runtime import start_distributed

            if start_distributed(*dist)["process_index"]:
                # Process 0 reports; the others print only warnings and errors (gloo's
                # own lines go to file descriptor 1).
                sys.stdout.flush()
                quiet = os.open(os.devnull, os.O_WRONLY)
                os.dup2(quiet, 1)
                os.close(quiet)
        interrupts.check()  # one that came while JAX was being imported
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(command)
    except (ValueError, OSError, FloatingPointError) as exc:
        if interrupts.seen():
            return _interrupted(command)
        # Bad input and failed writes are one line on stderr and exit code 2;
        # JAXREG_DEBUG=1 shows the traceback.
        if os.environ.get("JAXREG_DEBUG"):
            raise
        print(f"{command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        # An interrupt can surface as another error (an extension module interrupted while
        # it initializes raises ImportError).
        if interrupts.seen():
            return _interrupted(command)
        if dist is not None and type(exc).__name__ == "JaxRuntimeError":
            # A collective that another process of the run never joined (it failed or was
            # stopped): one line here too, and this process ends as well.
            print(
                f"{command}: error: another process of this distributed run failed or "
                f"stopped answering ({_one_line(exc)[:300]})",
                file=sys.stderr,
            )
            return 1
        raise


def _wants_distributed(args) -> bool:
    return any(
        getattr(args, name, None) not in (None, False)
        for name in ("coordinator", "num_processes", "process_id", "distributed")
    )


def _distributed_args(args) -> tuple:
    """``(coordinator, num_processes, process_id)`` of the scale-out options, checked; all
    None for ``--distributed`` (JAX reads the cluster)."""
    if args.distributed:
        if args.coordinator or args.num_processes is not None or args.process_id is not None:
            raise ValueError(
                "--distributed reads the processes from the cluster's environment; "
                "give it alone or give --coordinator, --num-processes and --process-id."
            )
        return None, None, None
    if not args.coordinator:
        raise ValueError(
            "--num-processes and --process-id go with --coordinator HOST:PORT "
            "(or use --distributed alone)."
        )
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--coordinator must be HOST:PORT with a port from 1 to 65535. "
            f"Got {args.coordinator!r} instead."
        )
    n, i = args.num_processes, args.process_id
    if n is None or n < 1:
        raise ValueError(
            f"--num-processes must be a positive int with --coordinator. Got {n} instead."
        )
    if i is None or not 0 <= i < n:
        raise ValueError(
            f"--process-id must be an int from 0 to {n - 1} with --num-processes {n}. "
            f"Got {i} instead."
        )
    return args.coordinator, n, i


def _interrupted(command: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting
    print(f"{command}: interrupted", file=sys.stderr)
    return 130
