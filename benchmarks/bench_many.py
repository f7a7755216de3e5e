"""Time many small models at once: jaxreg's ``fit_many`` against a plain ``jax.vmap`` of
the lecture's own training function.

Workload (issue 5): M lecture models (1-10-10-10-1 tanh, He-normal weights from seeds
0..M-1, biases one), the lecture's 400 training points, 4000 full-batch GD epochs at
lr 1e-3, no history. Rows:

- **plain vmap**: ``jax.jit(jax.vmap(train_gd))`` of a faithful copy of the lecture's code
  (``benchmarks/bench_lecture.py``), XLA's default settings.
- **fit_many, 1 part**: jaxreg's engine vmapped over the model axis, one execution
  (``jaxreg.runner.run`` with ``Placement("vmap")``).
- **fit_many (default)**: ``placement_for(M)``, what ``fit_many`` picks: on a single CPU
  device, a ``lax.map`` of the one-model program on equal parts of the model axis, one
  host thread per core.
- the same in a fresh subprocess with the CLI's settings (``[CLI]``: XLA options from
  ``jaxreg.runtime.FAST_CPU_XLA_FLAGS`` and one CPU device per core, the model axis split
  over them), because XLA reads these once, when its backend starts.

Every row is compiled first (compile time reported apart), run once to warm up, then
timed with ``block_until_ready`` (median of the timed runs; jaxreg's rows report the
runner's ``Timings``: compile seconds of the first call, run seconds of each call).
Per-model validation MSE is compared with the plain vmap. Memory: XLA's memory analysis
of each executable (arguments, outputs, temporaries) and the peak resident set size of
each process.

    python benchmarks/bench_many.py              # M = 64 and 512 (about 10 minutes)
    python benchmarks/bench_many.py --quick      # M = 64 only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

EPOCHS = 4000
LR = 1e-3


def _timed(call, repeats: int) -> tuple[list[float], object]:
    import jax

    out = jax.block_until_ready(call())  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    return times, out


def _memory(exe) -> int | None:
    try:
        m = exe.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def _val_mse_lecture(theta, xv, yv, loss_fn):
    import jax

    return jax.vmap(loss_fn, in_axes=(0, None, None))(theta, xv, yv)


def run_rows(m: int, repeats: int, plain: bool, cli: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_lecture

    from jaxreg.data import Dataset, lecture_data
    from jaxreg.engine import TrainConfig
    from jaxreg.model import MLPSpec
    from jaxreg.optim import Hparams
    from jaxreg.runner import Placement, placement_for, run

    xt, yt, xv, yv = lecture_data()
    data = Dataset(xt, yt, xv, yv)
    spec = MLPSpec((1, 10, 10, 10, 1))
    cfg = TrainConfig(epochs=EPOCHS, optimizer="gd", record_every=0)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(m)])
    rows = []
    suffix = " [CLI]" if cli else ""

    if plain:
        fns, init_params, loss_fn, _ = bench_lecture._lecture_fns()
        theta = jax.vmap(init_params)(keys)
        t0 = time.perf_counter()
        exe = jax.jit(jax.vmap(fns["gd"], in_axes=(0, None, None))).lower(theta, xt, yt).compile()
        compile_s = time.perf_counter() - t0
        times, out = _timed(lambda: exe(theta, xt, yt), repeats)
        rows.append(
            {
                "name": "plain vmap of the lecture's train_gd" + suffix,
                "m": m,
                "compile_s": compile_s,
                "times": times,
                "mem": _memory(exe),
                "val": np.asarray(_val_mse_lecture(out, xv, yv, loss_fn)).tolist(),
            }
        )

    # Placements, explicit: what ``fit_many``'s options chose before (threads=1 on the first
    # device, vmap or map) and the library's default (``placement_for``).
    default = placement_for(m)
    if default.devices:
        default_name = f"shard_map over {len(default.devices)} CPU devices"
    else:
        default_name = f"{default.parts} threads"
    variants = [("fit_many, vmap, 1 part", Placement("vmap"))]
    if cli:
        variants.append(("fit_many, map, 1 device", Placement("map")))
    variants.append((f"fit_many (default): {default_name}", default))
    for name, placement in variants:
        hp = Hparams(LR)
        # Compile through the runner's own cache, then time the calls (compile reported
        # apart): ``Timings.run_seconds`` is the executable's calls (every part's thread)
        # and ``block_until_ready``.
        t0 = time.perf_counter()
        first = run(spec, cfg, data, hp, keys, placement=placement)
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            out = run(spec, cfg, data, hp, keys, placement=placement)
            times.append(out.timings.run_seconds)
        # The executable's memory for the models one call sees (one part, or all models),
        # built from the engine directly without shard_map (per device it is the same
        # program over fewer models).
        part = -(-m // placement.parts)
        exe = _models_executable(spec, cfg, data, keys[:part], placement.batching)
        rows.append(
            {
                "name": name + suffix,
                "m": m,
                "placement": repr(placement),
                "compile_s": first.timings.compile_seconds,
                "warm_call_s": warm_s,
                "times": times,
                "mem": _memory(exe),
                "val": np.asarray(out.result.val_mse[:, 0]).tolist(),
            }
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for r in rows:
        r["peak_rss"] = rss
    return rows


def _models_executable(spec, cfg, data, keys, batching: str):
    """``make_train`` over a model axis (``vmap``, or ``lax.map`` of the one-model program),
    compiled for ``len(keys)`` models: the program the runner runs for one part."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxreg.engine import make_train
    from jaxreg.model import init
    from jaxreg.optim import Hparams

    train = make_train(spec, cfg)
    n = int(keys.shape[0])
    hp = Hparams(*(jnp.full((n,), v, data.x.dtype) for v in Hparams(LR)))
    params = jax.vmap(lambda k: init(k, spec, dtype=data.x.dtype))(keys)
    if batching == "vmap":
        fn = jax.vmap(train, in_axes=(0, None, 0, 0))
    else:

        def fn(k, d, h, p):
            return lax.map(lambda a: train(a[0], d, a[1], a[2]), (k, h, p))

    return jax.jit(fn).lower(keys, data, hp, params).compile()


def _child(args) -> int:
    from jaxreg.runtime import configure_process

    done = configure_process(compilation_cache=False, fast_cpu=True, n_cpu_devices=os.cpu_count())
    rows = []
    for m in args.models:
        rows += run_rows(m, args.repeats_for(m), plain=False, cli=True)
    print(
        json.dumps({"configured": done, "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": rows})
    )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="M = 64 only")
    p.add_argument("--models", type=int, nargs="+", default=None, help="values of M")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs after the warm-up (default 3 for M <= 64, else 1)",
    )
    p.add_argument("--no-cli", action="store_true", help="skip the CLI-settings subprocess")
    p.add_argument("--json", metavar="PATH", help="also write all rows as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.models is None:
        args.models = [64] if args.quick else [64, 512]
    args.repeats_for = lambda m: args.repeats or (3 if m <= 64 else 1)
    if args.child:
        return _child(args)

    import jax
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_lecture import measure_peak, step_flops

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    peak, flops = measure_peak(), step_flops()
    print(
        f"float32 matmul peak (2048^3, median, all cores): {peak / 1e9:.1f} GFLOP/s; one "
        f"GD step {flops:,.0f} FLOP\n"
    )
    rows = []
    for m in args.models:
        rows += run_rows(m, args.repeats_for(m), plain=True, cli=False)
    if not args.no_cli:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "--models",
            *map(str, args.models),
        ]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        rows += child["rows"]
        print(f"[CLI] = XLA_FLAGS={child['xla_flags']!r}, {os.cpu_count()} CPU devices\n")

    head = (
        "M",
        "formulation",
        "compile s",
        "run s (med)",
        "ms/model",
        "x plain vmap",
        "% peak",
        "max |dval| vs plain",
        "XLA MiB",
        "peak RSS MiB",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for m in args.models:
        group = [r for r in rows if r["m"] == m]
        base = next(r for r in group if r["name"].startswith("plain vmap"))
        base_s = statistics.median(base["times"])
        for r in group:
            s = statistics.median(r["times"])
            diff = float(np.max(np.abs(np.asarray(r["val"]) - np.asarray(base["val"]))))
            mem = f"{r['mem'] / 2**20:.1f}" if r["mem"] else "-"
            print(
                f"| {m} | {r['name']} | {r['compile_s']:.2f} | {s:.2f} | "
                f"{1e3 * s / m:.1f} | {base_s / s:.2f} | "
                f"{100 * flops * EPOCHS * m / s / peak:.1f} | {diff:.1e} | {mem} | "
                f"{r['peak_rss'] / 2**20:.0f} |"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"peak_flops": peak, "step_flops": flops, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
