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
import contextlib
import math
import pathlib
import sys

from jaxreg.apps.options import add_command


def _labels():
    from jaxreg.tabular import Labels

    return Labels("--target", "--features", "--drop-na")


def add_parser(sub) -> None:
    parser = add_command(sub, "fit", run_fit, "fit", "table", "distributed")
    parser.set_defaults(small_loop=small_loop)
    add_command(sub, "predict", run_predict)
    add_command(sub, "report", run_report)


# Measured in benchmarks/README.md ("The options the CLI sets"): the single-kernel loop
# options win by a quarter at 200 rows x 32 units a step, tie at 1024 x 32, and lose by a
# quarter at 1024 x 64 (multi-threaded matrix products pay from there).
SMALL_STEP = 32 * 1024
AUTO_WIDEST = 64  # max(jaxreg.estimator.AUTO_WIDE) (a test keeps them equal; no JAX here)


def small_loop(args) -> bool:
    """Whether this fit's steps are small enough for the CLI's small-loop XLA options:
    rows per step (full batch: the estimated rows) times the widest layer, from what is known
    before JAX starts (ensemble members train one after another on a device, so their
    count does not change a step's size)."""
    from jaxreg.tabular import estimate_rows

    try:
        hidden = _parse_hidden(args.hidden)
    except Exception:
        return True  # the option check reports it
    batch = str(args.batch_size).strip().lower()
    rows = None
    if batch in ("0", "auto") or args.optimizer == "lbfgs":
        rows = estimate_rows(args.data)
        if rows is None:
            return True
    # "auto" widths depend on the features after preprocessing, unknown here: assume the
    # wide network's, the larger step.
    widths: tuple[int, ...] = (AUTO_WIDEST,) if isinstance(hidden, str) else (hidden or (1,))
    if args.optimizer == "lbfgs" or batch == "0":
        per_step = rows or 0
    elif batch == "auto":
        per_step = min(200, rows or 200)
    else:
        per_step = int(batch) if batch.isdigit() else 200
    return per_step * max(widths) <= SMALL_STEP


# ------------------------------------------------------------------ option checks


def _usage(msg: str):
    from jaxreg.errors import UsageError

    return UsageError(msg)


def _parse_hidden(text: str) -> tuple[int, ...] | str:
    """``--hidden``: "auto" (the estimator's default), widths, or none for a linear model."""
    if text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() in ("none", "", "linear"):
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = None
    if not sizes or any(s < 1 for s in sizes):
        raise _usage(
            f"--hidden must be 'auto' or comma-separated positive integers such as 64,64. "
            f"Got {text!r}."
        )
    return sizes


def _batch_size(text: str):
    """``--batch-size``: "auto", 0 (full batch: None) or a number of rows."""
    text = text.strip().lower()
    return "auto" if text == "auto" else (int(text) or None)


def _check_fit_args(args) -> dict:
    from jaxreg.model import ACTIVATIONS
    from jaxreg.optim import OPTIMIZERS, SCHEDULES

    hidden = _parse_hidden(args.hidden)
    if args.activation not in ACTIVATIONS:
        raise _usage(f"--activation must be one of {sorted(ACTIVATIONS)}. Got {args.activation!r}.")
    if args.optimizer not in OPTIMIZERS:
        raise _usage(f"--optimizer must be one of {list(OPTIMIZERS)}. Got {args.optimizer!r}.")
    if args.schedule not in SCHEDULES:
        raise _usage(f"--schedule must be one of {list(SCHEDULES)}. Got {args.schedule!r}.")
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
    if not (0 <= args.test_fraction < 1):
        raise _usage(f"--test-fraction must be a float in [0, 1). Got {args.test_fraction!r}.")
    if args.cv is not None and args.cv < 2:
        raise _usage(f"--cv must be an integer >= 2. Got {args.cv}.")
    if args.max_categories < 1:
        raise _usage(f"--max-categories must be an integer >= 1. Got {args.max_categories}.")
    return {
        "hidden": hidden,
        "features": _columns(args.features, "--features"),
        "categorical": _columns(args.categorical, "--categorical"),
        "numeric": _columns(args.numeric, "--numeric"),
    }


def _columns(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        raise _usage(f"{flag} must name at least one column. Got {text!r}.")
    return names


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


def _warning(text: str) -> None:
    """A warning as one line on stderr (from process 0 alone in a multi-process run)."""
    if _writes():
        print(f"Warning: {text}", file=sys.stderr)


@contextlib.contextmanager
def _warnings_as_lines(category: type[Warning] | None = None):
    """Record the warnings of the block (``category`` each time; default scikit-learn's
    ConvergenceWarning) and print each as one line (``_warning``) when it ends."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", category or ConvergenceWarning)
        yield
    for w in caught:
        _warning(str(w.message))


def run_fit(args: argparse.Namespace) -> int:
    checked = _check_fit_args(args)
    if not _writes():
        args.quiet = True  # process 0 shows the progress
    out, ckpt = _check_paths(args)

    import numpy as np

    from jaxreg import interrupts, store, tabular
    from jaxreg.data import holdout_split
    from jaxreg.estimator import document as model_document
    from jaxreg.preprocess import check_columns

    stream = _stream_if_too_big(args, checked)
    if stream is not None:
        return _run_fit_streamed(args, checked, stream, out, ckpt)
    frame = tabular.load_frame(
        args.data,
        args.target,
        checked["features"],
        drop_na=args.drop_na,
        encoding=args.encoding,
        labels=_labels(),
    )
    interrupts.check()
    check_columns(  # every column's kind, refused in one line before any work
        frame.x,
        checked["categorical"],
        checked["numeric"],
        args.max_categories,
        labels=_prep_labels(args.data),
    )
    if frame.n_dropped:
        print(f"Dropped {frame.n_dropped} row(s) with missing values (--drop-na).")
    n = len(frame.x)
    tr, val, test = holdout_split(n, args.val_fraction, args.test_fraction, args.seed)
    keep = np.ones(n, bool)
    keep[test] = False
    fit_rows = np.flatnonzero(keep)  # what the estimator gets; it holds out val itself
    if len(val) and len(tr) < 2:
        raise _usage(
            f"--val-fraction {args.val_fraction} leaves {len(tr)} training row(s) of "
            f"{len(fit_rows)}; at least 2 are needed. Lower --val-fraction or add rows."
        )
    if args.val_fraction > 0 and len(val) < 1:
        raise _usage(f"--val-fraction {args.val_fraction} holds out no rows of {n}.")
    if args.cv is not None and args.cv > len(fit_rows):
        raise _usage(f"--cv {args.cv} needs at least {args.cv} rows. Got {len(fit_rows)}.")
    held = f"{len(tr)} training and {len(val)} validation rows"
    if len(test):
        held += f", {len(test)} test rows (never seen in training)"
    print(
        f"Read {args.data}: {n} rows, {len(frame.feature_names)} feature column(s) -> "
        f"target(s) {', '.join(frame.target_names)}; {held}."
    )
    assert frame.y is not None  # load_frame requires the targets
    prep = _fit_preprocessor(args, checked, _take(frame.x, fit_rows))
    x = _transform(prep, frame.x)
    cv = _cross_validate(args, checked, frame, fit_rows) if args.cv else None
    y_fit = frame.y if len(fit_rows) == n else frame.y[fit_rows]
    # Python's warning filters are one global list, and scikit-learn's checks in the
    # baselines' thread save and restore it (warnings.catch_warnings): recording from
    # before that thread starts to after it ends keeps training's ConvergenceWarning a
    # recorded line whichever list a restore leaves in place.
    with _warnings_as_lines():
        beside = _Beside(
            _beside_training,
            x,
            frame.y,
            frame.target_names,
            tr,
            val,
            test,
            args.seed,
            _writes() and not args.no_report,
        )
        model = _train(args, checked, _take(x, fit_rows), y_fit, frame.target_names, ckpt)
        interrupts.check()
        _print_timing(model)
        metrics = _metrics(
            model, x, frame.y, frame.target_names, tr, val, test, seed=args.seed, baselines=beside
        )
    _print_metrics(metrics)
    for line in verdict(metrics):
        print(line)
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("tablepreprocessor", prep), ("mlpregressor", model)])
    document = model_document(
        pipeline,
        run={
            "data": str(pathlib.Path(args.data).resolve()),
            "targets": frame.target_names,
            "features": frame.feature_names,
            "drop_na": bool(args.drop_na),
            "split": {
                "seed": args.seed,
                "validation_fraction": args.val_fraction,
                "test_fraction": args.test_fraction,
                "n_rows": n,
            },
            "metrics": metrics,
            "cv": cv,
            "settings": _settings(args, checked),
            "compile_seconds": model.compile_seconds_,
            "run_seconds": model.run_seconds_,
        },
    )
    if not _writes():  # process 0 writes; the others wait for it
        _wait_for_all("jaxreg fit: saved")
        return 0
    # Everything that can fail happens before the commit; the commit is the last step.
    with store.ModelWriter(out, overwrite=args.overwrite) as writer:
        report = None
        if not args.no_report:
            from jaxreg.report import write_fit_report

            report = writer.stage_folder()
            write_fit_report(
                document.saved,
                report,
                x=x,
                y=frame.y,
                raw=frame.x,
                sets=[("training", tr), ("validation", val), ("test", test)],
                source=str(pathlib.Path(args.data).resolve()),
            )
        with interrupts.deferred():
            writer.commit(document, report=report)
            print(f"Saved the model to {out}/")
            if report is not None:
                print(f"Report: {out / store.REPORT_LINK / 'report.html'}")
            if args.checkpoint_every is not None or args.resume:
                _clear_checkpoint(ckpt)
    _wait_for_all("jaxreg fit: saved")
    return 0


def _memory_budget(args) -> int:
    """--max-memory in bytes (default: a quarter of this machine's memory)."""
    import os

    from jaxreg.stream import parse_size

    if args.max_memory is not None:
        return parse_size(args.max_memory)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _stream_if_too_big(args, checked):
    """A ``TableStream`` of the file when its used columns as float32 exceed the memory
    budget (Parquet: from its metadata; text: an estimate of its rows), or when several
    processes can each read only their row groups (a numeric, complete Parquet file and no
    option that needs the whole table); else None."""
    import jax

    from jaxreg import tabular

    budget = _memory_budget(args)
    rows = tabular.estimate_rows(args.data)
    if rows is None or pathlib.Path(args.data).suffix.lower() not in (
        ".parquet",
        ".pq",
        ".csv",
        ".tsv",
    ):
        return None
    multi = jax.process_count() > 1
    # The used columns as the file names them (a Parquet schema, a text file's header):
    # the features named, else every column but the targets. A name the file lacks is the
    # in-memory read's to report.
    names = tabular.column_names(args.data)
    wanted = list(args.target) + list(checked["features"] or [])
    if names is None or any(c not in names for c in wanted):
        return None
    used = len(wanted) if checked["features"] else len(names)
    if rows * used * 4 <= budget and not multi:
        return None
    from jaxreg.stream import TableStream

    stream = TableStream(
        args.data,
        list(args.target),
        checked["features"],
        val_fraction=args.val_fraction,
        seed=args.seed,
        test_fraction=args.test_fraction,
        categorical=checked["categorical"],
        numeric=checked["numeric"],
        missing_indicator=args.missing_indicator,
        max_categories=args.max_categories,
        drop_na=args.drop_na,
        labels=_prep_labels(args.data),
    )
    width = len(stream.feature_names) + len(stream.targets)
    if rows * width * 4 <= budget:
        needs_whole = (
            args.cv
            or args.test_fraction
            or checked["categorical"]
            or checked["numeric"]
            or args.missing_indicator
            or args.drop_na
        )
        if not multi or needs_whole or not stream.numeric_complete():
            return None
    unused = [
        flag
        for flag, on in (
            ("--cv", args.cv),
            ("--data-parallel", args.data_parallel and not multi),
        )
        if on
    ]
    if unused:
        raise _usage(
            f"{unused[0]} is not available when the table is streamed: its {rows:,} rows x "
            f"{width} columns take {_size(rows * width * 4)} as float32, more than "
            f"--max-memory ({_size(budget)}). Raise --max-memory or drop {unused[0]}."
        )
    return stream


def _size(n: int) -> str:
    """Bytes as MiB, or KiB below one MiB (a test's small budget is not "0 MiB")."""
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def _run_fit_streamed(args, checked, stream, out, ckpt) -> int:
    """``jaxreg fit`` on a table larger than the memory budget: streamed every epoch."""
    import jax
    import numpy as np
    import pandas as pd

    from jaxreg import interrupts, store
    from jaxreg.estimator import document as model_document
    from jaxreg.runner import gather_processes, gather_rows

    # Several processes: each reads its own row groups; the statistics are combined.
    stream.process_index, stream.process_count = jax.process_index(), jax.process_count()
    # The preprocessing first where the file shows it is needed: the buffers are then sized
    # by the columns the network gets (one-hot encoding widens a row). The shuffle buffer,
    # a block being read and the held-out rows share the budget (a buffered row is held
    # about four times over: raw, standardized, permuted, batched).
    budget = _memory_budget(args)

    def size() -> None:
        row = (len(stream.feature_names) + len(stream.targets)) * 8
        stream.buffer_rows = max(1 << 14, budget // (row * 4))
        stream.block_rows = max(1 << 12, min(1 << 16, stream.buffer_rows // 8))
        stream.held_rows = max(1 << 12, min(1 << 18, budget // (row * 8)))

    size()  # by the file's columns: the preprocessing pass's blocks and median samples
    stream.prepare(gather_processes)
    size()  # by the columns the network gets
    stats = stream.scan(gather_processes)
    kept_val = int(gather_processes(np.array([len(stats.x_val)], np.int64)).sum())
    print(
        f"Streaming {args.data}: {stats.n_rows:,} rows, {len(stream.raw_feature_names)} feature "
        f"column(s) -> target(s) {', '.join(stream.targets)}; {stats.n_train:,} training and "
        f"{stats.n_val:,} held-out rows"
        + (f" and {stats.n_test:,} test rows" if stats.n_test else "")
        + f" (by a hash of the row number; {kept_val:,} kept for validation), "
        f"a shuffle buffer of "
        f"{stream.buffer_rows:,} rows (--max-memory {_size(budget)})"
        + (
            f"; each of the {stream.process_count} processes reads only its own row groups."
            if stream.process_count > 1
            else "."
        )
    )
    model = _train(args, checked, stream, None, stream.targets, ckpt)
    interrupts.check()
    _print_timing(model)
    names = list(stream.targets)
    if stats.n_dropped:
        print(f"Dropped {stats.n_dropped} row(s) with missing values (--drop-na).")
    prep = stream.preprocessor
    if prep is not None:
        _say_preprocessing(prep, None)
    # Several processes: every process's kept rows (each holds its own share), so the
    # scores and the baselines cover the whole table's sample, not process 0's alone.
    parts_x = [gather_rows(a) for a in (stats.x_sample, stats.x_val, stats.x_test)]
    parts_y = [gather_rows(a) for a in (stats.y_sample, stats.y_val, stats.y_test)]
    x = pd.DataFrame(np.concatenate(parts_x), columns=stream.feature_names)
    y = np.concatenate(parts_y)
    ends = np.cumsum([len(a) for a in parts_x])
    tr, val, test = np.arange(ends[0]), np.arange(ends[0], ends[1]), np.arange(ends[1], ends[2])
    metrics = _metrics(model, x, y, names, tr, val, test, seed=args.seed)
    kept = f"the {len(val):,} kept held-out rows" + (
        f" and the {len(test):,} kept test rows (of {stats.n_test:,}, never seen in training)"
        if len(test)
        else ""
    )
    print(
        f"The baselines trained on a sample of {len(tr):,} training rows (one in "
        f"{stats.stride:,}); all scores are on {kept}."
    )
    _print_metrics(metrics)
    for line in verdict(metrics):
        print(line)
    if prep is not None:
        from sklearn.pipeline import Pipeline

        fitted = Pipeline([("tablepreprocessor", prep), ("mlpregressor", model)])
    document = model_document(
        model if prep is None else fitted,
        run={
            "data": str(pathlib.Path(args.data).resolve()),
            "targets": names,
            "features": list(stream.raw_feature_names),
            "streamed": {
                "rows": stats.n_rows,
                "held_out": stats.n_val,
                "test_rows": stats.n_test,
                "buffer_rows": stream.buffer_rows,
                "max_memory": _memory_budget(args),
            },
            "metrics": metrics,
            "settings": _settings(args, checked),
            "compile_seconds": model.compile_seconds_,
            "run_seconds": model.run_seconds_,
        },
    )
    if not _writes():
        _wait_for_all("jaxreg fit: saved")
        return 0
    with store.ModelWriter(out, overwrite=args.overwrite) as writer:
        report = None
        if not args.no_report:  # on the rows kept in memory, as the metrics above
            from jaxreg.report import write_fit_report

            report = writer.stage_folder()
            write_fit_report(
                document.saved,
                report,
                x=x,
                y=y,
                raw=None,
                sets=[("training", tr), ("validation", val), ("test", test)],
                source=(
                    f"{pathlib.Path(args.data).resolve()}, streamed: its {len(tr):,} training "
                    f"rows are a sample (one in {stats.stride:,}) and its {len(val):,} "
                    f"validation rows those kept of the {stats.n_val:,} held out"
                    + (
                        f", its {len(test):,} test rows those kept of {stats.n_test:,}"
                        if len(test)
                        else ""
                    )
                ),
            )
        with interrupts.deferred():
            writer.commit(document, report=report)
            print(f"Saved the model to {out}/")
            if report is not None:
                print(f"Report: {out / store.REPORT_LINK / 'report.html'}")
            if args.checkpoint_every is not None or args.resume:
                _clear_checkpoint(ckpt)
    _wait_for_all("jaxreg fit: saved")
    return 0


def _take(frame, rows):
    """``frame.iloc[rows]``, or ``frame`` itself when ``rows`` are all of its rows in order
    (no copy of a large table)."""
    return frame if len(rows) == len(frame) else frame.iloc[rows]


def _prep_labels(path):
    from jaxreg.preprocess import Labels
    from jaxreg.tabular import row_namer

    return Labels(
        "--categorical",
        "--numeric",
        "--max-categories",
        "the features (--features)",
        where=row_namer(path),
    )


def _make_preprocessor(args, checked):
    from jaxreg.preprocess import TablePreprocessor

    return TablePreprocessor(
        categorical=checked["categorical"],
        numeric=checked["numeric"],
        missing_indicator=args.missing_indicator,
        max_categories=args.max_categories,
    )


def _fit_preprocessor(args, checked, x):
    """The preprocessor fitted on the rows that train the model (test rows excluded); says
    what it encodes and imputes."""
    prep = _make_preprocessor(args, checked).fit(x, labels=_prep_labels(args.data))
    # the missing values counted per column, without a copy of the table
    _say_preprocessing(prep, {name: int(x[name].isna().sum()) for name in prep.numeric_})
    return prep


def _say_preprocessing(prep, missing: dict[str, int] | None) -> None:
    """Print what ``prep`` one-hot encodes and which columns it imputes (with ``missing``,
    their counts of missing values; else those that had any when it was fitted, from a
    streamed table)."""
    d = prep.to_dict()
    if d["categorical"]:
        parts = []
        for c in d["categorical"]:
            k = len(c["categories"])
            parts.append(f"{c['name']} ({k} values{' -> one 0/1 column' if k == 2 else ''})")
        print(f"One-hot encoded: {', '.join(parts)}.")
    extra = " with indicator columns" if d["indicators"] else ""
    if missing is not None and any(missing.values()):
        cols = ", ".join(f"{name} ({k})" for name, k in missing.items() if k)
        print(f"Missing numbers imputed with the training medians{extra}: {cols}.")


def _transform(model, x, predict: bool = False):
    """``model.transform(x)`` (or ``predict(x, return_std=True)``); each unseen category
    is one warning line on stderr."""
    import warnings

    from jaxreg.preprocess import UnknownCategoryWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownCategoryWarning)
        out = model.predict(x, return_std=True) if predict else model.transform(x)
    for w in caught:
        _warning(str(w.message))
    return out


def _settings(args, checked) -> dict:
    """The options that made the model, for the report."""
    import datetime
    import platform

    import jax
    import sklearn

    from jaxreg import __version__

    keys = (
        "hidden activation optimizer schedule lr l2 epochs batch_size val_fraction test_fraction "
        "patience tol max_fun ensemble seed drop_na missing_indicator max_categories cv"
    ).split()
    out = {k: getattr(args, k) for k in keys}
    out["categorical"] = checked["categorical"]
    out["numeric"] = checked["numeric"]
    out["devices"] = (
        f"{jax.device_count()} {jax.devices()[0].platform} device(s) in "
        f"{jax.process_count()} process(es)" + (", data-parallel" if _data_parallel(args) else "")
    )
    out["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out["versions"] = (
        f"jaxreg {__version__}, jax {jax.__version__}, scikit-learn {sklearn.__version__}, "
        f"Python {platform.python_version()}"
    )
    return out


def _clear_checkpoint(ckpt: pathlib.Path) -> None:
    """The model is committed: the checkpoint has served. A failure to remove it is a
    warning, not a failed command."""
    from jaxreg.checkpoint import clear_checkpoint

    try:
        clear_checkpoint(ckpt)
    except (OSError, ValueError) as exc:
        print(f"warning: could not remove the checkpoint in {ckpt}: {exc}", file=sys.stderr)


def _make_model(args, checked):
    from jaxreg.estimator import MLPRegressor

    return MLPRegressor(
        hidden_layer_sizes=checked["hidden"],
        activation=args.activation,
        optimizer=args.optimizer,
        schedule=None if args.schedule == "constant" else args.schedule,
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
        data_parallel=_data_parallel(args),
    )


def _data_parallel(args) -> bool:
    """--data-parallel, or more than one process: they share one model."""
    import jax

    return bool(args.data_parallel) or jax.process_count() > 1


def _writes() -> bool:
    """Whether this process writes the outputs (process 0 of a multi-process run)."""
    import jax

    return jax.process_index() == 0


def _wait_for_all(name: str) -> None:
    """A barrier across the processes of a multi-process run (nothing otherwise)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _target(y, names):
    """``y`` as the estimator gets it: a vector for one target (predictions 1-D)."""
    import pandas as pd

    if y.shape[1] == 1:
        return pd.Series(y[:, 0], name=names[0])
    return pd.DataFrame(y, columns=names)


def _train(args, checked, x, y, target_names, ckpt):
    """Fit ``MLPRegressor`` on the preprocessed features through its public API: a progress
    bar and the checkpointer are callbacks of its chunked run."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from jaxreg.checkpoint import Checkpointer, read_checkpoint_meta
    from jaxreg.data import Standardizer, training_split

    model = _make_model(args, checked)
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
        # In a multi-process run every process resumes; process 0 alone writes.
        checkpoint = Checkpointer(ckpt, every=every if _writes() else None, resume=args.resume)
    if y is None:  # a TableStream: its scan has the statistics
        scale2 = x.scalers()[1].scale ** 2
    else:
        _, tr, _ = training_split(len(x), args.val_fraction, args.seed)
        scale2 = Standardizer.fit(y[tr]).scale ** 2  # as the estimator standardizes y
    bar = _ProgressBar(args.epochs, args.ensemble, scale2, quiet=args.quiet)
    with bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(
            x,
            None if y is None else _target(y, target_names),
            callbacks=[bar.update],
            chunk_epochs=None if y is None else chunk,
            checkpoint=checkpoint,
        )
    for w in caught:  # one line each, not Python's file:line form
        _warning(str(w.message))
    if checkpoint is not None and checkpoint.resumed_from is not None:
        print(f"Resumed from the checkpoint in {ckpt} (epoch {checkpoint.resumed_from}).")
    return model


def _cross_validate(args, checked, frame, fit_rows) -> dict:
    """K-fold cross-validated metrics of these settings on the rows that train the model
    (test rows excluded): each fold fits its own preprocessor and network; folds share
    one compilation (rows are padded to a bucket size). Returns ``{label: {metric:
    [per fold]}}`` and prints the mean and spread."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold

    from jaxreg import interrupts
    from jaxreg.preprocess import UnknownCategoryWarning
    from jaxreg.report import metrics_by_target

    folds: dict[str, dict[str, list]] = {}
    unconverged = 0
    kfold = KFold(args.cv, shuffle=True, random_state=args.seed)
    for k, (a, b) in enumerate(kfold.split(fit_rows)):
        a, b = fit_rows[a], fit_rows[b]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("ignore", UnknownCategoryWarning)
            prep = _make_preprocessor(args, checked).fit(frame.x.iloc[a])
            model = _make_model(args, checked)
            model.fit(prep.transform(frame.x.iloc[a]), _target(frame.y[a], frame.target_names))
            pred = np.asarray(model.predict(prep.transform(frame.x.iloc[b])))
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        interrupts.check()
        got = metrics_by_target("network", frame.y[b], pred, frame.target_names)
        for label, m in got.items():
            for key, v in m.items():
                folds.setdefault(label, {}).setdefault(key, []).append(v)
        if not args.quiet:
            shown = ", ".join("n/a" if m["r2"] is None else f"{m['r2']:.4f}" for m in got.values())
            print(f"cross-validation fold {k + 1}/{args.cv}: R² {shown}", file=sys.stderr)
    for label, m in folds.items():
        r2 = [v for v in m["r2"] if v is not None]
        text = f"{np.mean(r2):.4f} ± {np.std(r2):.4f}" if r2 else "n/a"
        print(
            f"{args.cv}-fold cross-validation, {label}: R² {text}, MSE "
            f"{np.mean(m['mse']):.5g} ± {np.std(m['mse']):.5g}, MAE {np.mean(m['mae']):.5g}"
        )
    if unconverged:
        print(
            f"Warning: {unconverged} of {args.cv} cross-validation fits reached "
            f"--epochs {args.epochs} before the stopping rule was met.",
            file=sys.stderr,
        )
    return {"folds": args.cv, "seed": args.seed, "metrics": folds}


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


def _metrics(model, x, y, names, tr, val, test, seed: int = 0, baselines=None) -> dict:
    """Metrics of the network on the validation rows and on the test rows (either may be
    empty; with neither, the training rows), then those of the two baselines
    (``_baselines``; ``baselines``, a ``_Beside`` already computing them, else here)."""
    import numpy as np

    from jaxreg.report import metrics_by_target

    out = {}
    for w, r in _scored_sets(tr, val, test):
        pred = np.asarray(model.predict(x.iloc[r])).reshape(len(r), -1)
        out.update(metrics_by_target(f"network ({w})", y[r], pred, names))
    if baselines is None:
        return {**out, **_baselines(x, y, names, tr, val, test, seed)}
    return {**out, **baselines.result()}


def _scored_sets(tr, val, test) -> list:
    """The ``(name, rows)`` that metrics are reported on: the validation and test rows
    that exist, else the training rows."""
    sets = [(w, r) for w, r in (("validation", val), ("test", test)) if len(r)]
    return sets or [("training", tr)]


def _baselines(x, y, names, tr, val, test, seed: int = 0) -> dict:
    """Metrics of two scikit-learn baselines fitted on the network's training rows and
    preprocessed features, on the test rows (else the validation rows, else the training
    rows): Ridge on standardized features, and HistGradientBoosting (on a random subsample
    of ``HGB_ROWS`` rows of a larger table, said in its name)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from jaxreg.report import metrics_by_target

    which, rows = _scored_sets(tr, val, test)[-1]  # test, else validation, else training
    features = np.asarray(x, np.float64)  # rows by position, without pandas' indexing

    def predict(est, fit_rows):
        target = y[fit_rows] if y.shape[1] > 1 else y[fit_rows, 0]
        pred = est.fit(features[fit_rows], target).predict(features[rows])
        return np.asarray(pred).reshape(len(rows), -1)

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
    return {
        **metrics_by_target(f"Ridge baseline ({which})", y[rows], ridge, names),
        **metrics_by_target(hgb_name, y[rows], hgb_pred, names),
    }


class _Beside:
    """``fn(*args)`` in a daemon thread while the network compiles and trains: the
    baselines need neither the network nor, while XLA compiles on one core, the other
    core. ``result()`` waits for it and raises what it raised; an interrupted command
    does not wait for it (a daemon thread ends with the process)."""

    def __init__(self, fn, *args) -> None:
        import threading

        self._out: dict = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(fn, args), name="jaxreg-beside-training", daemon=True
        )
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._out = fn(*args)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def result(self) -> dict:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def _beside_training(x, y, names, tr, val, test, seed: int, report: bool) -> dict:
    """The baselines, computed while the network compiles and trains, on half the cores
    (one of two), so that the training keeps the rest; then, for the report, matplotlib
    imported (half a second). Importing it first was measured and left out: pure-Python
    work contends for the interpreter with the tracing of the training loop."""
    from threadpoolctl import threadpool_limits

    from jaxreg.runtime import cpu_cores

    with threadpool_limits(limits=max(1, cpu_cores() // 2)):
        metrics = _baselines(x, y, names, tr, val, test, seed)
    if report:  # what the report's figures need (jaxreg.plots)
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    return metrics


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
            and other.partition(" baseline (")[2].split(")")[0].split(";")[0] == rows
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

    if any("(test)" in name for name in metrics):
        title = (
            "Metrics on held-out rows, original units (early stopping watched the validation "
            "rows, nothing saw the test rows)"
        )
    elif any("(validation)" in name for name in metrics):
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

    from jaxreg.estimator import load
    from jaxreg.preprocess import UnknownCategoryWarning
    from jaxreg.tablepredict import predict_table

    model = load(args.model)
    with _warnings_as_lines(UnknownCategoryWarning):
        done = predict_table(
            model,
            args.data,
            args.out,
            keep=args.keep or (),
            std=args.std,
            drop_na=args.drop_na,
            encoding=args.encoding,
            max_memory=_memory_budget(args),
            labels=_labels(),
            keep_option="--keep",
        )
    if done.dropped:
        print(
            f"{done.dropped} row(s) with missing features got empty predictions (--drop-na).",
            file=sys.stderr,
        )
    if args.out is not None:
        blocks = f" ({done.block_rows} rows at a time)" if done.blocks > 1 else ""
        print(f"Wrote {done.rows} prediction row(s) to {args.out}{blocks}")
    return 0


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
    # A file of more rows than the budget holds (a report keeps several copies of each:
    # the raw columns, the network's inputs, every member's predictions, the permutation
    # importances' shuffles) is read in blocks, every k-th row kept.
    run = read_run_info(args.model)
    width = len(run.get("features") or []) + len(run.get("targets") or []) or 16
    max_rows = max(1_000, _memory_budget(args) // (width * 8 * 32))
    rep = write_report(
        args.model, data=args.data, out_dir=args.out, feature=args.feature, max_rows=max_rows
    )
    print(f"Wrote {len(rep.images)} image(s) and {rep.html}")
    return 0
