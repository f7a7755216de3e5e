"""``jaxreg sweep``: a vectorized grid of architectures × hyperparameters × seeds.

Data: a CSV/TSV/Parquet file (``--data FILE --target COL``; ``--val-fraction`` of the rows held
out, the same rows ``jaxreg fit --seed S`` holds out for ``--split-seed S``) or the lecture's
data (``--lecture``). The grid comes from the command line (``--hidden 10,10,10 --lr
1e-3,3e-3 --l2 0,1e-3 ...``) or a TOML file (``--grid grid.toml``; command-line values win).
Writes ``sweep.csv``, ``sweep.md``, ``sweep.png`` (validation MSE per configuration with 95%
CI bars) and, with ``--lecture`` or ``--ensemble-plot``, ``ensemble.png`` (the best
configuration's deep ensemble over seeds with a ±2 std band).

A TOML grid looks like::

    hidden = [[10, 10, 10], [16, 8]]
    activation = ["tanh"]
    optimizer = "adam"
    schedule = "cosine"
    epochs = 4000
    seeds = 32
    [grid]
    learning_rate = [1e-3, 3e-3]
    l2 = [0, 1e-4]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import shlex

from jaxreg.apps.options import add_command, add_options

# command-line option -> Hparams field
HP_OPTIONS = {
    "lr": "learning_rate",
    "l2": "l2",
    "decay_rate": "decay_rate",
    "transition_steps": "transition_steps",
    "warmup_steps": "warmup_steps",
    "alpha": "alpha",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
}
FIRST = ["architecture", "activation", "n_params", "optimizer", "schedule"]
STATS = [
    "n_seeds",
    "n_diverged",
    "val_mse_mean",
    "val_mse_std",
    "val_mse_ci_low",
    "val_mse_ci_high",
    "train_mse_mean",
    "gap_pct",
    "time_s",
]
SHORT = {  # display headers of the terminal table
    "architecture": "arch",
    "activation": "act",
    "n_params": "params",
    "optimizer": "opt",
    "schedule": "sched",
    "learning_rate": "lr",
    "n_seeds": "seeds",
    "n_diverged": "diverged",
    "val_mse_mean": "val MSE",
    "val_mse_std": "std",
    "val_mse_ci_low": "CI low",
    "val_mse_ci_high": "CI high",
    "train_mse_mean": "train MSE",
    "gap_pct": "gap %",
    "time_s": "s/config",
    "decay_rate": "decay",
    "transition_steps": "steps",
}
TOML_KEYS = {
    "hidden",
    "activation",
    "optimizer",
    "schedule",
    "epochs",
    "seeds",
    "grid",
    "init",
    "bias_init",
}


def add_parser(sub) -> None:
    p = add_command(sub, "sweep", run)
    add_options(p.add_argument_group("data"), "sweep-data")
    add_options(p.add_argument_group("table"), "table")
    add_options(p.add_argument_group("scale-out"), "distributed")
    g = p.add_argument_group("grid")
    add_options(g, "sweep-grid")
    for opt, field in HP_OPTIONS.items():
        g.add_argument(
            f"--{opt.replace('_', '-')}",
            dest=opt,
            action="append",
            metavar="V[,V]",
            help=f"values of {field}",
        )
    add_options(g, "sweep-grid-end")
    add_options(p.add_argument_group("output"), "sweep-output")


# ------------------------------------------------------------------ parsing


def _usage(msg: str):
    from jaxreg.errors import UsageError

    return UsageError(msg)


def _numbers(option: str, values: list[str]) -> list[float]:
    out = []
    for chunk in values:
        for part in chunk.split(","):
            part = part.strip()
            try:
                v = float(part)
            except ValueError:
                raise _usage(
                    f"The '{option}' option must be a comma-separated list of "
                    f"numbers. Got {part!r}."
                ) from None
            if not math.isfinite(v):
                raise _usage(f"The '{option}' option must hold finite numbers. Got {part!r}.")
            out.append(v)
    return out


def _widths(option: str, text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in str(text).split(","))
    except ValueError:
        widths = ()
    if not widths or any(w < 1 for w in widths):
        raise _usage(
            f"The '{option}' option must be positive integer widths separated by "
            f"commas, e.g. 10,10,10. Got {text!r}."
        )
    return widths


def _names(text) -> list[str]:
    items = text if isinstance(text, list) else str(text).split(",")
    return [str(s).strip() for s in items if str(s).strip()]


def _read_toml(path: str) -> dict:
    import tomllib

    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--grid: no such file: {path}")
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise _usage(f"--grid {path} is not valid TOML: {exc}") from None
    unknown = set(doc) - TOML_KEYS
    if unknown:
        raise _usage(
            f"--grid {path} has unknown key(s) {sorted(unknown)}; valid keys are "
            f"{sorted(TOML_KEYS)}."
        )
    if "grid" in doc and not isinstance(doc["grid"], dict):
        raise _usage(
            f"--grid {path}: 'grid' must be a table of name = [values]. Got {doc['grid']!r}."
        )
    return doc


def build_plan(args) -> dict:
    """Merge the TOML grid and the command line into keyword arguments of ``sweep``."""
    doc = _read_toml(args.grid) if args.grid else {}
    if args.hidden:
        hidden = [_widths("--hidden", h) for h in args.hidden]
    elif "hidden" in doc:
        raw = doc["hidden"]
        raw = raw if isinstance(raw, list) and raw and isinstance(raw[0], list) else [raw]
        hidden = [
            _widths("hidden", ",".join(str(w) for w in h) if isinstance(h, list) else h)
            for h in raw
        ]
    else:
        hidden = [(10, 10, 10)]
    grid: dict = {}
    for key, values in dict(doc.get("grid", {})).items():
        grid[key] = values if isinstance(values, list) else [values]
    for opt, field in HP_OPTIONS.items():
        given = getattr(args, opt)
        if given:
            grid[field] = _numbers(f"--{opt.replace('_', '-')}", given)
    for name in ("optimizer", "schedule"):
        given = getattr(args, name) or doc.get(name)
        if given:
            grid[name] = _names(given)
    epochs = args.epochs if args.epochs is not None else doc.get("epochs", 4000)
    seeds = args.seeds if args.seeds is not None else doc.get("seeds", 8)
    for name, v, low in (("--epochs", epochs, 1), ("--seeds", seeds, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise _usage(f"The '{name}' option must be an integer >= {low}. Got {v!r}.")
    activation = _names(args.activation or doc.get("activation", "tanh"))
    plan = {
        "architectures": hidden,
        "grid": grid,
        "epochs": int(epochs),
        "seeds": int(seeds),
        "activation": activation,
    }
    for name in ("init", "bias_init"):
        v = getattr(args, name) or doc.get(name)
        if v:
            plan[name] = v
    return plan


def load_table(
    path: str,
    target: str | None,
    features: str | None,
    *,
    drop_na: bool = False,
    encoding: str = "utf-8",
    categorical: str | None = None,
    numeric: str | None = None,
    max_categories: int = 100,
    missing_indicator: bool = False,
):
    """Read a CSV/TSV/Parquet file into numeric ``(x, y, feature_names, target_names)``.

    ``target`` and ``features`` are comma-separated column names. The file is read as
    ``jaxreg fit`` reads it (``tabular.load_frame``: the same formats, checks and messages;
    rows counted from 1; a constant target is refused), and its text columns are one-hot
    encoded and missing numbers imputed by a ``TablePreprocessor`` (``categorical`` and
    ``numeric`` comma-separated, as ``jaxreg fit``'s options). Unlike ``fit``, which
    learns them from the training rows only, the sweep learns the categories and medians
    from every row (no target is read): all of its models then see the same features.
    """
    import numpy as np

    from jaxreg import tabular
    from jaxreg.preprocess import Labels, TablePreprocessor

    frame = tabular.load_frame(
        path,
        _names(target or ""),
        _names(features) if features else None,
        drop_na=drop_na,
        encoding=encoding,
        labels=tabular.Labels("--target", "--features", "--drop-na"),
    )
    if frame.n_dropped:
        print(f"Dropped {frame.n_dropped} row(s) with missing values (--drop-na).")
    labels = Labels(
        "--categorical",
        "--numeric",
        "--max-categories",
        "the features (--features)",
        where=tabular.row_namer(path),
    )
    prep = TablePreprocessor(
        categorical=_names(categorical) if categorical else None,
        numeric=_names(numeric) if numeric else None,
        missing_indicator=missing_indicator,
        max_categories=max_categories,
    ).fit(frame.x, labels=labels)
    x = prep.transform(frame.x).to_numpy(np.float32)
    assert frame.y is not None
    return x, frame.y.astype(np.float32), list(prep.feature_names_out_), frame.target_names


def check_args(args) -> None:
    """Options checked before any work: one line naming the option, the rule and the value."""
    vf = args.val_fraction
    if not (math.isfinite(vf) and 0 < vf < 1):
        raise _usage(
            f"--val-fraction must be a float in (0, 1): the sweep needs validation "
            f"rows. Got {vf!r}."
        )
    if not 0 <= args.split_seed < 2**32:
        raise _usage(f"--split-seed must be an integer in [0, 4294967295]. Got {args.split_seed}.")
    from jaxreg.files import check_output_folder

    check_output_folder(args.out, "--out")  # before the sweep, not after it


def _check_split(n: int, val_fraction: float, split_seed: int) -> None:
    from jaxreg.data import training_split

    _, train, val = training_split(n, val_fraction, split_seed)  # the rows sweep holds out
    if len(val) < 1 or len(train) < 1:
        raise _usage(
            f"--val-fraction {val_fraction} of {n} rows holds out {len(val)} row(s) "
            f"and leaves {len(train)} for training; each needs at least 1. Change "
            "--val-fraction or add rows."
        )


# ------------------------------------------------------------------ running


def run(args: argparse.Namespace) -> int:
    if bool(args.lecture) == bool(args.data):
        raise _usage(
            "jaxreg sweep needs exactly one data source: --data FILE --target COL, or --lecture."
        )
    check_args(args)
    plan = build_plan(args)
    import time

    from jaxreg.data import lecture_data
    from jaxreg.sweeps import noise_floor, sweep

    floor = None
    if args.lecture:
        data = lecture_data()
        floor = noise_floor(data[2], data[3])
        feats, targets = ["x"], ["y"]
        standardize = False
    else:
        x, y, feats, targets = load_table(
            args.data,
            args.target,
            args.features,
            drop_na=args.drop_na,
            encoding=args.encoding,
            categorical=args.categorical,
            numeric=args.numeric,
            max_categories=args.max_categories,
            missing_indicator=args.missing_indicator,
        )
        _check_split(len(x), args.val_fraction, args.split_seed)
        data = (x, y)
        standardize = not args.no_standardize
    t0 = time.perf_counter()
    res = sweep(
        data,
        standardize=standardize,
        val_fraction=args.val_fraction,
        split_seed=args.split_seed,
        noise_floor=floor,
        **plan,
    )
    wall = time.perf_counter() - t0
    import jax

    if jax.process_index():  # a multi-process sweep: process 0 writes, the others wait
        _wait_for_all()
        return 0
    out = pathlib.Path(args.out)
    files = _write_outputs(out, res)
    if args.ensemble_plot or args.lecture:
        files.append(
            _ensemble_plot(out / "ensemble.png", res, feats, targets, lecture=args.lecture)
        )
    _print(res, args, plan, wall)
    print(f"Wrote {', '.join(p.name for p in files)} into {out}/")
    _wait_for_all()
    return 0


def _wait_for_all() -> None:
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("jaxreg sweep: written")


def _columns(table) -> list[str]:
    grid = [
        c for c in table.columns if c not in FIRST + STATS + ["config", "val_mse_min", "compile_s"]
    ]
    return [c for c in FIRST + grid + STATS if c in table.columns]


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.6g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.6f}".rstrip("0")
    return str(v)


def markdown(table) -> str:
    cols = _columns(table)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _write_outputs(out: pathlib.Path, res) -> list:
    from jaxreg import plots

    table = res.table
    files = [plots.write_text(out / "sweep.csv", table.to_csv(index=False))]
    md = markdown(table)
    if res.noise_floor is not None:
        md += (
            f"\nNoise floor (validation MSE of sqrt(x) + sin(x)): {res.noise_floor:.6f}; "
            "gap_pct is each row's mean validation MSE above it.\n"
        )
    files.append(plots.write_text(out / "sweep.md", md))
    files.append(_ci_plot(out / "sweep.png", res))
    return files


def _label(r) -> str:
    grid = [c for c in _columns(r.to_frame().T) if c not in FIRST + STATS]
    parts = [f"{r['architecture']} {r['activation']} {r['optimizer']}/{r['schedule']}"]
    parts += [f"{c}={_fmt(r[c])}" for c in grid]
    return " ".join(parts)


def _ci_plot(path: pathlib.Path, res):
    import numpy as np

    from jaxreg import plots

    t = res.table
    n = len(t)
    fig, ax = plots.figure(width=8.0, height=max(2.5, 0.32 * n + 1.4))
    ypos = np.arange(n)[::-1]
    mean = t["val_mse_mean"].to_numpy(float)
    low = t["val_mse_ci_low"].to_numpy(float)
    high = t["val_mse_ci_high"].to_numpy(float)
    err = np.vstack([np.nan_to_num(mean - low), np.nan_to_num(high - mean)])
    colors = ["tab:red" if i == int(res.best["config"]) else "tab:blue" for i in range(n)]
    for i in range(n):
        ax.errorbar(
            mean[i], ypos[i], xerr=err[:, i : i + 1], fmt="none", ecolor=colors[i], capsize=3
        )
    ax.scatter(mean, ypos, c=colors, zorder=3, s=18)
    if res.noise_floor is not None:
        ax.axvline(
            res.noise_floor, color="gray", ls=":", label=f"noise floor {res.noise_floor:.6f}"
        )
        ax.legend(loc="best", fontsize=8)
    ax.set_yticks(ypos, [_label(r) for _, r in t.iterrows()], fontsize=7)
    ax.set_xlabel(f"validation MSE: mean over {len(res.seeds)} seeds, 95% CI (Student t)")
    ax.set_title("Sweep (best in red)")
    return plots.save(fig, path)


def _ensemble_plot(path: pathlib.Path, res, feats, targets, lecture: bool):
    import numpy as np

    from jaxreg import plots
    from jaxreg.data import lecture_function

    d = res.data
    xv, yv = np.asarray(d.x_val), np.asarray(d.y_val)
    fig, ax = plots.figure()
    label = f"{res.best['architecture']} {res.best['activation']}"
    if xv.shape[1] == 1:
        x_all = np.concatenate([np.asarray(d.x), xv])
        grid = np.linspace(x_all.min(), x_all.max(), 400, dtype=np.float32).reshape(-1, 1)
        mean, std = res.predict(grid)
        g, m, s = grid[:, 0], mean[:, 0], std[:, 0]
        ax.scatter(xv[:, 0], yv[:, 0], color="red", alpha=0.35, s=10, label="validation data")
        ax.fill_between(
            g, m - 2 * s, m + 2 * s, color="tab:blue", alpha=0.3, label="±2 std over members"
        )
        ax.plot(g, m, color="black", label=f"ensemble mean ({len(res.seeds)} members)")
        if lecture:
            ax.plot(
                g,
                np.asarray(lecture_function(g)),
                color="tab:green",
                ls="--",
                label="sqrt(x) + sin(x)",
            )
        ax.set_xlabel(feats[0])
        ax.set_ylabel(targets[0])
    else:
        mean, std = res.predict(xv)
        ax.errorbar(
            yv[:, 0],
            mean[:, 0],
            yerr=2 * std[:, 0],
            fmt="o",
            ms=3,
            alpha=0.6,
            label="ensemble mean ±2 std",
        )
        lo, hi = float(yv[:, 0].min()), float(yv[:, 0].max())
        ax.plot([lo, hi], [lo, hi], color="gray", ls=":", label="y = x")
        ax.set_xlabel(f"{targets[0]} (validation)")
        ax.set_ylabel(f"predicted {targets[0]}")
    ax.set_title(f"Deep ensemble of the best configuration: {label}")
    ax.legend(fontsize=8)
    return plots.save(fig, path)


def reproduce_command(res, args) -> str:
    """The ``jaxreg sweep`` command that trains only the best configuration."""
    b = res.best
    parts = ["jaxreg", "sweep"]
    if args.lecture:
        parts.append("--lecture")
    else:
        parts += ["--data", args.data, "--target", args.target]
        if args.features:
            parts += ["--features", args.features]
        if args.val_fraction != 0.2:
            parts += ["--val-fraction", str(args.val_fraction)]
        if args.split_seed:
            parts += ["--split-seed", str(args.split_seed)]
        if args.no_standardize:
            parts.append("--no-standardize")
        if getattr(args, "drop_na", False):
            parts.append("--drop-na")
        encoding = getattr(args, "encoding", "utf-8")
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            parts += ["--encoding", encoding]
    spec = res.best_spec
    hidden = ",".join(str(w) for w in spec.layer_sizes[1:-1])
    parts += [
        "--hidden",
        hidden,
        "--activation",
        b["activation"],
        "--optimizer",
        b["optimizer"],
        "--schedule",
        b["schedule"],
    ]
    if spec.init != "he_normal":
        parts += ["--init", spec.init]
    if spec.bias_init != "ones":
        parts += ["--bias-init", spec.bias_init]
    hp = res.best_hparams
    defaults = type(hp)()
    for opt, field in HP_OPTIONS.items():
        v = float(getattr(hp, field))
        if field == "learning_rate" or v != float(getattr(defaults, field)):
            parts += [f"--{opt.replace('_', '-')}", f"{v:g}"]
    parts += ["--epochs", str(res.best_config.epochs), "--seeds", str(len(res.seeds))]
    return shlex.join(parts)


def _print(res, args, plan, wall: float) -> None:
    table = res.table
    cols = _columns(table)
    title = (
        f"Sweep: {len(table)} configuration(s) × {len(res.seeds)} seed(s), {plan['epochs']} epochs"
    )
    if args.plain:
        print(title)
        print(table[cols].to_string(index=False))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for c in cols:
            left = c in ("architecture", "activation", "optimizer", "schedule")
            t.add_column(SHORT.get(c, c), justify="left" if left else "right")
        best = int(res.best["config"])
        for _, r in table.iterrows():
            t.add_row(
                *(f"{r[c]:.2f}" if c in ("gap_pct", "time_s") else _fmt(r[c]) for c in cols),
                style="bold green" if int(r["config"]) == best else None,
            )
        console = Console(highlight=False)
        if not console.is_terminal:  # pipes and files: do not squeeze columns to 80
            console = Console(highlight=False, width=max(120, 11 * len(cols)))
        console.print(t)
    b = res.best
    print(
        f"Best: {_label(b)} ({b['n_params']} parameters): validation MSE "
        f"{b['val_mse_mean']:.6f} ± {b['val_mse_std']:.6f} (std), 95% CI "
        f"[{b['val_mse_ci_low']:.6f}, {b['val_mse_ci_high']:.6f}] over {b['n_seeds']} seeds"
    )
    if res.noise_floor is not None:
        print(
            f"Noise floor (validation MSE of the true function sqrt(x) + sin(x)): "
            f"{res.noise_floor:.6f}; best is {b['gap_pct']:.2f}% above it "
            f"(CI {100 * (b['val_mse_ci_low'] / res.noise_floor - 1):.2f}% to "
            f"{100 * (b['val_mse_ci_high'] / res.noise_floor - 1):.2f}%)."
        )
    print(f"Reproduce the best configuration: {reproduce_command(res, args)}")
    print(
        f"Time: {res.compile_seconds:.1f} s compiling, {res.run_seconds:.1f} s training "
        f"({len(table) * len(res.seeds)} models), {wall:.1f} s in all."
    )
