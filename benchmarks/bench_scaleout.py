"""Data-parallel training measured: one model on one device, on a data axis of several
devices of one process, and over several processes (``jax.distributed``, gloo on CPU).

Workload (the large-data workload of ``bench_bigdata.py``): ``--rows`` rows x 8 features,
``y = sum(sin(x_i)) + 0.1 N(0, 1)``, ``jaxreg.MLPRegressor(hidden_layer_sizes=(64, 64),
activation="tanh", learning_rate=1e-3, batch_size=B, epochs=1, tol=None, random_state=0)``,
one epoch a fit. Every configuration runs in its own child process(es) with
``JAX_NUM_CPU_DEVICES`` set (JAX reads the device count when it starts); a warm-up fit
compiles, then ``--repeats`` fits are timed by the estimator's ``run_seconds_`` (the
device loop, compile time apart). The last column is the validation MSE of the final fit,
so that every row is the same computation.

    python benchmarks/bench_scaleout.py                 # the table on this machine
    python benchmarks/bench_scaleout.py --batch 8192    # larger steps split better
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time, warnings
import numpy as np
import jax
rows, batch, repeats, port, pid, nproc, dp = (int(a) if a.isdigit() else a for a in sys.argv[1:8])
if nproc > 1:
    from jaxreg.runtime import start_distributed
    start_distributed(f"127.0.0.1:{port}", nproc, pid)
from sklearn.exceptions import ConvergenceWarning
import jaxreg
warnings.simplefilter("ignore", ConvergenceWarning)
rng = np.random.default_rng(0)
x = rng.normal(size=(rows + 50_000, 8)).astype(np.float32)
y = np.sin(x).sum(1) + 0.1 * rng.normal(size=rows + 50_000).astype(np.float32)
est = jaxreg.MLPRegressor(hidden_layer_sizes=(64, 64), activation="tanh", learning_rate=1e-3,
                          batch_size=batch, epochs=1, tol=None, random_state=0,
                          data_parallel=dp == "dp")
t0 = time.perf_counter()
est.fit(x[:rows], y[:rows])
first = time.perf_counter() - t0
compile_s = est.compile_seconds_
runs, walls = [], []
for _ in range(repeats):
    t0 = time.perf_counter()
    est.fit(x[:rows], y[:rows])
    walls.append(time.perf_counter() - t0)
    runs.append(est.run_seconds_)
mse = float(np.mean((est.predict(x[rows:]) - y[rows:]) ** 2))
print(json.dumps({"devices": jax.device_count(), "processes": jax.process_count(),
                  "compile_s": compile_s, "first_s": first, "runs": runs, "walls": walls,
                  "val_mse": mse}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    return env


def run_config(rows, batch, repeats, devices, processes, dp, timeout) -> dict:
    port = str(_free_port())
    cmds = [
        [
            sys.executable,
            "-c",
            CHILD,
            str(rows),
            str(batch),
            str(repeats),
            port,
            str(i),
            str(processes),
            "dp" if dp else "one",
        ]
        for i in range(processes)
    ]
    procs = [
        subprocess.Popen(
            c, env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in cmds
    ]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        err = next(o[1] for p, o in zip(procs, outs, strict=True) if p.returncode)
        return {"error": err.strip().splitlines()[-1] if err.strip() else "failed"}
    return json.loads(outs[0][0].strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", help="markdown file to write")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    probe = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.devices()[0].platform, jax.device_count())"],
        capture_output=True,
        text=True,
    ).stdout.split()
    platform_name, count = (probe[0], int(probe[1])) if len(probe) == 2 else ("cpu", 1)
    if platform_name == "cpu":
        configs = [  # label, CPU devices per process, processes, data-parallel
            ("one device", 1, 1, False),
            (f"data axis of {cores} devices, one process", cores, 1, True),
            (f"{cores} processes of one device (gloo)", 1, cores, True),
        ]
    else:  # accelerators: JAX_NUM_CPU_DEVICES changes nothing; one process
        configs = [
            ("one device", 1, 1, False),
            (f"data axis of the {count} {platform_name} device(s)", 1, 1, True),
        ]
    lines = [
        f"# Data-parallel training, {time.strftime('%Y-%m-%d')}",
        "",
        f"{platform_name}: {platform.processor() or platform.machine()}, {cores} cores; "
        f"{args.rows:,} rows x 8, "
        f"8-64-64-1 tanh, Adam, batch {args.batch}, one epoch; median of {args.repeats}.",
        "",
        "| placement | devices | samples/s (M) | vs one device | compile s | val MSE |",
        "|---|---|---|---|---|---|",
    ]
    base = None
    for label, devices, processes, dp in configs:
        r = run_config(args.rows, args.batch, args.repeats, devices, processes, dp, args.timeout)
        if "error" in r:
            lines.append(f"| {label} | - | failed: {r['error'][:80]} | | | |")
            continue
        rate = args.rows / statistics.median(r["runs"]) / 1e6
        base = base or rate
        lines.append(
            f"| {label} | {r['devices']} in {r['processes']} | {rate:.2f} | "
            f"{rate / base:.2f}x | {r['compile_s']:.2f} | {r['val_mse']:.5f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
