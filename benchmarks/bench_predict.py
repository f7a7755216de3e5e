"""``jaxreg predict`` on a table larger than its memory budget: whole against in blocks.

Generates a Parquet table (``--rows`` x 8 features, cached beside the script's temporary
folder), fits a small network on 20,000 of its rows and saves it, then times, in turns,
each of these commands as its own process (medians of ``--repeats`` runs after one warm-up
run each; wall time and the process's peak resident memory from ``wait4``):

- ``start``: the same command on the table's first 100 rows (start-up, imports, model load);
- ``default, CSV`` / ``default, Parquet``: the default budget (a quarter of the memory:
  blocks of 2**20 rows, the most a block holds);
- ``BUDGET, CSV`` / ``BUDGET, Parquet``: ``--max-memory BUDGET`` (default 256MB).

(Before 2026-12-07 a table within the budget was read whole; ``benchmarks/README.md`` has
that measurement beside the blocks'.)

It checks that every output holds the same predictions (to the CSV's nine digits).

    python benchmarks/bench_predict.py [--rows 10000000] [--budget 256MB] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

FEATURES = [f"x{i}" for i in range(8)]


def make_table(path: pathlib.Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    step = 1_000_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        x = rng.standard_normal((n, len(FEATURES))).astype(np.float32)
        y = (np.sin(x).sum(axis=1) + 0.1 * rng.standard_normal(n)).astype(np.float32)
        cols = {name: x[:, j] for j, name in enumerate(FEATURES)}
        cols["id"] = np.arange(start, start + n, dtype=np.int64)
        cols["y"] = y
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=250_000)
    assert writer is not None
    writer.close()


def fit_model(table: pathlib.Path, out: pathlib.Path) -> None:
    import pandas as pd

    from jaxreg import MLPRegressor, save

    df = pd.read_parquet(table).head(20_000)
    model = MLPRegressor((64, 64), epochs=20, random_state=0).fit(df[FEATURES], df["y"])
    save(model, out, overwrite=True)


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process running ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--budget", default="256MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    work = pathlib.Path(tempfile.gettempdir()) / "jaxreg-bench-predict"
    work.mkdir(exist_ok=True)
    table = work / f"table-{args.rows}.parquet"
    small = work / "table-100.parquet"
    model = work / "model"
    if args.prepare:
        if not table.exists():
            print(f"writing {table} ...", flush=True)
            make_table(table, args.rows)
        import pandas as pd

        pd.read_parquet(table).head(100).to_parquet(small)
        fit_model(table, model)
        return 0
    # in a process of its own: a child's peak RSS (wait4) starts from its parent's
    subprocess.run([sys.executable, __file__, "--prepare", "--rows", str(args.rows)], check=True)

    jaxreg = [sys.executable, "-m", "jaxreg", "predict", str(model)]
    rows = {
        "start (100 rows)": [*jaxreg, str(small), "--out", str(work / "s.csv")],
        "default, CSV": [*jaxreg, str(table), "--keep", "id", "--out", str(work / "w.csv")],
        f"{args.budget}, CSV": [*jaxreg, str(table), "--keep", "id", "--max-memory",
                                args.budget, "--out", str(work / "b.csv")],
        "default, Parquet": [*jaxreg, str(table), "--keep", "id",
                             "--out", str(work / "w.parquet")],
        f"{args.budget}, Parquet": [*jaxreg, str(table), "--keep", "id", "--max-memory",
                                    args.budget, "--out", str(work / "b.parquet")],
    }  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in rows}
    peaks: dict[str, list[float]] = {k: [] for k in rows}
    for r in range(args.repeats + 1):  # the first round warms the caches, not counted
        for name, cmd in rows.items():
            wall, peak = run(cmd)
            if r:
                times[name].append(wall)
                peaks[name].append(peak)
        print(f"round {r} done", flush=True)

    import pandas as pd

    ref = pd.read_csv(work / "w.csv")
    for other in ("b.csv", "w.parquet", "b.parquet"):
        got = pd.read_csv(work / other) if other.endswith(".csv") else pd.read_parquet(work / other)
        assert (got["id"].to_numpy() == ref["id"].to_numpy()).all(), other
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-8, err_msg=other)

    print(f"\n{args.rows:,} rows x {len(FEATURES)} features, budget {args.budget}, "
          f"medians of {args.repeats}")  # fmt: skip
    print(f"{'command':<18} {'wall s':>8} {'peak MB':>9}")
    for name in rows:
        print(
            f"{name:<18} {statistics.median(times[name]):>8.2f} "
            f"{statistics.median(peaks[name]):>9.0f}"
        )
    print("every output holds the same predictions (to the CSV's nine digits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
