"""Reports of a saved model: its training settings, metrics per target and per set of rows
(training, validation, test), loss curves, predicted vs true, residuals, permutation
importance on held-out rows, and a fitted curve with the ensemble's spread, as PNG files and
one self-contained HTML page. Rank 5.

The HTML page embeds every image as a base64 ``data:`` URI and has no scripts, styles or
links from elsewhere, so it opens in a browser with no network.

A model's document may record how it was made (its ``run`` section, written by
``jaxreg fit``): the data file, its columns, the split, the metrics printed at fit time,
the settings and the timings. With it, ``write_report(model_dir)`` needs nothing else;
without it, pass the data.
The default report of a model folder is committed with the model (staged, then named by
the model's manifest), so an interrupted report never replaces a complete one.
"""

from __future__ import annotations

import base64
import html
import pathlib
from typing import NamedTuple

import numpy as np

from jaxreg import files, plots, store, tabular
from jaxreg.data import holdout_split
from jaxreg.model import Layer, apply_members
from jaxreg.store import SavedModel, load_model

__all__ = [
    "RUN_FILE",
    "Importance",
    "Report",
    "band_label",
    "curve_title",
    "permutation_importances",
    "settings_rows",
    "member_predictions",
    "read_run_info",
    "metrics_by_target",
    "regression_metrics",
    "column_names",
    "write_report",
]

RUN_FILE = "run.json"
REPORT_DIR = "report"


class Report(NamedTuple):
    """Files written by ``write_report``."""

    html: pathlib.Path
    images: list[pathlib.Path]


# ---------------------------------------------------------------- run info


def read_run_info(model_dir) -> dict:
    """How a model was made: the ``run`` section of its document, or the ``run.json`` that
    format 1 folders hold; empty when there is none."""
    saved = load_model(model_dir)
    if saved.run is not None:
        return dict(saved.run)
    p = pathlib.Path(model_dir) / RUN_FILE
    if not p.is_file():
        return {}
    info = files.load_json(p, "Run information")
    return info if isinstance(info, dict) else {}


# ---------------------------------------------------------------- predictions and metrics


def member_predictions(saved: SavedModel, x) -> np.ndarray:
    """Every member's predictions on the original scale: ``x`` ``(n, d)`` -> ``(M, n, k)``."""
    return _members(saved)(x)


def _members(saved: SavedModel):
    """``member_predictions`` bound to ``saved``, its parameters put on the device once
    (permutation importance predicts some forty times)."""
    import jax.numpy as jnp

    dtype = np.asarray(saved.params[0].W).dtype
    params = tuple(Layer(jnp.asarray(p.W), jnp.asarray(p.b)) for p in saved.params)
    mean = np.asarray(saved.y_scaler.mean, np.float64)
    scale = np.asarray(saved.y_scaler.scale, np.float64)

    def predict(x) -> np.ndarray:
        z = np.asarray(saved.x_scaler.transform(np.asarray(x, np.float64)), dtype)
        out = apply_members(params, z, saved.spec.activation)
        return np.asarray(out, np.float64) * scale + mean

    return predict


def regression_metrics(y_true, y_pred) -> dict:
    """R², MSE and MAE of one target (1-D arrays, or ``(n, 1)``) with scikit-learn's
    metrics, in the target's own units; R² is None where it is undefined (fewer than two
    rows, or a constant target)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    t = np.asarray(y_true, np.float64).reshape(-1)
    p = np.asarray(y_pred, np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"regression_metrics needs one target: got {t.shape} and {p.shape}.")
    defined = len(t) > 1 and np.ptp(t) > 0
    return {
        "r2": float(r2_score(t, p)) if defined else None,
        "mse": float(mean_squared_error(t, p)),
        "mae": float(mean_absolute_error(t, p)),
    }


def metrics_by_target(label: str, y_true, y_pred, targets) -> dict[str, dict]:
    """``{label: metrics}`` for one target, ``{"label, target": metrics}`` for each of
    several: targets in different units are never averaged together."""
    y_true = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, np.float64).reshape(len(y_pred), -1)
    if y_true.shape[1] == 1:
        return {label: regression_metrics(y_true[:, 0], y_pred[:, 0])}
    return {
        f"{label}, {t}": regression_metrics(y_true[:, j], y_pred[:, j])
        for j, t in enumerate(targets)
    }


# ---------------------------------------------------------------- rows, seeds, samples

MAX_POINTS = 20_000  # scatter plots draw at most this many rows (a seeded random subset)
MAX_IMPORTANCE_ROWS = 2_000  # permutation importance scores at most this many rows
IMPORTANCE_REPEATS = 5
MAX_IMPORTANCE_SHOWN = 20

# How each set of rows is drawn: held-out rows as larger hollow markers underneath, the
# training rows as small filled dots on top, so that neither hides the other.
_SETS = ("training", "validation", "test", "given")
_STYLE: dict[str, dict] = {
    "training": {"s": 7, "marker": "o", "color": "C0", "alpha": 0.6, "zorder": 3},
    "validation": {
        "s": 30,
        "marker": "o",
        "facecolors": "none",
        "edgecolors": "C1",
        "linewidths": 1.0,
        "zorder": 2,
    },
    "test": {
        "s": 30,
        "marker": "s",
        "facecolors": "none",
        "edgecolors": "C3",
        "linewidths": 1.0,
        "zorder": 2,
    },
    "given": {"s": 8, "marker": "o", "color": "C0", "alpha": 0.6, "zorder": 3},
}


_SHAPE = {"validation": "circles", "test": "squares"}


def _seed(run: dict, saved: SavedModel) -> int:
    """The seed of every random choice of the report: the run's, else the estimator's
    ``random_state`` when it is an int, else 0."""
    for value in (
        (run.get("split") or {}).get("seed"),
        (run.get("settings") or {}).get("seed"),
        saved.config.get("random_state"),
    ):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
            return value
    return 0


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted positions of at most ``limit`` of ``n`` rows (all of them when ``n <= limit``)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _set_label(name: str, n: int) -> str:
    if name == "given":
        return f"rows given ({n:,})"
    return f"{name} rows ({n:,})"


def _scatter_sets(ax, xs, ys, kinds) -> None:
    """Scatter ``(xs, ys)``, one style per set (``kinds``: each row's index into ``_SETS``)."""
    for code, name in enumerate(_SETS):
        rows = kinds == code
        if rows.any():
            ax.scatter(xs[rows], ys[rows], label=_set_label(name, int(rows.sum())), **_STYLE[name])


# ---------------------------------------------------------------- plots


def _plot_losses(saved: SavedModel, path):
    meta = saved.metadata
    train = np.asarray(meta.get("loss_curve") or [], np.float64)
    val = meta.get("validation_loss_curve")
    fig, ax = plots.figure()
    if train.size:
        ax.plot(np.arange(train.size), train, label="train")
    if val:
        ax.plot(np.arange(len(val)), np.asarray(val, np.float64), label="validation")
    best = np.asarray(meta.get("best_epoch", []), dtype=float).reshape(-1)
    if best.size == 1 and val:
        ax.axvline(best[0], color="grey", ls="--", lw=1, label=f"best epoch {int(best[0])}")
    if train.size and np.all(train > 0):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (original units of y)")
    ax.set_title("Loss curves")
    if train.size or val:
        ax.legend()
    return plots.save(fig, path)


def _subplots(fig, k):
    fig.clear()
    cols = min(k, 3)
    rows = -(-k // cols)
    fig.set_size_inches(4.2 * cols, 3.8 * rows)
    return np.asarray(fig.subplots(rows, cols)).reshape(-1)


def _plot_pred_true(y, pred, kinds, names, path):
    k = y.shape[1]
    fig, axes = plots.figure(width=4.2 * min(k, 3), height=4.0)
    axes = np.atleast_1d(axes) if k == 1 else _subplots(fig, k)
    for j, ax in enumerate(axes[:k]):
        _scatter_sets(ax, y[:, j], pred[:, j], kinds)
        lo = float(min(y[:, j].min(), pred[:, j].min()))
        hi = float(max(y[:, j].max(), pred[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, zorder=4)
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"predicted {names[j]}")
        # The points follow the diagonal; "best" would search 20,000 of them (0.06 s).
        ax.legend(loc="upper left")
    fig.suptitle("Predicted vs true")
    return plots.save(fig, path)


def _plot_residuals(y, pred, kinds, names, path):
    k = y.shape[1]
    fig, axes = plots.figure(width=4.2 * min(k, 3), height=4.0)
    axes = np.atleast_1d(axes) if k == 1 else _subplots(fig, k)
    for j, ax in enumerate(axes[:k]):
        _scatter_sets(ax, pred[:, j], y[:, j] - pred[:, j], kinds)
        ax.axhline(0.0, color="black", lw=1, zorder=4)
        ax.set_xlabel(f"predicted {names[j]}")
        ax.set_ylabel("residual (true - predicted)")
        # Residuals fill the panel, so no corner is free; "best" searched the 20,000
        # points for one (0.16 s of the figure's 0.28).
        ax.legend(loc="upper right")
    fig.suptitle("Residuals")
    return plots.save(fig, path)


def _pick_feature(saved, x, feature, names, base) -> int:
    if feature is not None:
        if isinstance(feature, int) and not isinstance(feature, bool):
            if not 0 <= feature < x.shape[1]:
                raise ValueError(
                    "The 'feature' parameter of write_report must be a column "
                    f"index in [0, {x.shape[1]}). Got {feature} instead."
                )
            return feature
        if feature not in names:
            raise ValueError(
                "The 'feature' parameter of write_report must be one of the "
                f"model's features {names}. Got {feature!r} instead."
            )
        return names.index(feature)
    # The feature that moves the prediction most over its observed range (the others at
    # ``base``, their medians).
    d, g = x.shape[1], 25
    grid = np.repeat(base[None], d * g, axis=0)
    for j in range(d):
        grid[j * g : (j + 1) * g, j] = np.linspace(x[:, j].min(), x[:, j].max(), g)
    pred = member_predictions(saved, grid).mean(axis=0)[:, 0].reshape(d, g)
    return int(np.argmax(np.ptp(pred, axis=1)))


def curve_title(names, j: int) -> str:
    """The fitted curve's title: "other features at their median" only when there are
    other features."""
    title = f"Fitted curve along {names[j]!r}"
    return title + (" (other features at their median)" if len(names) > 1 else "")


def band_label(m: int) -> str:
    """The legend of the ensemble band: the members' spread, not a prediction interval."""
    return f"spread across the {m} members (±2 std of their predictions; not a prediction interval)"


def _plot_curve(saved, x, base, scatter, j, names, target_names, path):
    """The curve over ``x``'s range of feature ``j`` (others at ``x``'s median), drawn over
    ``scatter``: ``(xs, ys, kinds)`` of the rows shown (``ys`` None: no points); ``base``:
    the features' medians."""
    grid = np.repeat(base[None], 200, axis=0)
    grid[:, j] = np.linspace(x[:, j].min(), x[:, j].max(), 200)
    members = member_predictions(saved, grid)[:, :, 0]  # first target
    mean, std = members.mean(axis=0), members.std(axis=0)
    fig, ax = plots.figure()
    xs, ys, kinds = scatter
    if ys is not None:
        _scatter_sets(ax, xs[:, j], ys[:, 0], kinds)
    m = members.shape[0]
    ax.plot(
        grid[:, j],
        mean,
        color="black",
        lw=2,
        zorder=5,
        label="ensemble mean" if m > 1 else "fitted curve",
    )
    if m > 1:
        ax.fill_between(
            grid[:, j],
            mean - 2 * std,
            mean + 2 * std,
            color="grey",
            alpha=0.3,
            lw=0,
            zorder=1,  # under the points
            label=band_label(m),
        )
    ax.set_xlabel(names[j])
    ax.set_ylabel(target_names[0])
    ax.set_title(curve_title(names, j))
    # Below the panel: the points may fill every corner, and "best" searched the 20,000
    # of them for a free one (0.12 s).
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return plots.save(fig, path)


def _plot_importance(imp: Importance, path):
    shown = min(len(imp.names), MAX_IMPORTANCE_SHOWN)
    order = np.argsort(-imp.mean, kind="stable")[:shown]
    fig, ax = plots.figure(width=6.4, height=1.2 + 0.32 * shown)
    pos = np.arange(shown)[::-1]  # the largest on top
    ax.barh(pos, imp.mean[order], xerr=imp.std[order], color="C0", ecolor="black", capsize=3)
    ax.set_yticks(pos, [imp.names[i] for i in order])
    ax.axvline(0.0, color="black", lw=1)
    mean = " (mean over targets)" if imp.n_targets > 1 else ""
    ax.set_xlabel(f"decrease in R²{mean} when the column is shuffled")
    ax.set_title(f"Permutation importance on {imp.rows_label}")
    return plots.save(fig, path)


# ---------------------------------------------------------------- permutation importance


class Importance(NamedTuple):
    """Permutation importance of a model's features: the decrease in R² (the mean over the
    targets) when one column is shuffled, mean and std over the repeats."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    which: str  # "test", "validation", "training" or "given"
    n_rows: int  # rows scored
    n_available: int  # rows of that set
    raw: bool  # raw input columns (before the preprocessing), else the network's features
    n_targets: int
    seed: int

    @property
    def rows_label(self) -> str:
        return _set_label(self.which, self.n_rows)


class _Predictor:
    """What ``permutation_importance`` permutes: the raw columns through the model's
    preprocessing, or the network's features; predicts the ensemble mean."""

    def __init__(self, saved: SavedModel, prep=None) -> None:
        self.saved, self.prep = saved, prep
        self._members = _members(saved)

    def fit(self, *args, **kwargs):  # scikit-learn's estimator shape; the model is fitted
        return self

    def predict(self, x):
        if self.prep is not None:
            import warnings

            from jaxreg.preprocess import UnknownCategoryWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnknownCategoryWarning)
                x = self.prep.transform(x).to_numpy(np.float64)
        return self._members(x).mean(axis=0)


def _r2_scorer(estimator, x, y) -> float:
    """R², the mean over the targets (scikit-learn's ``uniform_average``)."""
    from sklearn.metrics import r2_score

    pred = np.asarray(estimator.predict(x), np.float64).reshape(len(y), -1)
    return float(r2_score(np.asarray(y, np.float64).reshape(len(y), -1), pred))


def _r2_defined(y, rows) -> bool:
    return len(rows) > 1 and bool(np.all(np.ptp(y[rows], axis=0) > 0))


def permutation_importances(
    saved: SavedModel, inputs, y, sets, names, seed: int, prep=None
) -> Importance | None:
    """Permutation importance (``sklearn.inspection.permutation_importance``) on the test
    rows if any, else the validation rows, else the training rows (the first set with R²
    defined: two rows or more, no constant target), at most ``MAX_IMPORTANCE_ROWS`` of
    them (a random subset drawn with ``seed``), ``IMPORTANCE_REPEATS`` repeats with
    ``random_state=seed``.

    ``inputs``: the raw frame (with ``prep``, the model's ``TablePreprocessor``: a one-hot
    encoded column is shuffled as one) or the network's features ``(n, d)``; ``sets``:
    ``[(name, rows)]``. None when no set has R² defined.
    """
    from sklearn.inspection import permutation_importance

    by_name = dict(sets)
    order = [w for w in ("test", "validation", "training", "given") if w in by_name]
    which = next((w for w in order if _r2_defined(y, by_name[w])), None)
    if which is None:
        return None
    available = by_name[which]
    rows = available[_sample(len(available), MAX_IMPORTANCE_ROWS, seed)]
    x = inputs.iloc[rows] if prep is not None else np.asarray(inputs)[rows]
    result = permutation_importance(
        _Predictor(saved, prep),
        x,
        y[rows],
        scoring=_r2_scorer,
        n_repeats=IMPORTANCE_REPEATS,
        random_state=seed,
    )
    return Importance(
        list(names),
        np.asarray(result.importances_mean, np.float64),
        np.asarray(result.importances_std, np.float64),
        which,
        len(rows),
        len(available),
        prep is not None,
        y.shape[1],
        seed,
    )


def _importance_note(imp: Importance) -> str:
    what = (
        "one raw input column (a one-hot encoded column counts as one)"
        if imp.raw
        else "one of the network's features"
    )
    where = {
        "test": "the test rows (never seen in training)",
        "validation": "the validation rows (held out of training; early stopping may watch them)",
        "training": (
            "the training rows (no held-out rows with R² defined: this shows what the "
            "network relies on for rows it was trained on)"
        ),
        "given": "the rows given (their split is unknown: they may include training rows)",
    }[imp.which]
    text = (
        f"Decrease in R² when {what} is shuffled (scikit-learn's permutation_importance), "
        f"on {where}: mean and std over {IMPORTANCE_REPEATS} repeats (seed {imp.seed})."
    )
    if imp.n_rows < imp.n_available:
        text += f" Scored on a random {imp.n_rows:,} of the {imp.n_available:,} rows."
    if imp.n_targets > 1:
        text += f" R² is the mean over the {imp.n_targets} targets."
    if len(imp.names) > MAX_IMPORTANCE_SHOWN:
        text += f" The {MAX_IMPORTANCE_SHOWN} largest of {len(imp.names)} features are shown."
    return text


# ---------------------------------------------------------------- the report


def column_names(saved: SavedModel, run: dict | None = None) -> tuple[list[str], list[str]]:
    """The feature and target names of a model (from the model, its run record, or
    ``x0, x1, ...`` / ``y0, ...``)."""
    run = run if run is not None else dict(saved.run or {})
    feats = (
        saved.feature_names or run.get("features") or [f"x{i}" for i in range(saved.spec.n_inputs)]
    )
    targets = (
        saved.target_names or run.get("targets") or [f"y{i}" for i in range(saved.spec.n_outputs)]
    )
    return list(feats), list(targets)


def write_report(
    model, data=None, out_dir=None, *, feature=None, drop_na=None, max_rows=None
) -> Report:
    """Write the report of a model.

    Args:
      model: a model folder (written by ``MLPRegressor.save`` / ``jaxreg fit``) or a
        ``SavedModel`` in memory.
      data: a CSV/Parquet path, or ``(x, y)`` arrays (``y`` may be None; ``x`` may be a raw
        ``DataFrame`` for a model with preprocessing), used for the prediction plots and
        the permutation importance; None uses the data recorded with the model (when there
        is one).
      out_dir: where to write. Default for a model folder: a new report committed with the
        model (``MODEL/report`` links to it; the model's document is replaced atomically,
        its predictions untouched); a ``SavedModel`` needs one.
      feature: the input feature (name or index) of the fitted-curve plot; default the one
        that moves the prediction most.
      drop_na: drop rows with missing values when reading ``data``; default as recorded.
      max_rows: read a data file of more rows than this in blocks and keep every k-th row
        (the smallest k that keeps at most ``max_rows``), so the file is never held whole;
        the page says which rows. With it, a model trained on a table streamed from disk
        reads its recorded file this way when ``data`` is None. Default: read the file
        whole (and such a model needs ``data``).

    Returns:
      A ``Report`` with the HTML page and the PNG files.
    """
    if isinstance(model, SavedModel):
        if out_dir is None:
            raise ValueError("out_dir must name a folder when model is a SavedModel. Got None.")
        return _write_report(
            model, dict(model.run or {}), data, pathlib.Path(out_dir), feature, drop_na, max_rows
        )
    run = read_run_info(model)
    if out_dir is not None:
        saved = load_model(model)
        return _write_report(
            saved,
            run,
            data,
            files.check_output_folder(out_dir, "out_dir"),
            feature,
            drop_na,
            max_rows,
        )
    document = store.read_document(model)
    with store.ModelWriter(model, overwrite=True) as writer:
        staged = writer.stage_folder()
        rep = _write_report(document.saved, run, data, staged, feature, drop_na, max_rows)
        writer.commit(document, report=staged)
    # The staged folder now lives under its final name behind the link.
    final = pathlib.Path(model) / store.REPORT_LINK
    return Report(final / rep.html.name, [final / p.name for p in rep.images])


def _transform(prep, frame) -> np.ndarray:
    import warnings

    from jaxreg.preprocess import UnknownCategoryWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCategoryWarning)  # plotted as all zeros
        return prep.transform(frame).to_numpy(np.float64)


def _read(saved: SavedModel, prep, data, feats, targets, drop_na: bool):
    """``(x, y, raw)`` of a file: the network's features, the targets (None when the file
    lacks them) and, for a model with preprocessing (``prep``), the raw feature frame
    before it (else None)."""
    if prep is None:
        table = tabular.load_features(data, feats, targets, drop_na=drop_na, dtype=np.float64)
        return table.x, table.y, None
    frame = tabular.load_frame(
        data,
        targets,
        list(prep.feature_names_in_),
        drop_na=drop_na,
        require_targets=False,
        check_target=False,
        min_rows=1,
    )
    return _transform(prep, frame.x), frame.y, frame.x


class _Sample(NamedTuple):
    """Which rows ``_read_every`` kept: their 0-based file rows, their places among the
    rows ``drop_na`` kept (the in-memory split's numbering), and the file's and the kept
    rows' counts."""

    file_rows: np.ndarray
    kept_ranks: np.ndarray
    rows: int
    kept: int


def _read_every(saved: SavedModel, prep, data, feats, targets, drop_na: bool, every: int):
    """``_read`` of every ``every``-th row of the file (0, every, 2 every, ...), block by
    block: each block is checked as a whole read checks it (messages name the file's
    rows), then thinned. Returns ``(x, y, raw, _Sample)``."""
    import pandas as pd

    names = tabular.header_names(data)
    targets = targets if all(t in names for t in targets) else []  # read only when all are
    raw_feats = list(prep.feature_names_in_) if prep is not None else feats
    columns = raw_feats + [t for t in targets if t not in raw_feats]
    xs, ys, frames, rows, ranks = [], [], [], [], []
    n = kept = 0
    for block in tabular.read_blocks(data, columns, 1 << 16):
        offset = int(block.index[0])
        if prep is None:
            table = tabular.features_of(
                block, data, feats, targets, drop_na=drop_na, dtype=np.float64,
                offset=offset, min_rows=0,
            )  # fmt: skip
            pos = table.rows
        else:
            frame = tabular.frame_of(
                block, data, targets, raw_feats, drop_na=drop_na, min_rows=0,
                require_targets=False, check_target=False, offset=offset,
            )  # fmt: skip
            pos = frame.rows
        take = np.flatnonzero((offset + pos) % every == 0)
        rows.append(offset + pos[take])
        ranks.append(kept + take)
        if prep is None:
            xs.append(table.x[take])
            ys.append(None if table.y is None else table.y[take])
        else:
            frames.append(frame.x.iloc[take])
            ys.append(None if frame.y is None else frame.y[take])
        n += len(block)
        kept += len(pos)
    if kept == 0:
        raise ValueError(
            f"{str(data)!r} has no rows left after dropping the {n} row(s) with missing values."
        )
    y = None if ys[0] is None else np.concatenate([a for a in ys if a is not None])
    if prep is None:
        x, raw = np.concatenate(xs), None
    else:
        raw = pd.concat(frames)
        x = _transform(prep, raw)
    return x, y, raw, _Sample(np.concatenate(rows), np.concatenate(ranks), n, kept)


def _sampled_sets(run: dict, data, sample: _Sample) -> list[tuple[str, np.ndarray]] | None:
    """The training, validation and test rows among the sampled rows of the recorded data
    file, as ``jaxreg fit`` drew them: by the hash of the file row for a streamed fit, by
    the in-memory split of the kept rows otherwise; None when ``data`` is not that file."""
    recorded = run.get("data")
    if not recorded or pathlib.Path(data).resolve() != pathlib.Path(recorded):
        return None
    if run.get("streamed"):
        from jaxreg.stream import held_out_sets

        settings = run.get("settings") or {}
        val, test = held_out_sets(
            sample.file_rows,
            float(settings.get("val_fraction") or 0.0),
            float(settings.get("test_fraction") or 0.0),
            int(settings.get("seed") or 0),
        )
        groups = (("training", ~(val | test)), ("validation", val), ("test", test))
        return [(w, np.flatnonzero(m)) for w, m in groups if m.any()]
    full = _recorded_sets(run, data, sample.kept)
    if full is None:
        return None
    sets = [(w, np.flatnonzero(np.isin(sample.kept_ranks, r))) for w, r in full]
    return [(w, r) for w, r in sets if len(r)]


def _recorded_sets(run: dict, data, n: int) -> list[tuple[str, np.ndarray]] | None:
    """The training, validation and test rows of the recorded data file, drawn as ``jaxreg
    fit`` drew them; None when ``data`` is not that file or its rows differ."""
    split = run.get("split") or {}
    recorded = run.get("data")
    if not recorded or pathlib.Path(data).resolve() != pathlib.Path(recorded):
        return None
    if split.get("n_rows") != n:
        return None
    tr, val, test = holdout_split(
        n,
        float(split.get("validation_fraction") or 0.0),
        float(split.get("test_fraction") or 0.0),  # absent before --test-fraction
        int(split.get("seed") or 0),
    )
    return [(w, r) for w, r in (("training", tr), ("validation", val), ("test", test)) if len(r)]


def write_fit_report(saved: SavedModel, out_dir, *, x, y, raw, sets, source: str) -> Report:
    """The report of a model that ``jaxreg fit`` just trained, from the table it holds in
    memory (no second read of the file): ``x`` the network's features, ``y`` the targets,
    ``raw`` the feature frame before the preprocessing (None without one) and ``sets`` the
    ``(name, rows)`` of the training, validation and test rows (empty ones are left out)."""
    sets = [(w, r) for w, r in sets if len(r)]
    feats, targets = column_names(saved, saved.run)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(len(x), -1)
    run = dict(saved.run or {})
    return _render(saved, run, pathlib.Path(out_dir), feats, targets, x, y, raw, source, sets, None)


def _write_report(
    saved: SavedModel, run: dict, data, out: pathlib.Path, feature, drop_na, max_rows=None
) -> Report:
    feats, targets = column_names(saved, run)
    prep = saved.preprocessor
    sets: list[tuple[str, np.ndarray]] | None = None
    source = None
    raw = None
    x: np.ndarray | None
    y: np.ndarray | None
    if data is None and run.get("streamed") and max_rows is None:
        rows = int(run["streamed"].get("rows") or 0)
        raise ValueError(
            f"The model was trained on a table streamed from disk ({rows:,} rows, more than "
            "its memory budget), which the report would read whole; pass data (a file or "
            "(x, y) arrays that fit in memory, a sample of the table for example). Its fit "
            "wrote a report on the rows it kept in memory."
        )
    if data is None and run.get("data"):
        data = run["data"]
        if not pathlib.Path(data).is_file():
            raise FileNotFoundError(
                f"The data file recorded for this model, {data!r}, does "
                "not exist; pass the data explicitly (data=...)."
            )
    if isinstance(data, str | pathlib.Path):
        na = run.get("drop_na", False) if drop_na is None else drop_na
        total = tabular.estimate_rows(data) if max_rows is not None else None
        if total is not None and max_rows is not None and total > max_rows:
            every = -(-total // max_rows)
            x, y, raw, sample = _read_every(saved, prep, data, feats, targets, na, every)
            source = (
                f"{data}: one row in {every:,}, {len(x):,} of its {sample.rows:,} rows "
                "(read in blocks, never whole)"
            )
            sets = _sampled_sets(run, data, sample)
        else:
            x, y, raw = _read(saved, prep, data, feats, targets, na)
            source = str(data)
            sets = _recorded_sets(run, data, len(x))
    elif data is not None:
        x, y = data
        if prep is not None and hasattr(x, "iloc"):  # a raw frame: through the preprocessing
            raw = x
            x = _transform(prep, raw)
        x = np.asarray(x, np.float64)
        if x.ndim != 2:
            raise ValueError(f"data's x must be a 2-D array (rows, features). Got shape {x.shape}.")
        y = None if y is None else np.asarray(y, np.float64).reshape(len(x), -1)
        source = "arrays"
    else:
        x = y = None
    if x is not None and x.shape[1] != saved.spec.n_inputs:
        raise ValueError(
            f"data must have {saved.spec.n_inputs} feature columns for this "
            f"model. Got {x.shape[1]}."
        )
    if y is not None and y.shape[1] != saved.spec.n_outputs:
        raise ValueError(
            f"data's y must have {saved.spec.n_outputs} target column(s) for this model. "
            f"Got {y.shape[1]}."
        )
    if x is None and feature is not None:
        raise ValueError(
            "The 'feature' parameter of write_report needs data to plot "
            f"against. Got feature={feature!r} and no data instead."
        )
    return _render(saved, run, out, feats, targets, x, y, raw, source, sets, feature)


def _render(
    saved: SavedModel,
    run: dict,
    out: pathlib.Path,
    feats: list[str],
    targets: list[str],
    x: np.ndarray | None,
    y: np.ndarray | None,
    raw,
    source: str | None,
    sets: list[tuple[str, np.ndarray]] | None,
    feature,
) -> Report:
    prep = saved.preprocessor
    # Every check and computation before the first file is written: a refused report
    # writes nothing.
    # The medians column by column: the same values as np.median(x, axis=0), without its
    # copy of the whole table (0.11 against 0.18-0.34 s on a million rows).
    base = None if x is None else np.array([np.median(x[:, j]) for j in range(x.shape[1])])
    j = 0 if x is None else _pick_feature(saved, x, feature, feats, base)
    seed = _seed(run, saved)
    metrics_rows: list[tuple[str, dict]] = []
    imp = None
    if x is not None:
        if sets is None:
            sets = [("given", np.arange(len(x)))]
        kind = np.zeros(len(x), np.int64)
        for w, r in sets:
            kind[r] = _SETS.index(w)
        shown = _sample(len(x), MAX_POINTS, seed)
        held = [f"{w} rows hollow {_SHAPE[w]}" for w, _ in sets if w in _SHAPE]
        marks = (
            f" Training rows are small filled dots, drawn on top; {', '.join(held)}."
            if held
            else ""
        )
        pred = member_predictions(saved, x).mean(axis=0)
        if y is not None:
            for w, r in sets:
                label = f"network, {_set_label(w, len(r))}"
                metrics_rows += metrics_by_target(label, y[r], pred[r], targets).items()
            imp = permutation_importances(
                saved,
                raw if raw is not None else x,
                y,
                sets,
                list(prep.feature_names_in_) if raw is not None else feats,
                seed,
                prep if raw is not None else None,
            )
    images = [_plot_losses(saved, out / "loss_curves.png")]
    sections = [("Loss curves", images[0], "Training and validation MSE per epoch.", "")]
    if x is not None:
        sampled = (
            f" A random {len(shown):,} of the {len(x):,} rows are drawn (seed {seed})."
            if len(shown) < len(x)
            else ""
        )
        kinds = kind[shown]
        if y is not None:
            ys, ps = y[shown], pred[shown]
            images.append(_plot_pred_true(ys, ps, kinds, targets, out / "predicted_vs_true.png"))
            note = "Each point is a row; the line is a perfect prediction."
            sections.append(("Predicted vs true", images[-1], note + marks + sampled, ""))
            images.append(_plot_residuals(ys, ps, kinds, targets, out / "residuals.png"))
            sections.append(("Residuals", images[-1], "True minus predicted." + sampled, ""))
        if imp is not None:
            images.append(_plot_importance(imp, out / "permutation_importance.png"))
            note = _importance_note(imp)
            sections.append(("Permutation importance", images[-1], note, _importance_table(imp)))
        scatter = (x[shown], None if y is None else y[shown], kinds)
        images.append(
            _plot_curve(saved, x, base, scatter, j, feats, targets, out / "fitted_curve.png")
        )
        sections.append((curve_title(feats, j), images[-1], _curve_note(saved, feats, sampled), ""))
    recomputed = sets is not None and sets[0][0] != "given"
    for label, m in (run.get("metrics") or {}).items():
        if recomputed and label.startswith("network"):
            continue  # the same rows, just recomputed above
        if isinstance(m, dict) and "r2" in m:
            metrics_rows.append((f"at fit time: {label}", m))
    page = _html(saved, run, source, feats, targets, sections, metrics_rows)
    html_path = plots.write_text(out / "report.html", page)
    return Report(html_path, images)


def _curve_note(saved: SavedModel, feats, sampled: str) -> str:
    text = "The first target as one feature varies over its observed range"
    text += ", the other features at their median." if len(feats) > 1 else "."
    m = saved.n_ensemble
    if m > 1:
        text += (
            f" The line is the mean of the {m} members; the band is the spread across the "
            "members (±2 std of their predictions): how much they disagree, not a "
            "prediction interval (it leaves out the noise in the data)."
        )
    return text + sampled


# ---------------------------------------------------------------- HTML

_SETTING_LABELS: dict[str, str] = {
    "hidden": "hidden layers",
    "activation": "activation",
    "optimizer": "optimizer",
    "lr": "learning rate",
    "l2": "L2 penalty",
    "epochs": "epochs (at most)",
    "batch_size": "batch size",
    "val_fraction": "validation fraction",
    "test_fraction": "test fraction",
    "patience": "patience (epochs)",
    "tol": "tolerance",
    "max_fun": "function evaluations (L-BFGS, at most)",
    "ensemble": "ensemble members",
    "seed": "seed (split and initialization)",
    "drop_na": "rows with missing values dropped",
    "missing_indicator": "missing-value indicator columns",
    "max_categories": "categories per text column (at most)",
    "cv": "cross-validation folds",
    "categorical": "categorical columns (named)",
    "numeric": "numeric columns (named)",
    "date": "date (UTC)",
    "versions": "versions",
}


def _fmt(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "none"
    return str(value)


def _seconds(value) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{float(value):.2f} s"
    return None


def settings_rows(saved: SavedModel, run: dict) -> tuple[str, list[tuple[str, str, str]]]:
    """The report's settings table: ``(caption, [(key, label, value)])``, from the run's
    settings (``jaxreg fit``), else the estimator's parameters and training configuration
    (a model saved from the library)."""
    rows: list[tuple[str, str, str]] = []
    settings = run.get("settings")
    if isinstance(settings, dict) and settings:
        caption = "The options of the jaxreg fit that made this model."
        for key, value in settings.items():
            text = _fmt(value)
            if key == "batch_size" and text in ("0", "none"):
                text = "full batch"
            rows.append((str(key), _SETTING_LABELS.get(str(key), str(key)), text))
        timings = run
    else:
        caption = (
            "Saved from the library (no record of a jaxreg fit): the estimator's parameters "
            "and its training configuration."
        )
        for key, value in saved.config.items():
            rows.append((f"config.{key}", key, _fmt(value)))
        for key, value in (saved.metadata.get("train_config") or {}).items():
            rows.append((f"train_config.{key}", f"training: {key}", _fmt(value)))
        timings = saved.metadata
    for key, label in (("compile_seconds", "compile time"), ("run_seconds", "training time")):
        seconds = _seconds(timings.get(key))
        if seconds is not None:
            rows.append((key, label, seconds))
    return caption, rows


def _mean_std(values, fmt: str) -> str:
    got = [float(v) for v in values if v is not None]
    if not got:
        return "n/a"
    text = f"{np.mean(got):{fmt}} ± {np.std(got):{fmt}}"
    if len(got) < len(values):
        text += f" ({len(got)} of {len(values)} folds)"
    return text


def _cv_html(run: dict) -> str:
    cv = run.get("cv")
    if not isinstance(cv, dict) or not isinstance(cv.get("metrics"), dict) or not cv["metrics"]:
        return ""
    esc = html.escape
    rows = []
    for label, m in cv["metrics"].items():
        cells = [
            _mean_std(m.get(key) or [], fmt)
            for key, fmt in (("r2", ".4f"), ("mse", ".6g"), ("mae", ".6g"))
        ]
        rows.append(
            f'<tr data-cv="{esc(str(label))}"><td>{esc(str(label))}</td>'
            + "".join(f"<td>{esc(c)}</td>" for c in cells)
            + "</tr>"
        )
    folds = cv.get("folds", "?")
    seed = f", seed {cv['seed']}" if "seed" in cv else ""
    return (
        f"<h2>Cross-validation</h2><p>{esc(str(folds))}-fold cross-validation of these "
        f"settings on the training and validation rows (test rows left out{esc(seed)}): "
        "mean ± std over the folds.</p>"
        '<table class="cv"><tr><th></th><th>R²</th><th>MSE</th><th>MAE</th></tr>'
        + "\n".join(rows)
        + "</table>"
    )


def _importance_table(imp: Importance) -> str:
    esc = html.escape
    order = np.argsort(-imp.mean, kind="stable")[:MAX_IMPORTANCE_SHOWN]
    rows = "\n".join(
        f'<tr data-feature="{esc(imp.names[i])}"><td>{esc(imp.names[i])}</td>'
        f"<td>{imp.mean[i]:.6g}</td><td>{imp.std[i]:.6g}</td></tr>"
        for i in order
    )
    return (
        '<table class="importance"><tr><th>feature</th><th>R² decrease</th><th>std</th></tr>'
        f"{rows}</table>"
    )


def _r2(metrics: dict) -> str:
    r2 = metrics.get("r2")
    return "n/a" if r2 is None else f"{r2:.4f}"


def _img(path: pathlib.Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _html(saved, run, source, feats, targets, sections, metrics_rows) -> str:
    esc = html.escape
    meta = saved.metadata
    spec = saved.spec
    facts = [
        ("architecture", " → ".join(str(s) for s in spec.layer_sizes) + f" ({spec.activation})"),
        ("ensemble members", str(saved.n_ensemble)),
        ("features", ", ".join(feats)),
        ("targets", ", ".join(targets)),
        ("epochs trained", str(meta.get("n_iter", "?"))),
        ("best epoch", str(meta.get("best_epoch", "?"))),
        ("data", source or "none given"),
        ("jaxreg version", saved.jaxreg_version),
    ]
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    caption, settings = settings_rows(saved, run)
    srows = "\n".join(
        f'<tr data-setting="{esc(key)}"><th>{esc(label)}</th><td>{esc(value)}</td></tr>'
        for key, label, value in settings
    )
    mrows = "\n".join(
        f"<tr><td>{esc(label)}</td><td>{_r2(m)}</td><td>{m['mse']:.6g}</td>"
        f"<td>{m['mae']:.6g}</td></tr>"
        for label, m in metrics_rows
    )
    metrics = (
        (
            '<h2>Metrics</h2><table class="metrics"><tr><th></th><th>R²</th><th>MSE</th>'
            f"<th>MAE</th></tr>{mrows}</table>"
        )
        if metrics_rows
        else ""
    )
    body = "\n".join(
        f"<h2>{esc(title)}</h2><p>{esc(note)}</p>{_img(img)}{extra}"
        for title, img, note, extra in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>jaxreg report</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>jaxreg model report</h1>
<table>{rows}</table>
<h2>Settings</h2><p>{esc(caption)}</p>
<table class="settings">{srows}</table>
{metrics}
{_cv_html(run)}
{body}
</body></html>
"""
