"""Time the lecture's workload: jaxreg against a faithful copy of the lecture's own code.

The workload: 1-10-10-10-1 tanh MLP, He-normal weights from ``PRNGKey(1234)``, biases one,
the lecture's 400 training points (``PRNGKey(14)``), 4000 full-batch epochs, lr 1e-3.

Run ``python benchmarks/bench_lecture.py`` (``--quick`` for a short run). The rows marked
``[CLI flags]`` run in a subprocess started with the options the ``jaxreg`` CLI sets for its
own process (``jaxreg.runtime.FAST_CPU_XLA_FLAGS``), because XLA reads its flags once, when
the backend starts; the others run in this process with XLA's default settings. Every
formulation in both processes is compiled first (compile time reported apart), then all of
them run in interleaved rounds (``block_until_ready`` each): a round runs every row once,
one after the other, this process's rows and then the subprocess's (this process waits for
its answer, so the two never run at the same time). Reported: the median of the rounds and
``best``, the fastest round (less disturbed by other processes). ``x lecture`` is the
lecture's code with default settings (same optimizer) over the row, by medians; ``x
paired`` the median over rounds of the same ratio within a round, which a machine that
slows down for a while (a neighbour on a shared host) disturbs less.

jaxreg's rows go through its public one-model path, ``jaxreg.runner.fit(...,
return_timings=True)``: ``compile s`` is the first call's ``Timings.compile_seconds``, the
run columns its ``Timings.run_seconds`` (the cached executable's call and
``block_until_ready``, nothing else), and ``call s`` the wall time of the whole ``fit``
call (initialization outside the executable, the model axis of length one, the finiteness
check: the runner's host-side work). The lecture's rows have no host-side work: their
``call s`` is their run time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

EPOCHS = 4000
LR = 1e-3


def _lecture_fns():
    """The lecture's code, as written there (lecture layout, ``jax.grad`` of the loss)."""
    from typing import NamedTuple

    import jax
    import jax.numpy as jnp
    import optax

    class LayerParams(NamedTuple):
        W: jnp.ndarray
        b: jnp.ndarray

    def initialize_network_params(key, layer_sizes=(1, 10, 10, 10, 1)):
        params = []
        for i in range(len(layer_sizes) - 1):
            key, subkey = jax.random.split(key)
            w = jax.random.normal(subkey, shape=(layer_sizes[i], layer_sizes[i + 1])) * jnp.sqrt(
                2 / layer_sizes[i]
            )
            params.append(LayerParams(w, jnp.ones((1, layer_sizes[i + 1]))))
        return params

    def f(theta, x, sigma=jnp.tanh):
        *hidden, last = theta
        for layer in hidden:
            x = sigma(x @ layer.W + layer.b)
        return x @ last.W + last.b

    def loss_fn(theta, x, y):
        return jnp.mean((f(theta, x) - y) ** 2)

    loss_gradient = jax.jit(jax.grad(loss_fn))

    def train_gd(theta, x, y):
        def update(_, theta):
            grad = loss_gradient(theta, x, y)
            return jax.tree.map(lambda p, g: p - LR * g, theta, grad)

        return jax.lax.fori_loop(0, EPOCHS, update, theta)

    def make_optax(solver):
        def train(theta, x, y):
            state = solver.init(theta)

            def update(_, carry):
                theta, state = carry
                grad = loss_gradient(theta, x, y)
                updates, state = solver.update(grad, state, theta)
                return optax.apply_updates(theta, updates), state

            return jax.lax.fori_loop(0, EPOCHS, update, (theta, state))[0]

        return train

    def one_step(theta, x, y):
        grad = jax.grad(loss_fn)(theta, x, y)
        return jax.tree.map(lambda p, g: p - LR * g, theta, grad)

    fns = {"gd": train_gd, "sgd": make_optax(optax.sgd(LR)), "adam": make_optax(optax.adam(LR))}
    return fns, initialize_network_params, loss_fn, one_step


def _compile(fn, *args):
    import jax

    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def measure_peak(n: int = 2048, runs: int = 7) -> float:
    """Float32 matmul FLOP/s of this process: median of ``runs`` jitted ``n x n`` products."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(mm(a, b))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(mm(a, b))
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)


def step_flops() -> float:
    """FLOPs of one full-batch GD step (forward, backward, update), XLA cost analysis."""
    import jax

    from jaxreg.data import lecture_data

    _, init_params, _, one_step = _lecture_fns()
    xt, yt, _, _ = lecture_data()
    theta = init_params(jax.random.PRNGKey(1234))
    cost = jax.jit(one_step).lower(theta, xt, yt).compile().cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0]
    return float(cost["flops"])


def build_rows(optimizers, records, lecture: bool = True) -> list[dict]:
    """Compile every formulation: one row each, with a ``round`` that times one run."""
    import jax

    from jaxreg.data import Dataset, lecture_data
    from jaxreg.engine import TrainConfig
    from jaxreg.model import MLPSpec
    from jaxreg.optim import Hparams
    from jaxreg.runner import fit

    xt, yt, xv, yv = lecture_data()
    data = Dataset(xt, yt, xv, yv)
    key = jax.random.PRNGKey(1234)
    hp = Hparams(LR)
    fns, init_params, loss_fn, _ = _lecture_fns()
    theta0 = init_params(key)

    def timed(call):
        """A round of a compiled executable: (run seconds, call seconds), both wall time."""

        def go():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            s = time.perf_counter() - t0
            return s, s

        return go

    rows = []  # dict(name, optimizer, round, compile_s, mse)
    if lecture:
        for opt in optimizers:
            exe, c = _compile(fns[opt], theta0, xt, yt)
            out = exe(theta0, xt, yt)
            rows.append(
                {
                    "name": f"lecture's code, {opt}",
                    "kind": "lecture",
                    "optimizer": opt,
                    "round": timed(lambda exe=exe: exe(theta0, xt, yt)),
                    "compile_s": c,
                    "train_mse": float(loss_fn(out, xt, yt)),
                    "val_mse": float(loss_fn(out, xv, yv)),
                }
            )
    spec = MLPSpec((1, 10, 10, 10, 1))
    for opt in optimizers:
        for rec in records:
            cfg = TrainConfig(epochs=EPOCHS, optimizer=opt, record_every=rec)

            def fit_round(cfg=cfg):
                # jaxreg's public one-model path: the runner's compiled executable (cached
                # after the first call), timed by the runner (``Timings.run_seconds``: the
                # call and ``block_until_ready``), beside the whole ``fit`` call's wall time
                # (initialization, the model axis, checks: the host-side work).
                t0 = time.perf_counter()
                res, tm = fit(spec, cfg, data, hp, key=key, return_timings=True)
                jax.block_until_ready(res)
                return tm.run_seconds, time.perf_counter() - t0

            out, tm = fit(spec, cfg, data, hp, key=key, return_timings=True)  # compiles
            label = f"record_every={rec}" if rec else "no history"
            rows.append(
                {
                    "name": f"jaxreg {opt}, {label}",
                    "kind": "jaxreg",
                    "optimizer": opt,
                    "record_every": rec,
                    "round": fit_round,
                    "compile_s": tm.compile_seconds,
                    "train_mse": float(out.train_mse[0]),
                    "val_mse": float(out.val_mse[0]),
                }
            )
    for row in rows:  # warm-up
        row["round"]()
    return rows


def time_rows(rows: list[dict], repeats: int) -> list[dict]:
    """Time the rows in interleaved rounds: every row once per round, ``repeats`` rounds.
    Each row gets its rounds' run seconds (``times``), their median (``run_s``), the
    fastest (``best_s``) and the median call seconds (``call_s``)."""
    for row in rows:
        row["times"], row["calls"] = [], []
    for _ in range(repeats):
        for row in rows:
            run_s, call_s = row["round"]()
            row["times"].append(run_s)
            row["calls"].append(call_s)
    for row in rows:
        row["run_s"] = statistics.median(row["times"])
        row["best_s"] = min(row["times"])
        row["call_s"] = statistics.median(row.pop("calls"))
        del row["round"]
    return rows


def _serve(rows: list[dict]) -> int:
    """The child's side of the paired rounds: print the rows (without their ``round``) as
    one JSON line, then run row ``i`` for every line ``i`` read from stdin and answer
    ``run_s call_s``, until stdin closes."""
    meta = [{k: v for k, v in r.items() if k != "round"} for r in rows]
    print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "rows": meta}), flush=True)
    for line in sys.stdin:
        run_s, call_s = rows[int(line)]["round"]()
        print(f"{run_s!r} {call_s!r}", flush=True)
    return 0


def _remote_rows(child: subprocess.Popen) -> tuple[list[dict], str]:
    """The child's rows, each with a ``round`` that has the child run it once (the parent
    waits, so the two processes never run at the same time)."""
    info = json.loads(child.stdout.readline())

    def remote(i):
        def go():
            child.stdin.write(f"{i}\n")
            child.stdin.flush()
            run_s, call_s = child.stdout.readline().split()
            return float(run_s), float(call_s)

        return go

    rows = []
    for i, r in enumerate(info["rows"]):
        rows.append({**r, "name": r["name"] + " [CLI flags]", "round": remote(i)})
    return rows, info["xla_flags"]


def _child(args) -> int:
    from jaxreg.runtime import configure_process

    configure_process(compilation_cache=False, fast_cpu=True)
    return _serve(build_rows(args.optimizers, args.records))


def _table(rows, lecture_s, flops, peak) -> str:
    head = (
        "formulation",
        "compile s",
        "run s (med)",
        "us/epoch",
        "best us/ep",
        "x lecture",
        "x paired",
        "% peak",
        "call s (med)",
        "train MSE",
        "val MSE",
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        per_epoch = r["run_s"] / EPOCHS
        ref = lecture_s.get(r["optimizer"])
        ratio = f"{ref / r['run_s']:.2f}" if ref else "-"
        pct = 100 * flops * EPOCHS / r["run_s"] / peak
        lines.append(
            " | ".join(
                [
                    r["name"],
                    f"{r['compile_s']:.2f}",
                    f"{r['run_s']:.4f}",
                    f"{per_epoch * 1e6:.1f}",
                    f"{r['best_s'] / EPOCHS * 1e6:.1f}",
                    ratio,
                    f"{r['paired_x']:.2f}" if "paired_x" in r else "-",
                    f"{pct:.1f}",
                    f"{r['call_s']:.4f}",
                    f"{r['train_mse']:.6f}",
                    f"{r['val_mse']:.6f}",
                ]
            )
        )
    return "\n".join("| " + ln + " |" for ln in lines)


FIGURES = {"gd": (0.039963, 0.042119), "sgd": (0.039963, 0.042119), "adam": (0.035879, 0.040869)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="fewer rounds, GD and Adam only (about a minute)"
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15; 5 quick)")
    p.add_argument("--no-flags", action="store_true", help="skip the CLI-flags subprocess")
    p.add_argument("--json", metavar="PATH", help="also write all rows as JSON")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--optimizers", nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--records", nargs="+", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 15
    if args.optimizers is None:
        args.optimizers = ["gd", "adam"] if args.quick else ["gd", "sgd", "adam"]
    if args.records is None:
        args.records = [0, 10]
    if args.child:
        return _child(args)

    import jax

    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    peak = measure_peak()
    flops = step_flops()
    print(
        f"float32 matmul peak (2048^3, median): {peak / 1e9:.1f} GFLOP/s; one GD step: "
        f"{flops:,.0f} FLOP (XLA cost analysis); a 4000-epoch run: "
        f"{flops * EPOCHS / 1e9:.2f} GFLOP = {flops * EPOCHS / peak * 1e3:.1f} ms at peak\n"
    )
    rows = build_rows(args.optimizers, args.records)
    # The reference of every ratio: the lecture's code with default settings (this process).
    lecture = {r["optimizer"]: r for r in rows if r["kind"] == "lecture"}
    child, xla_flags = None, None
    if not args.no_flags:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            "--optimizers",
            *args.optimizers,
            "--records",
            *map(str, args.records),
        ]
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        child = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        remote, xla_flags = _remote_rows(child)
        rows += remote
    try:
        time_rows(rows, args.repeats)
    finally:
        if child is not None:
            child.stdin.close()
            child.wait()
    lecture_s = {opt: r["run_s"] for opt, r in lecture.items()}
    for r in rows:  # the round-by-round ratio: both ran in the same round, one after the other
        ref = lecture.get(r["optimizer"])
        if ref is not None:
            r["paired_x"] = statistics.median(
                a / b for a, b in zip(ref["times"], r["times"], strict=True)
            )
    print(_table(rows, lecture_s, flops, peak))
    if xla_flags is not None:
        print(f"\n[CLI flags] = XLA_FLAGS={xla_flags!r}")
    bad = [
        r["name"]
        for r in rows
        if (round(r["train_mse"], 6), round(r["val_mse"], 6)) != FIGURES[r["optimizer"]]
    ]
    print(
        "\nLecture figures (GD/SGD 0.039963/0.042119, Adam 0.035879/0.040869): "
        + ("reproduced by every row." if not bad else f"NOT reproduced by {bad}")
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"peak_flops": peak, "step_flops": flops, "rows": rows}, fh, indent=1)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
