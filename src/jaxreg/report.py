"""Reports of a saved model: loss curves, predicted vs true, residuals, a fitted curve with
its ensemble band, as PNG files and one self-contained HTML page. Rank 4.

The HTML page embeds every image as a base64 ``data:`` URI and has no scripts, styles or
links from elsewhere, so it opens in a browser with no network.

A model's document may record how it was made (its ``run`` section, written by
``jaxreg fit``): the data file, its columns, the validation split and the metrics printed at
fit time. With it, ``write_report(model_dir)`` needs nothing else; without it, pass the data.
The default report of a model folder is committed with the model (staged, then named by
the model's manifest), so an interrupted report never replaces a complete one.
"""

from __future__ import annotations

import base64
import html
import pathlib
from typing import NamedTuple

import numpy as np

from jaxreg import files, plots, store
from jaxreg.data import holdout_split
from jaxreg.model import Layer, apply_members
from jaxreg.store import SavedModel, load_model

__all__ = [
    "RUN_FILE",
    "Report",
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
    import jax.numpy as jnp

    dtype = np.asarray(saved.params[0].W).dtype
    z = np.asarray(saved.x_scaler.transform(np.asarray(x, np.float64)), dtype)
    params = tuple(Layer(jnp.asarray(p.W), jnp.asarray(p.b)) for p in saved.params)
    out = apply_members(params, z, saved.spec.activation)
    mean = np.asarray(saved.y_scaler.mean, np.float64)
    scale = np.asarray(saved.y_scaler.scale, np.float64)
    return np.asarray(out, np.float64) * scale + mean


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


def _plot_pred_true(y, pred, val_mask, names, path):
    k = y.shape[1]
    fig, axes = plots.figure(width=4.2 * min(k, 3), height=4.0)
    axes = np.atleast_1d(axes) if k == 1 else _subplots(fig, k)
    for j, ax in enumerate(axes[:k]):
        ax.scatter(y[~val_mask, j], pred[~val_mask, j], s=10, alpha=0.6, label="train")
        if val_mask.any():
            ax.scatter(y[val_mask, j], pred[val_mask, j], s=12, alpha=0.8, label="validation")
        lo = float(min(y[:, j].min(), pred[:, j].min()))
        hi = float(max(y[:, j].max(), pred[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1)
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"predicted {names[j]}")
        ax.legend()
    fig.suptitle("Predicted vs true")
    return plots.save(fig, path)


def _subplots(fig, k):
    fig.clear()
    cols = min(k, 3)
    rows = -(-k // cols)
    fig.set_size_inches(4.2 * cols, 3.8 * rows)
    return np.asarray(fig.subplots(rows, cols)).reshape(-1)


def _plot_residuals(y, pred, val_mask, names, path):
    k = y.shape[1]
    fig, axes = plots.figure(width=4.2 * min(k, 3), height=4.0)
    axes = np.atleast_1d(axes) if k == 1 else _subplots(fig, k)
    for j, ax in enumerate(axes[:k]):
        res = y[:, j] - pred[:, j]
        ax.scatter(pred[~val_mask, j], res[~val_mask], s=10, alpha=0.6, label="train")
        if val_mask.any():
            ax.scatter(pred[val_mask, j], res[val_mask], s=12, alpha=0.8, label="validation")
        ax.axhline(0.0, color="black", lw=1)
        ax.set_xlabel(f"predicted {names[j]}")
        ax.set_ylabel("residual (true - predicted)")
        ax.legend()
    fig.suptitle("Residuals")
    return plots.save(fig, path)


def _pick_feature(saved, x, feature, names) -> int:
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
    # The feature that moves the prediction most over its observed range.
    base = np.median(x, axis=0)
    d, g = x.shape[1], 25
    grid = np.repeat(base[None], d * g, axis=0)
    for j in range(d):
        grid[j * g : (j + 1) * g, j] = np.linspace(x[:, j].min(), x[:, j].max(), g)
    pred = member_predictions(saved, grid).mean(axis=0)[:, 0].reshape(d, g)
    return int(np.argmax(np.ptp(pred, axis=1)))


def _plot_curve(saved, x, y, j, names, target_names, path):
    base = np.median(x, axis=0)
    grid = np.repeat(base[None], 200, axis=0)
    grid[:, j] = np.linspace(x[:, j].min(), x[:, j].max(), 200)
    members = member_predictions(saved, grid)[:, :, 0]  # first target
    mean, std = members.mean(axis=0), members.std(axis=0)
    fig, ax = plots.figure()
    if y is not None:
        ax.scatter(x[:, j], y[:, 0], s=8, alpha=0.35, color="grey", label="data")
    ax.plot(
        grid[:, j],
        mean,
        color="C0",
        lw=2,
        label="ensemble mean" if members.shape[0] > 1 else "fitted curve",
    )
    if members.shape[0] > 1:
        ax.fill_between(
            grid[:, j],
            mean - 2 * std,
            mean + 2 * std,
            color="C0",
            alpha=0.25,
            label=f"±2 std over {members.shape[0]} members",
        )
    ax.set_xlabel(names[j])
    ax.set_ylabel(target_names[0])
    ax.set_title(f"Fitted curve along {names[j]!r} (other features at their median)")
    ax.legend()
    return plots.save(fig, path)


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


def write_report(model, data=None, out_dir=None, *, feature=None, drop_na=None) -> Report:
    """Write the report of a model.

    Args:
      model: a model folder (written by ``MLPRegressor.save`` / ``jaxreg fit``) or a
        ``SavedModel`` in memory.
      data: a CSV/Parquet path, or ``(x, y)`` arrays (``y`` may be None), used for the
        prediction plots; None uses the data recorded with the model (when there is one).
      out_dir: where to write. Default for a model folder: a new report committed with the
        model (``MODEL/report`` links to it; the model's document is replaced atomically,
        its predictions untouched); a ``SavedModel`` needs one.
      feature: the input feature (name or index) of the fitted-curve plot; default the one
        that moves the prediction most.
      drop_na: drop rows with missing values when reading ``data``; default as recorded.

    Returns:
      A ``Report`` with the HTML page and the PNG files.
    """
    if isinstance(model, SavedModel):
        if out_dir is None:
            raise ValueError("out_dir must name a folder when model is a SavedModel. Got None.")
        return _write_report(
            model, dict(model.run or {}), data, pathlib.Path(out_dir), feature, drop_na
        )
    run = read_run_info(model)
    if out_dir is not None:
        saved = load_model(model)
        return _write_report(
            saved, run, data, files.check_output_folder(out_dir, "out_dir"), feature, drop_na
        )
    document = store.read_document(model)
    with store.ModelWriter(model, overwrite=True) as writer:
        staged = writer.stage_folder()
        rep = _write_report(document.saved, run, data, staged, feature, drop_na)
        writer.commit(document, report=staged)
    # The staged folder now lives under its final name behind the link.
    final = pathlib.Path(model) / store.REPORT_LINK
    return Report(final / rep.html.name, [final / p.name for p in rep.images])


def _read(saved: SavedModel, data, feats, targets, drop_na: bool):
    """The network's features and the targets (None when the file lacks them) of a file:
    through the model's preprocessing when it has one."""
    from jaxreg import tabular

    if saved.preprocessing is None:
        table = tabular.load_features(data, feats, targets, drop_na=drop_na, dtype=np.float64)
        return table.x, table.y
    import warnings

    from jaxreg.preprocess import TablePreprocessor, UnknownCategoryWarning

    prep = TablePreprocessor.from_dict(saved.preprocessing)
    frame = tabular.load_frame(
        data,
        targets,
        list(prep.feature_names_in_),
        drop_na=drop_na,
        require_targets=False,
        check_target=False,
        min_rows=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCategoryWarning)  # plotted as all zeros
        return prep.transform(frame.x).to_numpy(np.float64), frame.y


def _write_report(
    saved: SavedModel, run: dict, data, out: pathlib.Path, feature, drop_na
) -> Report:
    feats, targets = column_names(saved, run)
    val_mask = None
    source = None
    x: np.ndarray | None
    y: np.ndarray | None
    if data is None and run.get("data"):
        data = run["data"]
        if not pathlib.Path(data).is_file():
            raise FileNotFoundError(
                f"The data file recorded for this model, {data!r}, does "
                "not exist; pass the data explicitly (data=...)."
            )
    if isinstance(data, str | pathlib.Path):
        na = run.get("drop_na", False) if drop_na is None else drop_na
        x, y = _read(saved, data, feats, targets, na)
        source = str(data)
        split = run.get("split") or {}
        same = run.get("data") and pathlib.Path(data).resolve() == pathlib.Path(run["data"])
        if same and split.get("n_rows") == len(x):
            _, val, test = holdout_split(
                len(x),
                float(split.get("validation_fraction", 0.0)),
                float(split.get("test_fraction", 0.0)),
                int(split.get("seed", 0)),
            )
            val_mask = np.zeros(len(x), bool)
            val_mask[val] = True
    elif data is not None:
        x, y = data
        x = np.asarray(x, np.float64)
        y = None if y is None else np.asarray(y, np.float64).reshape(len(x), -1)
        source = "arrays"
    else:
        x = y = None
    if x is not None and x.shape[1] != saved.spec.n_inputs:
        raise ValueError(
            f"data must have {saved.spec.n_inputs} feature columns for this "
            f"model. Got {x.shape[1]}."
        )
    if x is None and feature is not None:
        raise ValueError(
            "The 'feature' parameter of write_report needs data to plot "
            f"against. Got feature={feature!r} and no data instead."
        )
    # Every check before the first file is written: a refused report writes nothing.
    j = 0 if x is None else _pick_feature(saved, x, feature, feats)
    images = [_plot_losses(saved, out / "loss_curves.png")]
    sections = [("Loss curves", images[0], "Training and validation MSE per epoch.")]
    metrics_rows: list[tuple[str, dict]] = []
    if x is not None:
        members = member_predictions(saved, x)
        pred = members.mean(axis=0)
        if y is not None:
            mask = val_mask if val_mask is not None else np.zeros(len(x), bool)
            images.append(_plot_pred_true(y, pred, mask, targets, out / "predicted_vs_true.png"))
            sections.append(
                (
                    "Predicted vs true",
                    images[-1],
                    "Each point is a row; the line is a perfect prediction.",
                )
            )
            images.append(_plot_residuals(y, pred, mask, targets, out / "residuals.png"))
            sections.append(("Residuals", images[-1], "True minus predicted."))
            for name, rows in (("train", ~mask), ("validation", mask)):
                if rows.any():
                    label = f"network, {name} rows ({int(rows.sum())})"
                    metrics_rows += metrics_by_target(label, y[rows], pred[rows], targets).items()
        images.append(_plot_curve(saved, x, y, j, feats, targets, out / "fitted_curve.png"))
        sections.append(
            (
                f"Fitted curve along {feats[j]}",
                images[-1],
                "The first target as one feature varies over its observed range.",
            )
        )
    recomputed = any("validation rows" in r[0] for r in metrics_rows)
    for label, m in (run.get("metrics") or {}).items():
        if recomputed and label.startswith("network"):
            continue  # the same rows, just recomputed above
        if isinstance(m, dict) and "r2" in m:
            metrics_rows.append((f"at fit time: {label}", m))
    page = _html(saved, run, source, feats, targets, sections, metrics_rows)
    html_path = plots.write_text(out / "report.html", page)
    return Report(html_path, images)


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
    cfg = meta.get("train_config") or {}
    if cfg:
        facts.append(("training", ", ".join(f"{k}={v}" for k, v in cfg.items())))
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts)
    mrows = "\n".join(
        f"<tr><td>{esc(label)}</td><td>{_r2(m)}</td><td>{m['mse']:.6g}</td>"
        f"<td>{m['mae']:.6g}</td></tr>"
        for label, m in metrics_rows
    )
    metrics = (
        (
            "<h2>Metrics</h2><table><tr><th></th><th>R²</th><th>MSE</th><th>MAE</th></tr>"
            f"{mrows}</table>"
        )
        if metrics_rows
        else ""
    )
    body = "\n".join(
        f"<h2>{esc(title)}</h2><p>{esc(note)}</p>{_img(img)}" for title, img, note in sections
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
{metrics}
{body}
</body></html>
"""
