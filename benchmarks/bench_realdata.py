"""Real-data accuracy and time: jaxreg.MLPRegressor against scikit-learn on regression
tables that ship inside Python packages (nothing is downloaded at run time).

Tables (``DATASETS``): scikit-learn's ``linnerud`` (3 targets) and ``diabetes``, plotnine's
``mpg``, ``penguins``, ``txhousing`` and ``diamonds`` (ggplot2's and palmerpenguins' data),
statsmodels' ``fair`` and ``randhie``; rows with a missing value are dropped. Text columns
are one-hot encoded by a ``ColumnTransformer`` inside every model's pipeline, with the
categories of the whole table (no target is read), so every fold has the same features.

Models, each with 5-fold ``KFold(shuffle=True, random_state=0)``:

- ``jaxreg``: ``jaxreg.MLPRegressor(random_state=0)``, its defaults (it standardizes X and y);
- ``sklearn``: scikit-learn's ``MLPRegressor(random_state=0)``, X scaled (``StandardScaler``)
  and y scaled (``TransformedTargetRegressor(transformer=StandardScaler())``);
- ``hgb``: ``HistGradientBoostingRegressor(random_state=0)`` (``MultiOutputRegressor`` for
  several targets);
- ``ridge``: ``Ridge()`` on scaled X.

Per model and table: R² on the held-out fold (mean ± std over folds; the uniform average
over targets), fit + predict seconds per fold (median) and in total, and the warnings
raised (folds with at least one, by category). For jaxreg also the folds that stopped at the
epoch limit (``n_iter_ == epochs``) and the summed ``compile_seconds_``; a warm-up fit on a
tiny array first keeps JAX's start-up cost out of the first table. A model whose fold takes
longer than ``--max-fold-seconds`` skips its remaining folds of that table (noted).

    python benchmarks/bench_realdata.py --threads 1       # everything (about 4 minutes)
    python benchmarks/bench_realdata.py --quick           # 2 folds, at most 2,000 rows
    python benchmarks/bench_realdata.py --only diabetes,mpg --models jaxreg,ridge
    python benchmarks/bench_realdata.py --models jaxreg --jaxreg-params '{"l2": 1e-4}'
    python benchmarks/bench_realdata.py --threads 1 --model-seeds 0,1,2   # about 12 minutes

``--jaxreg-params`` (a JSON object; lists become tuples) overrides jaxreg's defaults, so
that candidate defaults run on the very same folds.

``--threads 1`` limits BLAS and OpenMP (threadpoolctl): on a shared 2-core machine, their
default threads spin against other processes and inflate scikit-learn's times (HGB's
by 10x and more).

Needs ``pip install -e ".[bench]"`` (plotnine, statsmodels). Prints a markdown table and
writes it to ``--out`` (default ``benchmarks/realdata.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

MODELS = ("jaxreg", "sklearn", "hgb", "ridge")
MODEL_SEEDS = [0]  # --model-seeds: every model's random_state values (the folds stay KFold's 0)
MODEL_SEED = 0  # the seed of the fit being made
QUICK_ROWS = 2000


def _sklearn(name):
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    return pd.concat([bunch.data, bunch.target], axis=1)


def _plotnine(name):
    import plotnine.data

    return getattr(plotnine.data, name)


def _statsmodels(name):
    import statsmodels.datasets

    return getattr(statsmodels.datasets, name).load_pandas().data


# name: (loader, source, target column(s), columns dropped, note)
DATASETS = {
    "linnerud": (
        _sklearn,
        "sklearn.datasets.load_linnerud",
        ["Weight", "Waist", "Pulse"],
        [],
        "3 targets from 3 exercises; BSD-3 (scikit-learn)",
    ),
    "mpg": (
        _plotnine,
        "plotnine.data.mpg",
        "hwy",
        ["cty", "model"],
        "ggplot2's fuel economy (EPA); MIT; cty (same quantity) and model (name) dropped",
    ),
    "penguins": (
        _plotnine,
        "plotnine.data.penguins",
        "body_mass_g",
        [],
        "palmerpenguins; CC0",
    ),
    "diabetes": (
        _sklearn,
        "sklearn.datasets.load_diabetes",
        "target",
        [],
        "Efron et al. (2004), features pre-scaled; BSD-3 (scikit-learn)",
    ),
    "fair": (
        _statsmodels,
        "statsmodels.datasets.fair.load_pandas",
        "affairs",
        [],
        "Fair (1978) affairs survey, target mostly 0; 'included with permission of the author'",
    ),
    "txhousing": (
        _plotnine,
        "plotnine.data.txhousing",
        "median",
        ["volume", "date"],
        "ggplot2's Texas housing (TAMU); MIT; volume (sales x price) and date dropped",
    ),
    "randhie": (
        _statsmodels,
        "statsmodels.datasets.randhie.load_pandas",
        "mdvis",
        [],
        "RAND Health Insurance Experiment, outpatient visits (count); public domain",
    ),
    "diamonds": (
        _plotnine,
        "plotnine.data.diamonds",
        "price",
        [],
        "ggplot2's diamonds; MIT",
    ),
}


def load(name: str, quick: bool):
    """X (DataFrame), y (1-D or 2-D array), the text columns and their categories."""
    loader, _, target, drop, _ = DATASETS[name]
    df = loader(name).drop(columns=drop).dropna().reset_index(drop=True)
    if quick and len(df) > QUICK_ROWS:
        df = df.sample(QUICK_ROWS, random_state=0).reset_index(drop=True)
    X = df.drop(columns=target)
    text = list(X.select_dtypes(exclude="number").columns)
    categories = [sorted(X[c].astype(str).unique()) for c in text]
    X[text] = X[text].astype(str)
    return X, df[target].to_numpy(np.float64), text, categories


def make_model(model: str, text, categories, n_targets: int, jaxreg_params=None):
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.neural_network import MLPRegressor as SkMLP
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from jaxreg import MLPRegressor

    onehot = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)
    encode = ColumnTransformer([("onehot", onehot, text)], remainder="passthrough")
    if model == "jaxreg":
        params = {"random_state": MODEL_SEED, **(jaxreg_params or {})}
        return make_pipeline(encode, MLPRegressor(**params))
    if model == "sklearn":
        net = make_pipeline(encode, StandardScaler(), SkMLP(random_state=MODEL_SEED))
        return TransformedTargetRegressor(regressor=net, transformer=StandardScaler())
    if model == "hgb":
        hgb = HistGradientBoostingRegressor(random_state=MODEL_SEED)
        return make_pipeline(encode, hgb if n_targets == 1 else MultiOutputRegressor(hgb))
    return make_pipeline(encode, StandardScaler(), Ridge())


def evaluate(
    model: str, X, y, text, categories, folds: int, max_fold_s: float, jaxreg_params=None
) -> dict:
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    global MODEL_SEED
    n_targets = 1 if y.ndim == 1 else y.shape[1]
    split = list(KFold(folds, shuffle=True, random_state=0).split(X))
    # scores[s][f]: R² of model seed s on fold f
    scores, seconds, warned, at_limit, compile_s = [], [], Counter(), 0, 0.0
    for seed in MODEL_SEEDS:
        MODEL_SEED, scores_s = seed, []
        scores.append(scores_s)
        for tr, te in split:
            est = make_model(model, text, categories, n_targets, jaxreg_params)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                pred = est.fit(X.iloc[tr], y[tr]).predict(X.iloc[te])
                seconds.append(time.perf_counter() - t0)
            warned.update({w.category.__name__ for w in caught})
            scores_s.append(r2_score(y[te], pred))
            if model == "jaxreg":
                net = est[-1]
                at_limit += int(net.n_iter_ >= net.epochs)
                compile_s += getattr(net, "compile_seconds_", 0.0)
            if seconds[-1] > max_fold_s:
                break
        if len(scores_s) < folds:
            break
    fits = sum(len(s) for s in scores)
    notes = [f"{cat} in {k}/{fits} fits" for cat, k in sorted(warned.items())]
    if model == "jaxreg":
        notes.insert(0, f"epoch limit in {at_limit}/{fits} fits")
        notes.insert(1, f"compile {compile_s:.1f} s")
    if len(scores[-1]) < folds:
        notes.insert(0, f"**{fits} fits only** (a fold took > {max_fold_s:g} s)")
    by_seed = [float(np.mean(s)) for s in scores]
    if len(by_seed) > 1:
        notes.insert(0, "by seed " + " / ".join(f"{r:.4f}" for r in by_seed))
    # Per fold, the mean over seeds (complete seeds only): what the paired test compares.
    full = [s for s in scores if len(s) == folds] or [scores[0]]
    per_fold = np.mean(np.asarray(full), axis=0)
    return {
        "scores": per_fold,
        "r2": float(np.mean(per_fold)),
        "r2_std": float(np.std(per_fold)),
        "fold_s": statistics.median(seconds),
        "total_s": sum(seconds) / len(scores),
        "notes": "; ".join(notes),
    }


def paired(other: str, ours: dict, theirs: dict) -> str:
    """jaxreg's R² minus ``other``'s on the same folds, with a paired t-test's p-value."""
    from scipy import stats

    a, b = np.asarray(ours["scores"]), np.asarray(theirs["scores"])
    if len(a) != len(b) or len(a) < 2:
        return f"vs {other}: folds differ"
    p = stats.ttest_rel(a, b).pvalue
    return f"ΔR² vs {other} {np.mean(a - b):+.4f} (paired t-test over folds p={p:.2f})"


def warm_up() -> float:
    """One tiny jaxreg fit so JAX's start-up is not charged to the first table."""
    from jaxreg import MLPRegressor

    rng = np.random.RandomState(0)
    x = rng.normal(size=(32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = MLPRegressor(random_state=0).fit(x, x.sum(axis=1))
    net.predict(x)
    return getattr(net, "compile_seconds_", float("nan"))


def header(args, warm_s: float | None, load_start: float) -> list[str]:
    import jax
    import sklearn

    import jaxreg

    src = Path(jaxreg.__file__).parent
    git = ["git", "-C", str(src)]
    try:
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
        rev = f", git {rev}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        rev = ""
    p = jaxreg.MLPRegressor(**args.jaxreg_params).get_params()
    shown = "hidden_layer_sizes activation optimizer learning_rate epochs batch_size tol"
    shown += " n_iter_no_change early_stopping l2 dtype"
    shown += "".join(f" {k}" for k in args.jaxreg_params if k not in shown.split())
    defaults = ", ".join(f"{k}={p[k]!r}" for k in shown.split() if k in p)
    given = f" (`--jaxreg-params` {json.dumps(args.jaxreg_params)})" if args.jaxreg_params else ""
    folds = 2 if args.quick else 5
    lines = [
        "# Real-data benchmark (`benchmarks/bench_realdata.py`)",
        "",
        f"jax {jax.__version__}, jaxreg {jaxreg.__version__} ({src}{rev}), scikit-learn "
        f"{sklearn.__version__}, numpy {np.__version__}, Python {platform.python_version()}; "
        f"{os.cpu_count()} cores ({platform.machine()}, {jax.default_backend()}); "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}.",
        "",
        f"Command: `python benchmarks/bench_realdata.py {shlex.join(sys.argv[1:])}".rstrip() + "`.",
        f"{folds}-fold `KFold(shuffle=True, random_state=0)`"
        + (f", tables subsampled to {QUICK_ROWS} rows" if args.quick else "")
        + (
            "; R² mean ± std over folds"
            if len(MODEL_SEEDS) == 1
            else f"; each fold fitted with every model's random_state in {MODEL_SEEDS}: R² "
            "mean ± std over folds of each fold's mean over seeds (the paired t-test compares "
            "those fold means), then the mean of each seed"
        )
        + "; seconds are fit + predict of one fold (median), total s the sum over folds"
        + (
            " (mean over seeds)"
            if len(MODEL_SEEDS) > 1
            else f"; every model's random_state={MODEL_SEEDS[0]}"
        )
        + ".",
        f"jaxreg {'parameters' if args.jaxreg_params else 'defaults'}: {defaults}{given}.",
        f"1-minute load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} "
        "(other processes may share the cores).",
    ]
    if args.threads:
        lines.append(f"BLAS and OpenMP limited to {args.threads} thread(s) (threadpoolctl).")
    if warm_s is not None:
        lines.append(f"jaxreg warm-up fit (32 x 3) before the tables: compile {warm_s:.2f} s.")
    return lines


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("must be comma-separated integers") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError("must be comma-separated integers >= 0")
    return seeds


def _json_params(text: str) -> dict:
    """``--jaxreg-params``: a JSON object; its lists become tuples (hidden_layer_sizes)."""
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e})") from None
    if not isinstance(params, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 folds, at most 2,000 rows")
    ap.add_argument("--only", default=",".join(DATASETS), help="comma-separated table names")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    ap.add_argument("--out", default="benchmarks/realdata.md")
    ap.add_argument("--max-fold-seconds", type=float, default=120.0)
    ap.add_argument(
        "--threads",
        type=int,
        help="limit BLAS and OpenMP threads (threadpoolctl; XLA's threads are not limited)",
    )
    ap.add_argument(
        "--model-seeds",
        "--model-seed",
        type=_seeds,
        default=[0],
        help="comma-separated random_state values of every model (the folds do not change): "
        "each model is fitted on every fold with each seed; R² is the mean over seeds",
    )
    ap.add_argument(
        "--jaxreg-params",
        type=_json_params,
        default={},
        help="JSON object of jaxreg.MLPRegressor parameters overriding its defaults",
    )
    args = ap.parse_args(argv)
    global MODEL_SEEDS
    MODEL_SEEDS = args.model_seeds
    names, models = args.only.split(","), args.models.split(",")
    for bad in set(names) - set(DATASETS):
        ap.error(f"unknown table {bad!r}; choose from {', '.join(DATASETS)}")
    for bad in set(models) - set(MODELS):
        ap.error(f"unknown model {bad!r}; choose from {', '.join(MODELS)}")
    if args.threads:
        import sklearn.ensemble  # noqa: F401  (loads OpenMP, so that threadpoolctl limits it)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    np.random.seed(0)
    load_start = os.getloadavg()[0]
    warm_s = warm_up() if "jaxreg" in models else None

    results = [
        "| data set | rows x features | model | R² (mean ± std) | s / fold (median) "
        "| total s | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    tables = [
        "| data set | source | rows x features (after encoding) | target | notes |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        X, y, text, categories = load(name, args.quick)
        n_feat = X.shape[1] - len(text) + sum(len(c) for c in categories)
        shape = f"{len(X)} x {n_feat}"
        _, source, target, _, note = DATASETS[name]
        target = ", ".join(target) if isinstance(target, list) else target
        tables.append(f"| {name} | `{source}` | {shape} | {target} | {note} |")
        runs = {}
        for model in models:
            print(f"{name} ({shape}) {model} ...", file=sys.stderr, flush=True)
            runs[model] = evaluate(
                model,
                X,
                y,
                text,
                categories,
                2 if args.quick else 5,
                args.max_fold_seconds,
                args.jaxreg_params,
            )
        if "jaxreg" in runs and "sklearn" in runs:
            runs["jaxreg"]["notes"] += "; " + paired("sklearn", runs["jaxreg"], runs["sklearn"])
        for model, r in runs.items():
            results.append(
                f"| {name} | {shape} | {model} | {r['r2']:.4f} ± {r['r2_std']:.4f} "
                f"| {r['fold_s']:.2f} | {r['total_s']:.1f} | {r['notes']} |"
            )
            print(results[-1], file=sys.stderr, flush=True)
    lines = [*header(args, warm_s, load_start), "", *results, "", "Tables:", "", *tables]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
