"""Streaming a table larger than memory against training on one in memory, side by side.

Workload: ``--rows`` (default 60,000,000) rows x 8 float32 features, ``y = sum(sin(x_i)) +
0.1 N(0, 1)``, written once as Parquet in row groups of 1,000,000 rows (2.2 GB as float32);
``jaxreg.MLPRegressor(hidden_layer_sizes=(64, 64), batch_size=1024, epochs=1, tol=None,
random_state=0)``, one epoch. Rows:

- ``stream``: ``fit(TableStream(path, "y", ...))`` with the shuffle buffer, block and
  held-out rows that ``jaxreg fit --max-memory SIZE`` derives from ``--memory`` (default
  256MB), in a child process; the epoch's samples/s from the progress callback (the record
  point and the epoch, not the final evaluation pass), the whole fit's wall time, and the
  child's peak RSS (``getrusage``).
- ``memory``: the same estimator on the first ``--memory-rows`` (default 4,000,000) rows
  loaded into memory (NumPy), the same callback timing; its peak RSS for comparison.

    python benchmarks/bench_stream.py [--rows 60000000] [--memory 256MB] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np
mode, path, rows, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from sklearn.exceptions import ConvergenceWarning
import jaxreg
warnings.simplefilter("ignore", ConvergenceWarning)
est = jaxreg.MLPRegressor(hidden_layer_sizes=(64, 64), batch_size=1024, epochs=1, tol=None,
                          random_state=0)
seen = []
def on_epoch(progress):
    seen.append(progress.timings.run_seconds)
t0 = time.perf_counter()
if mode == "stream":
    from jaxreg.stream import TableStream
    stream = TableStream(path, "y", val_fraction=0.05)
    width, row = 9, 9 * 8  # as jaxreg fit --max-memory sizes them
    stream.buffer_rows = max(1 << 14, budget // (row * 4))
    stream.block_rows = max(1 << 12, min(1 << 16, stream.buffer_rows // 8))
    stream.held_rows = max(1 << 12, min(1 << 18, budget // (row * 8)))
    est.fit(stream, callbacks=[on_epoch])
    n_train = stream.scan().n_train
    stats = stream.scan()
    extra = {"buffer_rows": stream.buffer_rows, "max_rows_held": stream.max_rows_held,
             "val_mse": float(np.mean((est.predict(stats.x_val) - stats.y_val[:, 0]) ** 2))}
else:
    import pyarrow.parquet as pq
    f = pq.ParquetFile(path)
    table = f.read_row_groups(range(-(-(rows + 50_000) // f.metadata.row_group(0).num_rows)))
    x = np.stack([table[f"x{i}"].to_numpy() for i in range(8)], 1)
    y = table["y"].to_numpy()
    del table
    est.fit(x[:rows], y[:rows], callbacks=[on_epoch], chunk_epochs=1)
    n_train = rows
    held = slice(rows, rows + 50_000)
    extra = {"val_mse": float(np.mean((est.predict(x[held]) - y[held]) ** 2))}
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"mode": mode, "n_train": n_train, "epoch_s": seen[0], "wall_s": wall,
                  "compile_s": est.compile_seconds_, "peak_rss_mb": rss, **extra}))
"""


def _make(path: str, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(8)] + ["y"]
    schema = pa.schema([(n, pa.float32()) for n in names])
    with pq.ParquetWriter(path, schema) as w:
        for s in range(0, rows, 1_000_000):
            r = min(1_000_000, rows - s)
            x = rng.normal(size=(r, 8)).astype(np.float32)
            y = (np.sin(x).sum(1) + 0.1 * rng.normal(size=r)).astype(np.float32)
            w.write_table(pa.table([*x.T, y], schema=schema), row_group_size=1_000_000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60_000_000)
    ap.add_argument("--memory-rows", type=int, default=4_000_000)
    ap.add_argument("--memory", default="256MB", help="the streamed run's --max-memory")
    ap.add_argument("--scratch", default="/tmp/jaxreg-bench-stream")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    from jaxreg.stream import parse_size

    budget = parse_size(args.memory)
    os.makedirs(args.scratch, exist_ok=True)
    path = os.path.join(args.scratch, f"t{args.rows}.parquet")
    if not os.path.exists(path):
        t0 = time.perf_counter()
        _make(path, args.rows)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = {}
    for mode in ("memory", "stream"):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, mode, path, str(args.memory_rows), str(budget)],
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
        if out.returncode:
            print(f"{mode}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        r = rows[mode]
        r["samples_per_s"] = r["n_train"] / r["epoch_s"]
        print(json.dumps(r), flush=True)
    if len(rows) == 2:
        ratio = rows["stream"]["samples_per_s"] / rows["memory"]["samples_per_s"]
        print(
            "\n| run | training rows | epoch s | M samples/s | peak RSS MB | wall s | val MSE |\n"
            "|---|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {m} | {r['n_train']:,} | {r['epoch_s']:.2f} | "
                f"{r['samples_per_s'] / 1e6:.2f} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.1f} | "
                f"{r['val_mse']:.4f} |"
                for m, r in rows.items()
            )
            + f"\n\nstreamed / in memory samples/s: {ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
