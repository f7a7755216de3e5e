"""jaxreg against its peers (issue 15): the same workloads, data and initial weights in
Keras 3, PyTorch, Flax NNX, Equinox, scikit-learn and skorch, in one run, one table.

    pip install -e ".[bench]"
    python benchmarks/peers/run.py            # full: about 30-40 minutes on 2 cores
    python benchmarks/peers/run.py --quick    # a few minutes

Workloads (``--workloads``):

- ``lecture``: the lecture's 1-10-10-10-1 tanh MLP on its 400 points, He-normal weights
  from ``PRNGKey(1234)`` with biases one (``jaxreg.init``, given to every library as NumPy
  arrays), 4000 full-batch epochs of GD and of Adam, learning rate 1e-3.
- ``ensemble``: M = 64 and 512 lecture models (GD; weights from seeds 0..M-1, what
  ``jaxreg.fit_many`` draws): ``fit_many`` for jaxreg, ``jax.vmap`` for Flax NNX and
  Equinox, a Python loop for the others, stopped at ``--limit`` seconds (reported as
  skipped with what was measured; a larger M whose loop would clearly exceed the limit,
  from the measured smaller M, is not run and says so).
- ``bigdata``: one epoch of ``benchmarks/bench_bigdata.py``'s workload (its 1,000,000 rows,
  standardization and Glorot-uniform weights; 8-64-64-1 tanh, Adam 1e-3, batches of 1024).
- ``realdata``: ``benchmarks/bench_realdata.py``'s tables (its ``--quick`` subset: at most
  2,000 rows, 2 folds); every library trains jaxreg's default network ((32, 32) tanh) with
  Adam 1e-3, batches of 200, for 200 epochs, from the same Glorot-uniform weights, on the
  same standardized folds; R² on the held-out fold.

Rules: every library variant runs each workload in its own child process (``child.py``)
with a timeout; a cold run (compilation or first-call work included) and then up to
``--repeats`` warm runs, the median reported (``block_until_ready`` on JAX results); the
training and validation MSE of the final weights computed by one NumPy function for every
row; the CPU time other processes used while each child ran (``/proc/stat`` minus the
child's own). Writes ``benchmarks/peers/RESULTS.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

QUICK_TABLES = ("diabetes", "fair")


# ---------------------------------------------------------------- inputs


def write_inputs(args) -> None:
    """The lecture's data and initial weights (one model and the ensemble's), and
    bench_bigdata's rows, written once for every child."""
    import jax

    import jaxreg
    from jaxreg import MLPSpec

    os.makedirs(args.scratch, exist_ok=True)
    xt, yt, xv, yv = (np.asarray(a) for a in jaxreg.lecture_data())
    spec = MLPSpec(common.LECTURE_SIZES)
    d = {"xt": xt, "yt": yt, "xv": xv, "yv": yv}
    for i, layer in enumerate(jaxreg.init(jax.random.PRNGKey(common.LECTURE_SEED), spec)):
        d[f"W{i}"], d[f"b{i}"] = np.asarray(layer.W), np.asarray(layer.b).reshape(-1)
    m = max(args.models)
    keys = jax.numpy.stack([jax.random.PRNGKey(s) for s in range(m)])  # fit_many's seeds
    stacked = jax.vmap(lambda k: jaxreg.init(k, spec))(keys)
    for i, layer in enumerate(stacked):
        d[f"eW{i}"], d[f"eb{i}"] = np.asarray(layer.W), np.asarray(layer.b)[:, 0, :]
    np.savez(common.inputs_path(args.scratch, "lecture"), **d)
    if "bigdata" in args.workloads:
        common.add_benchmarks_to_path()
        import bench_bigdata

        big = bench_bigdata.make_data(args.rows, "normal", 0)
        np.savez(common.inputs_path(args.scratch, "bigdata"), **big)


# ---------------------------------------------------------------- children


def _cpu_busy_seconds() -> float:
    """All CPUs' non-idle time so far (``/proc/stat``: user, nice, system, irq, softirq)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_child(variant: str, workload: str, args) -> dict:
    """One child process; its payload plus wall time and the other processes' CPU use."""
    cmd = [
        sys.executable,
        os.path.join(HERE, "child.py"),
        "--variant",
        variant,
        "--workload",
        workload,
        "--scratch",
        args.scratch,
        "--repeats",
        str(args.repeats),
        "--limit",
        str(args.limit),
        "--models",
        *map(str, args.models),
        "--folds",
        str(args.folds),
        "--tables",
        *args.tables,
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # XLA's defaults
    env["KERAS_BACKEND"] = "jax"
    busy0, own0, load0, t0 = _cpu_busy_seconds(), _children_cpu(), os.getloadavg(), time.time()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.child_timeout
        )
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err, rc = f"timed out after {args.child_timeout:g} s", None
    wall = time.time() - t0
    busy, own = _cpu_busy_seconds() - busy0, _children_cpu() - own0
    payload = None
    for line in reversed(out.splitlines()):
        if line.startswith(common.JSON_MARK):
            payload = json.loads(line[len(common.JSON_MARK) :])
            break
    if payload is None:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        payload = {"error": tail if rc is None else f"exit {rc}: {tail}"[:300]}
    payload.update(
        variant=variant,
        workload=workload,
        wall_s=wall,
        child_cpu_s=own,
        other_cores=max(busy - own, 0.0) / wall if wall > 0 else 0.0,
        load_before=load0[0],
        load_after=os.getloadavg()[0],
    )
    return payload


# ---------------------------------------------------------------- the table


def _median(times):
    return statistics.median(times) if times else None


def _time_of(row) -> float | None:
    """A row's time: the warm median, else (no warm run) the cold run."""
    return _median(row.get("times") or []) or row.get("first_s")


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[dict], workload: str) -> list[str]:
    rows = [r for r in results if r["workload"] == workload]
    if not rows:
        return []
    real = workload == "realdata"
    if real:
        head = [
            "case",
            "library",
            "R² (mean ± std over folds)",
            "first fold s",
            "s / fold after the first (median)",
            "x jaxreg's time",
            "train MSE (standardized)",
        ]
    else:
        head = [
            "case",
            "library",
            "compile s",
            "cold run s",
            "warm run s (median, n)",
            "x jaxreg's time",
            "train MSE",
            "val MSE",
        ]
    head += ["other CPU (cores)", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cases: dict[str, dict] = {}  # case -> jaxreg's row (the reference)
    for r in rows:
        for row in r.get("rows", []):
            if r["variant"] == "jaxreg":
                cases[row["case"]] = row
    ref_val = {c: np.asarray(row.get("member_val") or []) for c, row in cases.items()}
    order = list(cases) or [None]
    for r in rows:  # cases only a peer has (none expected), after jaxreg's
        for row in r.get("rows", []):
            if row["case"] not in order:
                order.append(row["case"])
    for case in order:
        for r in rows:
            label = common.VARIANTS[r["variant"]][1]
            other = f"{r['other_cores']:.2f}"
            if "rows" not in r:
                why = (
                    f"not installed ({r['missing']})" if "missing" in r else f"failed: {r['error']}"
                )
                if case == order[0]:
                    cells = ["all", label] + ["-"] * (len(head) - 4) + [other, why]
                    lines.append("| " + " | ".join(cells) + " |")
                continue
            for row in r["rows"]:
                if row["case"] != case:
                    continue
                lines.append(
                    "| "
                    + " | ".join(
                        _cells(row, label, cases.get(case), real, other, ref_val.get(case))
                    )
                    + " |"
                )
    return lines


def _cells(row, label, ref, real: bool, other: str, ref_val) -> list[str]:
    t = _time_of(row)
    base = _time_of(ref) if ref else None
    notes = [row.get("note") or ""]
    if row.get("skipped"):
        notes.insert(0, f"**skipped**: {row['skipped']}")
        ratio = "-"
    else:
        ratio = f"{t / base:.2f}" if t and base else "-"
    if row.get("members") and ref_val is not None and len(ref_val):
        k = min(len(ref_val), len(row.get("member_val") or []))
        if k:
            diff = np.max(np.abs(np.asarray(row["member_val"][:k]) - ref_val[:k]))
            notes.append(f"{row['members']} models; max |Δ val MSE| vs jaxreg {diff:.1e}")
    times = row.get("times") or []
    note = "; ".join(n for n in notes if n)
    if real:
        r2 = np.asarray(row["r2"])
        return [
            row["case"],
            label,
            f"{r2.mean():.4f} ± {r2.std():.4f}",
            _f(row.get("first_s"), ".2f"),
            _f(_median(times), ".2f"),
            ratio,
            _f(row.get("train_mse"), ".5f"),
            other,
            note,
        ]
    warm = f"{_median(times):.3f} ({len(times)})" if times else "- (cold only)"
    if row.get("skipped"):
        warm = "-"
    return [
        row["case"],
        label,
        _f(row.get("compile_s"), ".2f"),
        _f(row.get("first_s"), ".3f"),
        warm,
        ratio,
        _f(row.get("train_mse"), ".6f"),
        _f(row.get("val_mse"), ".6f"),
        other,
        note,
    ]


def _lscpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
        return (
            f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs, "
            f"{info.get('Thread(s) per core', '?').strip()} thread(s) per core, "
            f"hypervisor {info.get('Hypervisor vendor', 'none').strip()}"
        )
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "?"


TITLES = {
    "lecture": "The lecture: 1-10-10-10-1 tanh, 400 points, 4000 full-batch epochs, lr 1e-3",
    "ensemble": "Ensembles of lecture models (GD, 4000 epochs; seeds 0..M-1)",
    "bigdata": "One epoch on bench_bigdata.py's rows (8-64-64-1 tanh, Adam 1e-3, batch 1024)",
    "realdata": "Real tables (bench_realdata.py): (32, 32) tanh, Adam 1e-3, batch 200, 200 epochs",
}


def report(results, args, started, load_start, versions) -> str:
    now = datetime.datetime.now()
    others = [r["other_cores"] * r["wall_s"] for r in results]
    walls = sum(r["wall_s"] for r in results)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    lines = [
        f"# jaxreg against its peers ({started:%Y-%m-%d})",
        "",
        f"- run: {started:%Y-%m-%d %H:%M} to {now:%H:%M} (local time); command: "
        f"`python benchmarks/peers/run.py {shlex.join(args.argv)}`".rstrip(),
        f"- hardware (lscpu): {_lscpu()}; {mem:.0f} GiB; no GPU (JAX platform cpu)",
        f"- libraries: Python {platform.python_version()}; " + "; ".join(sorted(versions)),
        f"- load: 1-minute load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end; other processes used "
        f"{sum(others) / walls if walls else 0:.2f} cores on average while the children ran "
        "(`/proc/stat` busy time minus the children's own CPU time; per row in `other CPU`)",
        f"- rules: each library variant and workload in its own process (XLA_FLAGS unset); "
        f"a cold run (compile or first call included), then up to {args.repeats} warm runs "
        f"within {args.limit:g} s per row, median; `x jaxreg's time` = the row's warm median "
        f"(its cold run when it has none) over the `jaxreg` row's; MSEs of the final weights "
        f"by one NumPy function (float64) for every row",
        "",
    ]
    for w in args.workloads:
        body = table(results, w)
        if body:
            lines += [f"## {TITLES[w]}", "", *body, ""]
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "Notes:",
    "",
    "- Same initial weights everywhere except `jaxreg MLPRegressor` (no parameter takes "
    "weights: it draws its own from random_state). Full-batch rows are deterministic, so "
    "equal MSEs mean the same computation; Keras's Adam adds epsilon to the uncorrected "
    "sqrt(v) (last digits differ).",
    "- scikit-learn minimizes half the MSE: its GD runs at learning rate 2e-3 and its Adam "
    "with epsilon 5e-9, which are the same updates.",
    "- Minibatch orders: Flax, Equinox and PyTorch rows share NumPy permutations; jaxreg, "
    "Keras, scikit-learn and skorch shuffle with their own generators, so their MSEs differ "
    "by the luck of the order.",
    "- Python-loop ensembles are stopped at the per-row limit and reported as skipped with "
    "the models they finished; no time is extrapolated into the table.",
    "- Real tables: a fold's time includes building and compiling (fold shapes differ, so "
    "JAX libraries without padding recompile in every fold).",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few minutes: smaller everything")
    p.add_argument("--workloads", default=",".join(common.WORKLOADS))
    p.add_argument("--variants", default=",".join(common.VARIANTS), help="comma separated")
    p.add_argument("--repeats", type=int, default=None, help="warm runs (default 3; quick 2)")
    p.add_argument("--limit", type=float, default=None, help="seconds per row (120; quick 30)")
    p.add_argument("--models", type=int, nargs="+", default=None, help="ensemble sizes")
    p.add_argument("--rows", type=int, default=None, help="bigdata rows (1M; quick 200k)")
    p.add_argument("--tables", default=None, help="real tables, comma separated")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--child-timeout", type=float, default=None, help="seconds per child")
    p.add_argument("--scratch", default="/tmp/jaxreg-peers")
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    q = args.quick
    args.repeats = args.repeats or (2 if q else 3)
    args.limit = args.limit or (30.0 if q else 120.0)
    args.models = args.models or ([64] if q else [64, 512])
    args.rows = args.rows or (200_000 if q else 1_000_000)
    common.add_benchmarks_to_path()
    args.tables = (
        args.tables.split(",") if args.tables else list(QUICK_TABLES if q else _all_tables())
    )
    args.child_timeout = args.child_timeout or (4 * args.limit + 300)
    args.workloads = [w for w in args.workloads.split(",") if w]
    variants = [v for v in args.variants.split(",") if v]
    for bad in set(args.workloads) - set(common.WORKLOADS):
        p.error(f"unknown workload {bad!r}")
    for bad in set(variants) - set(common.VARIANTS):
        p.error(f"unknown variant {bad!r}")
    if "jaxreg" not in variants:
        variants.insert(0, "jaxreg")  # every ratio's reference

    started, load_start = datetime.datetime.now(), os.getloadavg()[0]
    print(f"writing inputs to {args.scratch} ...", flush=True)
    write_inputs(args)
    results, versions = [], set()
    for workload in args.workloads:
        for variant in variants:
            if workload not in common.VARIANTS[variant][2]:
                continue
            print(f"{workload:9s} {variant:17s}", end=" ", flush=True)
            r = run_child(variant, workload, args)
            results.append(r)
            if r.get("versions"):
                versions.add(r["versions"])
            status = r.get("error") or (
                f"not installed ({r['missing']})" if "missing" in r else "ok"
            )
            print(
                f"{r['wall_s']:6.1f} s, other CPU {r['other_cores']:.2f} cores: {status}",
                flush=True,
            )
            with open(os.path.join(args.scratch, "results.json"), "w") as fh:
                json.dump(results, fh, indent=1)
            with open(args.out, "w") as fh:  # rewritten after every child: nothing lost
                fh.write(report(results, args, started, load_start, versions))
    text = report(results, args, started, load_start, versions)
    print("\n" + text)
    print(f"wrote {args.out}")
    return 0


def _all_tables():
    import bench_realdata

    return list(bench_realdata.DATASETS)


if __name__ == "__main__":
    sys.exit(main())
