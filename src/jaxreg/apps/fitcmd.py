"""``jaxreg fit``, ``jaxreg predict`` and ``jaxreg report``: the real-data workflow.

``fit DATA --target COL --out MODEL_DIR`` reads a CSV/Parquet file, holds out validation
rows, standardizes, trains an ``MLPRegressor`` (early stopping with the best epoch
restored) in equal compiled chunks with a live progress bar, optionally writes atomic
checkpoints (``--checkpoint-every N``; ``--resume`` continues after a kill and ends with the
parameters of an uninterrupted run), saves the model, writes the report and prints
validation R², MSE and MAE next to scikit-learn's ``Ridge`` and
``HistGradientBoostingRegressor`` baselines, and says so when the network loses.

``predict MODEL_DIR DATA`` writes one row of predictions per input row (``--std`` adds the
ensemble standard deviation); ``report MODEL_DIR`` regenerates the report.

Every bad input (a file, a column, an option) is found before anything is written.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

from jaxreg.apps.options import add_command


def _labels():
    from jaxreg.tabular import Labels

    return Labels("--target", "--features", "--drop-na")


def add_parser(sub) -> None:
    add_command(sub, "fit", run_fit)
    add_command(sub, "predict", run_predict)
    add_command(sub, "report", run_report)


# ------------------------------------------------------------------ option checks


def _usage(msg: str):
    from jaxreg.errors import UsageError

    return UsageError(msg)


def _parse_hidden(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("none", "", "linear"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = None
    if not sizes or any(s < 1 for s in sizes):
        raise _usage(
            f"--hidden must be comma-separated positive integers such as 64,64. Got {text!r}."
        )
    return sizes


def _batch_size(text: str):
    """``--batch-size``: "auto", 0 (full batch: None) or a number of rows."""
    text = text.strip().lower()
    return "auto" if text == "auto" else (int(text) or None)


def _check_fit_args(args) -> dict:
    from jaxreg.model import ACTIVATIONS
    from jaxreg.optim import OPTIMIZERS

    hidden = _parse_hidden(args.hidden)
    if args.activation not in ACTIVATIONS:
        raise _usage(f"--activation must be one of {sorted(ACTIVATIONS)}. Got {args.activation!r}.")
    if args.optimizer not in OPTIMIZERS:
        raise _usage(f"--optimizer must be one of {list(OPTIMIZERS)}. Got {args.optimizer!r}.")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise _usage(f"--lr must be a float in (0, inf). Got {args.lr!r}.")
    if not (math.isfinite(args.l2) and args.l2 >= 0):
        raise _usage(f"--l2 must be a float in [0, inf). Got {args.l2!r}.")
    if args.epochs < 1:
        raise _usage(f"--epochs must be an integer >= 1. Got {args.epochs}.")
    batch = args.batch_size.strip().lower()
    if batch != "auto" and not (batch.isdigit()):
        raise _usage(
            f"--batch-size must be 'auto' or an integer >= 0 (0 for full batch). "
            f"Got {args.batch_size!r}."
        )
    if not (0 <= args.val_fraction < 1):
        raise _usage(f"--val-fraction must be a float in [0, 1). Got {args.val_fraction!r}.")
    if args.patience < 0:
        raise _usage(
            f"--patience must be an integer >= 0 (0 turns early stopping off). Got {args.patience}."
        )
    if not (math.isfinite(args.tol) and args.tol >= 0):
        raise _usage(f"--tol must be a float in [0, inf). Got {args.tol!r}.")
    if args.max_fun < 1:
        raise _usage(f"--max-fun must be an integer >= 1. Got {args.max_fun}.")
    if args.patience and args.val_fraction == 0:
        raise _usage(
            "--patience needs validation rows: set --val-fraction above 0 or "
            "--patience 0. Got --val-fraction 0."
        )
    if args.ensemble < 1:
        raise _usage(f"--ensemble must be an integer >= 1. Got {args.ensemble}.")
    if not 0 <= args.seed < 2**32:
        raise _usage(f"--seed must be an integer in [0, 4294967295]. Got {args.seed}.")
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise _usage(f"--checkpoint-every must be an integer >= 1. Got {args.checkpoint_every}.")
    features = None
    if args.features is not None:
        features = [f.strip() for f in args.features.split(",") if f.strip()]
        if not features:
            raise _usage(f"--features must name at least one column. Got {args.features!r}.")
    return {"hidden": hidden, "features": features}


def _check_paths(args) -> tuple[pathlib.Path, pathlib.Path]:
    """Every path check that can come before reading and training: the model folder and the
    checkpoint folder must be writable and hold nothing jaxreg must not touch."""
    from jaxreg import files, store
    from jaxreg.checkpoint import check_checkpoint_folder

    out = pathlib.Path(args.out)
    try:
        store.check_target(out, overwrite=args.overwrite)
    except FileExistsError:
        raise _usage(
            f"--out {str(out)!r} already holds a jaxreg model; pass --overwrite to replace it."
        ) from None
    except ValueError as exc:
        raise _usage(f"--out: {exc}") from None
    files.check_output_folder(out, "--out")
    absolute = out.resolve()
    ckpt = (
        pathlib.Path(args.checkpoint_dir)
        if args.checkpoint_dir
        else absolute.with_name(absolute.name + ".checkpoint")
    )
    if ckpt.resolve() == absolute:
        raise _usage(f"--checkpoint-dir must differ from --out. Got {str(ckpt)!r} for both.")
    if args.checkpoint_every is not None or args.resume:
        doc = check_checkpoint_folder(ckpt)
        if doc is not None and not args.resume:
            raise _usage(
                f"--checkpoint-dir {str(ckpt)!r} holds the checkpoint of an earlier "
                "run; pass --resume to continue it, or choose another folder."
            )
        files.check_output_folder(ckpt, "--checkpoint-dir")
    return out, ckpt


def _chunk_epochs(epochs: int, every: int | None) -> int:
    """Epochs per compiled chunk: divides ``epochs`` (and ``every``); about 50 chunks."""
    if every is not None:
        return math.gcd(epochs, every)
    target = max(1, epochs // 50)
    return max(c for c in range(1, target + 1) if epochs % c == 0)


# ------------------------------------------------------------------ fit


def run_fit(args: argparse.Namespace) -> int:
    checked = _check_fit_args(args)
    out, ckpt = _check_paths(args)

    import numpy as np

    from jaxreg import interrupts, store, tabular
    from jaxreg.data import training_split

    table = tabular.load_xy(
        args.data,
        args.target,
        checked["features"],
        drop_na=args.drop_na,
        dtype=np.float64,
        encoding=args.encoding,
        labels=_labels(),
    )
    interrupts.check()
    if table.n_dropped:
        print(f"Dropped {table.n_dropped} row(s) with missing values (--drop-na).")
    n = len(table.x)
    _, tr, val = training_split(n, args.val_fraction, args.seed)  # as the estimator draws it
    if len(val) and len(tr) < 2:
        raise _usage(
            f"--val-fraction {args.val_fraction} leaves {len(tr)} training row(s) of "
            f"{n}; at least 2 are needed. Lower --val-fraction or add rows."
        )
    if args.val_fraction > 0 and len(val) < 1:
        raise _usage(f"--val-fraction {args.val_fraction} holds out no rows of {n}.")
    print(
        f"Read {args.data}: {n} rows, {len(table.feature_names)} feature(s) -> target(s) "
        f"{', '.join(table.target_names)}; {len(tr)} training and {len(val)} validation "
        "rows."
    )
    model = _train(args, checked, table, tr, ckpt)
    interrupts.check()
    _print_timing(model)
    metrics = _metrics(model, table, tr, val, seed=args.seed)
    _print_metrics(metrics)
    for line in verdict(metrics):
        print(line)
    document = model.document(
        run={
            "data": str(pathlib.Path(args.data).resolve()),
            "targets": table.target_names,
            "features": table.feature_names,
            "drop_na": bool(args.drop_na),
            "split": {"seed": args.seed, "validation_fraction": args.val_fraction, "n_rows": n},
            "metrics": metrics,
            "compile_seconds": model.compile_seconds_,
            "run_seconds": model.run_seconds_,
        }
    )
    # Everything that can fail happens before the commit; the commit is the last step.
    with store.ModelWriter(out, overwrite=args.overwrite) as writer:
        report = None
        if not args.no_report:
            from jaxreg.report import write_report

            report = writer.stage_folder()
            write_report(document.saved, out_dir=report)
        with interrupts.deferred():
            writer.commit(document, report=report)
            print(f"Saved the model to {out}/")
            if report is not None:
                print(f"Report: {out / store.REPORT_LINK / 'report.html'}")
            if args.checkpoint_every is not None or args.resume:
                _clear_checkpoint(ckpt)
    return 0


def _clear_checkpoint(ckpt: pathlib.Path) -> None:
    """The model is committed: the checkpoint has served. A failure to remove it is a
    warning, not a failed command."""
    from jaxreg.checkpoint import clear_checkpoint

    try:
        clear_checkpoint(ckpt)
    except (OSError, ValueError) as exc:
        print(f"warning: could not remove the checkpoint in {ckpt}: {exc}", file=sys.stderr)


def _train(args, checked, table, tr, ckpt):
    """Fit ``MLPRegressor`` through its public API: a progress bar and the checkpointer are
    callbacks of its chunked run."""
    import warnings

    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning

    from jaxreg.checkpoint import Checkpointer, read_checkpoint_meta
    from jaxreg.estimator import MLPRegressor

    model = MLPRegressor(
        hidden_layer_sizes=checked["hidden"],
        activation=args.activation,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        l2=args.l2,
        epochs=args.epochs,
        batch_size=_batch_size(args.batch_size),
        validation_fraction=args.val_fraction,
        # --patience is Keras's: stop after that many epochs without improvement, which
        # is scikit-learn's n_iter_no_change = patience - 1; 0 trains every epoch.
        early_stopping=bool(args.patience),
        n_iter_no_change=max(args.patience - 1, 0),
        tol=args.tol if args.patience else None,
        max_fun=args.max_fun,
        n_ensemble=args.ensemble,
        random_state=args.seed,
    )
    x = pd.DataFrame(table.x, columns=table.feature_names)
    y = (
        pd.Series(table.y[:, 0], name=table.target_names[0])
        if table.y.shape[1] == 1
        else pd.DataFrame(table.y, columns=table.target_names)
    )
    chunk = _chunk_epochs(args.epochs, args.checkpoint_every)
    checkpoint = None
    if args.checkpoint_every is not None or args.resume:
        doc = read_checkpoint_meta(ckpt) if args.resume else None
        if args.resume and doc is None:
            print(f"No checkpoint in {ckpt}; starting from the beginning.")
        start = (doc or {}).get("meta", {}).get("epoch")
        if isinstance(start, int) and start > 0:
            chunk = math.gcd(chunk, start)  # chunks must line up with the checkpoint
        every = args.checkpoint_every
        if every is not None and every % chunk:
            every = None
        checkpoint = Checkpointer(ckpt, every=every, resume=args.resume)
    from jaxreg.data import Standardizer

    scale2 = Standardizer.fit(table.y[tr]).scale ** 2  # as the estimator standardizes y
    bar = _ProgressBar(args.epochs, args.ensemble, scale2, quiet=args.quiet)
    with bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y, callbacks=[bar.update], chunk_epochs=chunk, checkpoint=checkpoint)
    for w in caught:  # one line each, not Python's file:line form
        print(f"Warning: {w.message}", file=sys.stderr)
    if checkpoint is not None and checkpoint.resumed_from is not None:
        print(f"Resumed from the checkpoint in {ckpt} (epoch {checkpoint.resumed_from}).")
    return model


class _ProgressBar:
    """Progress on stderr: "compiling" until the first chunk is done, then epoch, train and
    validation MSE and the ETA as a rich bar on a terminal, or as a plain line at every
    tenth of the epochs when stderr is a file or a pipe (a log)."""

    def __init__(self, epochs: int, members: int, scale2, quiet: bool = False, plain=None):
        """``scale2``: the squared scale of the targets, so that the standardized MSE the
        run records shows in the targets' own units. ``plain``: None decides from
        whether stderr is a terminal."""
        self.epochs, self.members, self.quiet = epochs, members, quiet
        self.scale2 = scale2
        self.progress = None
        self.plain = (not sys.stderr.isatty()) if plain is None else plain
        self.next_line = 0

    def __enter__(self):
        if self.quiet:
            return self
        if self.plain:
            print(f"compiling the training loop ({self.epochs} epochs) ...", file=sys.stderr)
            return self
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn(
                "epoch {task.fields[epoch]}  train MSE {task.fields[train]}  "
                "val MSE {task.fields[val]}  ETA"
            ),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.progress.__enter__()
        self.task = self.progress.add_task(
            "compiling", total=self.epochs * self.members, epoch="0", train="-", val="-"
        )
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def update(self, progress) -> None:
        """One chunk done: ``progress`` carries the member axis first."""
        from jaxreg import interrupts

        interrupts.check()  # an interrupt swallowed by a callback inside JAX ends it here
        if self.quiet:
            return
        import numpy as np

        h = progress.history
        train = val = "-"
        if h.epoch.shape[-1]:
            # Members stopped early record NaN from then on: average the others.
            last_train = np.asarray(h.train_mse[:, -1], np.float64) * self.scale2
            if np.isfinite(last_train).any():
                train = f"{float(np.nanmean(last_train)):.4g}"
            last_val = np.asarray(h.val_mse[:, -1], np.float64) * self.scale2
            if np.isfinite(last_val).any():
                val = f"{float(np.nanmean(last_val)):.4g}"
        epochs = np.asarray(progress.state.epoch).reshape(-1)
        stopped = np.asarray(progress.state.stopped).reshape(-1)
        # A member that stopped early counts as done.
        done = int(np.where(stopped | (epochs >= self.epochs), self.epochs, epochs).sum())
        desc = f"{self.members} members" if self.members > 1 else "training"
        if stopped.any():
            desc += (
                " (stopped early)"
                if self.members == 1
                else f" ({int(stopped.sum())} stopped early)"
            )
        if self.plain:
            finished = done >= self.epochs * self.members
            if progress.epoch >= self.next_line or finished:
                self.next_line = progress.epoch + max(1, self.epochs // 10)
                print(
                    f"{desc}: epoch {progress.epoch}/{self.epochs}  train MSE {train}  "
                    f"val MSE {val}",
                    file=sys.stderr,
                )
            return
        assert self.progress is not None
        self.progress.update(
            self.task,
            completed=done,
            description=desc,
            epoch=f"{progress.epoch}/{self.epochs}",
            train=train,
            val=val,
        )


def _print_timing(model) -> None:
    best = model.best_epoch_
    best = best if isinstance(best, int) else ", ".join(str(int(b)) for b in best)
    print(
        f"Compile {model.compile_seconds_:.2f} s, training {model.run_seconds_:.2f} s: "
        f"{model.n_iter_} epoch(s), best epoch {best}."
    )


HGB_ROWS = 100_000  # HistGradientBoosting baseline: at most this many training rows


def _metrics(model, table, tr, val, seed: int = 0) -> dict:
    """Validation (or training, without validation rows) metrics of the network and of two
    scikit-learn baselines fitted on the same training rows: Ridge on standardized
    features, and HistGradientBoosting (on a random subsample of ``HGB_ROWS`` rows of a
    larger table, said in its name)."""
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jaxreg.report import metrics_by_target

    rows = val if len(val) else tr
    x, y = table.x, table.y
    which = "validation" if len(val) else "training"

    def predict(est, fit_rows):
        target = y[fit_rows] if y.shape[1] > 1 else y[fit_rows, 0]
        pred = est.fit(x[fit_rows], target).predict(x[rows])
        return np.asarray(pred).reshape(len(rows), -1)

    frame = pd.DataFrame(x[rows], columns=table.feature_names)
    pred = np.asarray(model.predict(frame)).reshape(len(rows), -1)
    ridge = predict(make_pipeline(StandardScaler(), Ridge(alpha=1.0)), tr)
    hgb_rows, hgb_name = tr, f"HistGradientBoosting baseline ({which})"
    if len(tr) > HGB_ROWS:
        hgb_rows = np.sort(np.random.default_rng(seed).choice(tr, HGB_ROWS, replace=False))
        hgb_name = (
            f"HistGradientBoosting baseline ({which}; trained on {HGB_ROWS:,} of the "
            f"{len(tr):,} training rows)"
        )
    hgb = HistGradientBoostingRegressor(random_state=seed)
    hgb_pred = predict(hgb if y.shape[1] == 1 else MultiOutputRegressor(hgb), hgb_rows)
    names = table.target_names
    return {
        **metrics_by_target(f"network ({which})", y[rows], pred, names),
        **metrics_by_target(f"Ridge baseline ({which})", y[rows], ridge, names),
        **metrics_by_target(hgb_name, y[rows], hgb_pred, names),
    }


def verdict(metrics: dict) -> list[str]:
    """One plain line per target on which a baseline has a higher R² than the network.

    Names are ``"<model> (<rows>)"`` with ``", <target>"`` appended for several targets."""
    lines = []
    for name, net in metrics.items():
        if not name.startswith("network (") or net["r2"] is None:
            continue
        rows, _, target = name[len("network (") :].partition(")")
        better = [
            (other.split(" baseline")[0], m["r2"])
            for other, m in metrics.items()
            if " baseline (" in other
            and other.endswith(f"){target}")
            and m["r2"] is not None
            and m["r2"] > net["r2"]
        ]
        if better:
            which = f" for {target[2:]}" if target else ""
            others = " and ".join(f"{b} ({r2:.4f})" for b, r2 in better)
            lines.append(
                f"The network loses on the {rows} rows{which}: its R² {net['r2']:.4f} is "
                f"below {others}."
            )
    return lines


def _print_metrics(metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    if any("(validation)" in name for name in metrics):
        title = (
            "Metrics on the held-out rows, original units (early stopping also watched these rows)"
        )
    else:
        title = (
            "Metrics on the training rows, original units (no rows were held out: --val-fraction 0)"
        )
    t = Table(title=title)
    for col in ("model", "R²", "MSE", "MAE"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, m in metrics.items():
        r2 = "n/a" if m["r2"] is None else f"{m['r2']:.4f}"
        t.add_row(name, r2, f"{m['mse']:.5g}", f"{m['mae']:.5g}")
    Console(width=100).print(t)


# ------------------------------------------------------------------ predict


def run_predict(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    if args.out is not None:
        target = pathlib.Path(args.out)
        if target.is_dir():
            raise _usage(f"--out must be a file. Got {args.out!r}, which is a folder.")
        if target.exists() and os.path.samefile(target, args.data):
            raise _usage(
                f"--out must not be the input file. Got {args.out!r} for both DATA and "
                "--out; choose another file."
            )
        if not target.parent.is_dir():
            raise _usage(f"--out {args.out!r}: the folder {str(target.parent)!r} does not exist.")

    from jaxreg import tabular
    from jaxreg.estimator import load

    model = load(args.model)
    feats = getattr(model, "feature_names_in_", None)
    n_in = model.n_features_in_
    if feats is None:
        df = tabular.read_table(args.data, encoding=args.encoding)
        if df.shape[1] != n_in:
            raise _usage(
                f"The model has no feature names, so DATA must have exactly its "
                f"{n_in} feature column(s). Got {df.shape[1]} column(s) in "
                f"{args.data!r}."
            )
        feats = list(df.columns)
    feats = [str(f) for f in feats]
    table = tabular.load_features(
        args.data,
        feats,
        drop_na=args.drop_na,
        dtype=np.float64,
        labels=_labels(),
        encoding=args.encoding,
    )
    n_rows = len(table.rows) + table.n_dropped
    targets = list(
        getattr(model, "target_names_in_", None) or [f"y{i}" for i in range(model.n_outputs_)]
    )
    import pandas as pd

    X = pd.DataFrame(table.x, columns=feats)
    mean, std = model.predict(X, return_std=True)
    mean = np.asarray(mean).reshape(len(X), -1)
    std = np.asarray(std).reshape(len(X), -1)
    cols = _kept_columns(args, n_rows, targets)
    for j, name in enumerate(targets):
        full = np.full(n_rows, np.nan)
        full[table.rows] = mean[:, j]
        cols[name] = full
        if args.std:
            s = np.full(n_rows, np.nan)
            s[table.rows] = std[:, j]
            cols[f"{name}_std"] = s
    text = pd.DataFrame(cols).to_csv(index=False, float_format="%.9g")
    if table.n_dropped:
        print(
            f"{table.n_dropped} row(s) with missing features got empty predictions (--drop-na).",
            file=sys.stderr,
        )
    if args.out is None:
        sys.stdout.write(text)
    else:
        from jaxreg.plots import write_text

        path = write_text(args.out, text)
        print(f"Wrote {n_rows} prediction row(s) to {path}")
    return 0


def _kept_columns(args, n_rows: int, targets: list[str]) -> dict:
    """``--keep`` columns of the input file, every row, as they are (identifiers)."""
    keep = args.keep or []
    if not keep:
        return {}
    from jaxreg import tabular

    df = tabular.read_table(args.data, encoding=args.encoding)
    outputs = set(targets) | {f"{t}_std" for t in targets}
    for col in keep:
        if col not in df.columns:
            raise _usage(
                f"--keep must name a column of {args.data!r}. Got {col!r}; its columns are "
                f"{list(map(str, df.columns))}."
            )
        if col in outputs:
            raise _usage(
                f"--keep {col!r} would be overwritten by the prediction column of the same "
                "name; keep another column or rename it in the file."
            )
    if len(set(keep)) != len(keep):
        raise _usage(f"--keep must name each column once. Got {keep!r}.")
    assert len(df) == n_rows  # the file's data rows, as the features were read
    return {col: df[col].to_numpy() for col in keep}


# ------------------------------------------------------------------ report


def run_report(args: argparse.Namespace) -> int:
    from jaxreg.report import column_names, read_run_info, write_report
    from jaxreg.store import load_model

    if args.feature is not None:
        run = read_run_info(args.model)
        feats, _ = column_names(load_model(args.model), run)
        if args.feature not in feats:
            raise _usage(
                f"--feature must be one of the model's features {feats}. Got {args.feature!r}."
            )
        if args.data is None and not run.get("data"):
            raise _usage(
                f"--feature needs data to plot against: pass --data. Got "
                f"--feature {args.feature!r} and no data."
            )
    if args.out is not None:
        from jaxreg import files

        files.check_output_folder(args.out, "--out")
    rep = write_report(args.model, data=args.data, out_dir=args.out, feature=args.feature)
    print(f"Wrote {len(rep.images)} image(s) and {rep.html}")
    return 0
