"""One library variant on one workload, in its own process (started by ``run.py``).

Prints one ``PEERS_JSON {...}`` line: ``rows`` (each with ``case``, ``first_s``, ``times``,
MSEs, ``compile_s``, ``note``, or ``skipped``), ``versions``, and ``missing`` when the
library is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import (  # noqa: E402
    LECTURE_EPOCHS,
    LECTURE_LR,
    LECTURE_SIZES,
    lecture_params,
    load_inputs,
    mse,
    stack,
    timed_runs,
)


def lecture(mod, variant: str, args) -> list[dict]:
    d = load_inputs(args.scratch, "lecture")
    xt, yt, xv, yv = d["xt"], d["yt"], d["xv"], d["yv"]
    if variant == "jaxreg-cli":
        return mod.lecture_cli(args.repeats)
    rows = []
    for opt in ("gd", "adam"):
        train = mod.full_batch(variant, opt, LECTURE_LR, LECTURE_EPOCHS, xt, yt, LECTURE_SIZES)
        p0 = lecture_params(d)
        res = timed_runs(lambda i, train=train, p0=p0: train(p0, i), args.repeats, args.limit)
        out = res["out"]
        rows.append(
            {
                "case": opt,
                "first_s": res["first_s"],
                "times": res["times"],
                "train_mse": mse(out, xt, yt),
                "val_mse": mse(out, xv, yv),
                **train.info(),
            }
        )
    return rows


def _member_mses(stacked, m, xt, yt, xv, yv):
    models = [[(w[i], b[i]) for w, b in stacked] for i in range(m)]
    return [mse(p, xt, yt) for p in models], [mse(p, xv, yv) for p in models]


def ensemble(mod, variant: str, args) -> list[dict]:
    """GD on M lecture models (seeds 0..M-1). Libraries with ``many`` (jax.vmap or
    fit_many) train them in one call; the others in a Python loop, stopped at the limit."""
    d = load_inputs(args.scratch, "lecture")
    xt, yt, xv, yv = d["xt"], d["yt"], d["xv"], d["yv"]
    rows, previous = [], None  # previous: (m, done, seconds) of the loop at a smaller M
    for m in args.models:
        row = {"case": f"M={m}"}
        if hasattr(mod, "many"):
            train, info = mod.many(variant, LECTURE_LR, LECTURE_EPOCHS, xt, yt, LECTURE_SIZES, m)
            stacked = stack([lecture_params(d, i) for i in range(m)])
            repeats = args.repeats if m <= 64 else 1
            res = timed_runs(lambda i, t=train, s=stacked: t(s), repeats, args.limit)
            tr, va = _member_mses(res["out"], m, xt, yt, xv, yv)
            row.update(first_s=res["first_s"], times=res["times"], **info())
        else:
            if previous is not None:
                pm, done, secs = previous
                if done < pm:
                    row["skipped"] = (
                        f"M={pm} already stopped at the {args.limit:g} s limit "
                        f"({done} of {pm} models in {secs:.1f} s)"
                    )
                elif secs * m / pm > args.limit:
                    row["skipped"] = (
                        f"measured M={pm}: {secs:.1f} s ({secs / pm:.2f} s/model, a Python "
                        f"loop); M={m} would take about {m / pm:.0f}x that, over the "
                        f"{args.limit:g} s limit: not run"
                    )
                if "skipped" in row:
                    rows.append(row)
                    continue
            train = mod.full_batch(variant, "gd", LECTURE_LR, LECTURE_EPOCHS, xt, yt, LECTURE_SIZES)
            t0 = time.perf_counter()
            train(lecture_params(d, 0), 0)  # warm-up: compilation, first-call work
            first = time.perf_counter() - t0
            got = common.loop_members(
                lambda i, t=train: t(lecture_params(d, i), i), range(m), args.limit
            )
            previous = (m, got["done"], got["seconds"])
            outs = got["outs"]
            tr = [mse(p, xt, yt) for p in outs]
            va = [mse(p, xv, yv) for p in outs]
            row.update(first_s=first, **train.info())
            row["note"] = (row.get("note", "") + "; a Python loop over the models").strip("; ")
            if got["done"] < m:
                row["skipped"] = (
                    f"stopped at the {args.limit:g} s limit: {got['done']} of {m} models in "
                    f"{got['seconds']:.1f} s ({got['seconds'] / got['done']:.2f} s/model)"
                )
            else:
                row["times"] = [got["seconds"]]
        row.update(
            train_mse=float(np.mean(tr)),
            val_mse=float(np.mean(va)),
            member_val=va,
            members=len(va),
        )
        rows.append(row)
    return rows


def _mse_chunked(params, x, y, y_mean, y_std, chunk=100_000) -> float:
    """MSE in y's units of a network on standardized inputs, in chunks of rows."""
    total = 0.0
    for i in range(0, len(x), chunk):
        pred = common.predict(params, x[i : i + chunk])[:, 0] * y_std + y_mean
        total += float(np.sum((pred - np.asarray(y[i : i + chunk], np.float64)) ** 2))
    return total / len(x)


def bigdata(mod, variant: str, args) -> list[dict]:
    """One epoch of Adam on bench_bigdata.py's rows (its data, standardization and
    initial weights), minibatches of 1024."""
    common.add_benchmarks_to_path()
    import bench_bigdata as bb

    d = load_inputs(args.scratch, "bigdata")
    xs, ys = bb.standardized(d)
    p0 = bb.initial_params(d)
    train = mod.minibatch(variant, bb.LR, 1, bb.BATCH, xs, ys, bb.SIZES, 0)
    res = timed_runs(lambda i: train(p0, i), args.repeats, args.limit)
    out = res["out"]
    return [
        {
            "case": f"{len(xs):,} rows",
            "first_s": res["first_s"],
            "times": res["times"],
            "train_mse": _mse_chunked(out, xs, d["y"], d["y_mean"], d["y_std"]),
            "val_mse": bb.val_mse(d, out),
            "samples": len(xs),
            **train.info(),
        }
    ]


def realdata(mod, variant: str, args) -> list[dict]:
    """bench_realdata.py's tables: every library trains the same network (the narrow
    one of jaxreg's "auto" widths, (32, 32) tanh) with Adam for a fixed number of epochs
    on the same standardized folds, from the same Glorot-uniform weights (jaxreg's
    estimator: its own)."""
    common.add_benchmarks_to_path()
    import bench_realdata as br
    from sklearn.compose import ColumnTransformer
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rows = []
    for name in args.tables:
        X, y, text, categories = br.load(name, quick=not args.full_tables)
        y2 = y.reshape(len(y), -1)
        scores, seconds, first, train_mses, note = [], [], None, [], ""
        folds = KFold(args.folds, shuffle=True, random_state=0).split(X)
        for k, (tr, te) in enumerate(folds):
            onehot = OneHotEncoder(
                categories=categories, handle_unknown="ignore", sparse_output=False
            )
            enc = ColumnTransformer([("onehot", onehot, text)], remainder="passthrough")
            scale = StandardScaler()
            x_tr = scale.fit_transform(enc.fit_transform(X.iloc[tr])).astype(np.float32)
            x_te = scale.transform(enc.transform(X.iloc[te])).astype(np.float32)
            mu, sd = y2[tr].mean(axis=0), y2[tr].std(axis=0)
            y_tr = ((y2[tr] - mu) / sd).astype(np.float32)
            sizes = (x_tr.shape[1], *common.REAL_HIDDEN, y2.shape[1])
            p0 = common.glorot_params(sizes, seed=k)
            batch = min(common.REAL_BATCH, len(tr))
            t0 = time.perf_counter()
            train = mod.minibatch(
                variant, common.REAL_LR, common.REAL_EPOCHS, batch, x_tr, y_tr, sizes, k
            )
            out = train(p0, 0)
            seconds.append(time.perf_counter() - t0)
            first = seconds[0] if first is None else first
            pred = common.predict(out, x_te) * sd + mu
            scores.append(float(r2_score(y2[te], pred)))
            train_mses.append(mse(out, x_tr, y_tr))
            note = train.info().get("note", "")
            if seconds[-1] > args.limit:
                note = f"{len(scores)}/{args.folds} folds only (a fold took > {args.limit:g} s)"
                break
        rows.append(
            {
                "case": f"{name} ({len(X)} rows)",
                "first_s": first,
                # the folds after the first (which also compiles: its own column)
                "times": [statistics.median(seconds[1:] or seconds)],
                "fold_s": seconds,
                "r2": scores,
                "train_mse": float(np.mean(train_mses)),
                "val_mse": None,
                "note": note,
            }
        )
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", required=True, choices=tuple(common.VARIANTS))
    p.add_argument("--workload", required=True, choices=common.WORKLOADS)
    p.add_argument("--scratch", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--limit", type=float, default=120.0)
    p.add_argument("--models", type=int, nargs="+", default=[64, 512])
    p.add_argument("--tables", nargs="+", default=[])
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--full-tables", action="store_true")
    args = p.parse_args()
    module = common.VARIANTS[args.variant][0]
    try:
        mod = importlib.import_module(module)
        versions = mod.versions()
    except ModuleNotFoundError as exc:
        common.emit({"missing": exc.name or str(exc)})
        return 0
    work = {"lecture": lecture, "ensemble": ensemble, "bigdata": bigdata, "realdata": realdata}
    try:
        rows = work[args.workload](mod, args.variant, args)
    except ModuleNotFoundError as exc:
        common.emit({"missing": exc.name or str(exc), "versions": versions})
        return 0
    except Exception as exc:
        traceback.print_exc()
        text = (str(exc).strip().splitlines() or [""])[0]
        common.emit({"error": f"{type(exc).__name__}: {text}"[:300], "versions": versions})
        return 0
    for r in rows:
        r.pop("out", None)
    common.emit({"rows": rows, "versions": versions})
    return 0


if __name__ == "__main__":
    sys.exit(main())
