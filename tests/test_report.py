"""The model report: settings, metrics per set of rows (training, validation, test),
permutation importance against scikit-learn computed independently, the ensemble band's
wording, the fitted curve's title and subsampled scatter plots."""

import contextlib
import html
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from jaxreg.cli import main

PROC = ["--no-cache", "--default-xla"]  # in-process runs leave the test process's JAX alone
SEED = 3
VAL, TEST = 0.2, 0.25
UNCONVERGED = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _row(page: str, attr: str, key: str) -> list[str]:
    """The cells of the table row ``<tr data-ATTR="KEY">``."""
    m = re.search(rf'<tr data-{attr}="{re.escape(html.escape(key))}">(.*?)</tr>', page)
    assert m is not None, f"no row {attr}={key!r}"
    return [html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", m.group(1))]


def _table(n=160):
    rng = np.random.default_rng(0)
    signal = rng.uniform(-1, 1, n)
    noise = rng.uniform(-1, 1, n)
    color = rng.choice(["red", "blue", "green"], n).astype(object)
    y = 3.0 * signal + 1.0 * (color == "red") + 0.05 * rng.normal(size=n)
    signal[::17] = np.nan  # missing numbers: imputed with the training median
    color[5::11] = None  # missing text: a category of its own
    return pd.DataFrame({"signal": signal, "noise": noise, "color": color, "y": y})


def _recording(seen: dict):
    """A ``plots.save`` that records each figure's first axes' title and legend texts (the
    axes' legend, else the figure's)."""
    from jaxreg import plots

    save = plots.save

    def recording(fig, path):
        ax = fig.axes[0]
        legend = ax.get_legend() or (fig.legends[0] if fig.legends else None)
        texts = [t.get_text() for t in legend.get_texts()] if legend else []
        seen[str(path).rsplit("/", 1)[-1]] = {"title": ax.get_title(), "legend": texts}
        return save(fig, path)

    return recording


def test_fit_report_settings_sets_importance_and_band(tmp_path, monkeypatch):
    """One ``jaxreg fit`` (text, missing values, test rows, two members) with its
    report, checked against independent computations."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import r2_score

    from jaxreg import plots
    from jaxreg.data import holdout_split
    from jaxreg.estimator import load

    csv, model_dir = tmp_path / "t.csv", tmp_path / "model"
    frame = _table()
    frame.to_csv(csv, index=False)
    argv = [*PROC, "fit", str(csv), "--target", "y", "--hidden", "8", "--epochs", "60"]
    argv += ["--batch-size", "0", "--patience", "0", "--lr", "0.02", "--l2", "0.0001"]
    argv += ["--seed", str(SEED), "--val-fraction", str(VAL), "--test-fraction", str(TEST)]
    argv += ["--ensemble", "2", "--quiet", "--out", str(model_dir)]
    seen: dict[str, dict] = {}
    monkeypatch.setattr(plots, "save", _recording(seen))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    page = (model_dir / "report" / "report.html").read_text()
    run = json.loads((model_dir / "model.json").read_text())["run"]

    # Settings: the options given, the date, the versions and the timings.
    given = {
        "hidden": "8",
        "lr": "0.02",
        "l2": "0.0001",
        "epochs": "60",
        "seed": str(SEED),
        "val_fraction": str(VAL),
        "test_fraction": str(TEST),
        "ensemble": "2",
        "patience": "0",
        "cv": "none",
        "drop_na": "no",
        "activation": "tanh",
        "categorical": "none",
        "date": run["settings"]["date"],
    }
    for key, value in given.items():
        assert _row(page, "setting", key)[1] == value, key
    versions = _row(page, "setting", "versions")[1]
    assert versions.startswith("jaxreg ") and "jax " in versions and "scikit-learn " in versions
    assert _row(page, "setting", "compile_seconds")[1] == f"{run['compile_seconds']:.2f} s"
    assert _row(page, "setting", "run_seconds")[1] == f"{run['run_seconds']:.2f} s"
    assert "<h2>Cross-validation</h2>" not in page

    # Rows: training, validation and test, as holdout_split draws them.
    tr, val, test = holdout_split(len(frame), VAL, TEST, SEED)
    assert len(test) == 40 and len(tr) + len(val) + len(test) == len(frame)
    for name, rows in (("training", tr), ("validation", val), ("test", test)):
        assert f"<td>network, {name} rows ({len(rows)})</td>" in page, name
    pipeline = load(model_dir)
    x = frame.drop(columns="y").iloc[test]
    row = re.search(r"<td>network, test rows \(40\)</td><td>(.*?)</td>", page)
    assert row is not None
    ref_r2 = r2_score(frame["y"].iloc[test], pipeline.predict(x))
    assert float(row.group(1)) == pytest.approx(ref_r2, abs=1e-4)
    assert "at fit time: Ridge baseline (test)" in page
    assert "at fit time: network" not in page  # the same rows, recomputed
    assert "hollow squares" in page
    legend = seen["predicted_vs_true.png"]["legend"]
    assert legend == ["training rows (96)", "validation rows (24)", "test rows (40)"]

    # Permutation importance of the raw columns on the test rows; the reference is
    # scikit-learn's own R² scorer on the loaded pipeline.
    ref = permutation_importance(
        pipeline, x, frame["y"].iloc[test], scoring="r2", n_repeats=5, random_state=SEED
    )
    got = {}
    for j, name in enumerate(x.columns):  # "color" once, not once per category
        _, mean, std = _row(page, "feature", name)
        got[name] = float(mean)
        assert float(mean) == pytest.approx(ref.importances_mean[j], rel=1e-4, abs=1e-5)
        assert float(std) == pytest.approx(ref.importances_std[j], rel=1e-3, abs=1e-5)
    assert got["signal"] > 0.5 > 0.05 > abs(got["noise"])
    assert got["signal"] > got["noise"] and got["color"] > got["noise"]
    assert "on the test rows (never seen in training)" in page
    assert "a one-hot encoded column counts as one" in page
    assert seen["permutation_importance.png"]["title"] == "Permutation importance on test rows (40)"

    # The band: the members' spread, never called a prediction interval.
    curve = seen["fitted_curve.png"]
    band = [t for t in curve["legend"] if "members" in t]
    assert band == [
        "spread across the 2 members (±2 std of their predictions; not a prediction interval)"
    ]
    assert "the band is the spread across the members" in page
    assert page.count("prediction interval") == page.count("not a prediction interval") == 1
    assert curve["title"].endswith("(other features at their median)")

    # The fit draws its report from the table in memory; the same report drawn from the
    # file (as `jaxreg report` does) has the same metrics and importances.
    from jaxreg.report import write_report

    again = write_report(model_dir, out_dir=tmp_path / "again").html.read_text()
    for label in ("training", "validation", "test"):
        n = {"training": len(tr), "validation": len(val), "test": len(test)}[label]
        pattern = rf"<td>network, {label} rows \({n}\)</td>(.*?)</tr>"
        first, second = re.search(pattern, page), re.search(pattern, again)
        assert first is not None and second is not None
        assert first.group(1) == second.group(1), label
    for name in x.columns:
        assert _row(page, "feature", name) == _row(again, "feature", name), name


@UNCONVERGED
def test_a_file_over_max_rows_is_read_every_kth_row_with_the_fits_sets(tmp_path):
    """``max_rows`` reads a larger file in blocks, every k-th row: the rows that
    ``--drop-na`` kept keep their training, validation and test sets of the in-memory
    split (by their place among the kept rows), and the metrics are the network's on
    those rows."""
    from sklearn.metrics import r2_score

    from jaxreg.data import holdout_split
    from jaxreg.estimator import load
    from jaxreg.report import write_report

    csv, model_dir = tmp_path / "t.csv", tmp_path / "model"
    frame = _table(400)
    frame.to_csv(csv, index=False)
    argv = [*PROC, "fit", str(csv), "--target", "y", "--hidden", "8", "--epochs", "20"]
    argv += ["--seed", str(SEED), "--val-fraction", str(VAL), "--test-fraction", str(TEST)]
    argv += ["--drop-na", "--no-report", "--quiet", "--out", str(model_dir)]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    page = write_report(model_dir, max_rows=100, out_dir=tmp_path / "r").html.read_text()
    kept = np.flatnonzero(frame.notna().all(axis=1).to_numpy())
    sampled = np.flatnonzero(kept % 4 == 0)  # ranks among the kept rows of rows 0, 4, 8, ...
    assert f"one row in 4, {len(sampled)} of its 400 rows" in page
    pipeline = load(model_dir)
    split = holdout_split(len(kept), VAL, TEST, SEED)
    for name, ranks in zip(("training", "validation", "test"), split, strict=True):
        mine = kept[np.intersect1d(sampled, ranks)]
        assert f"<td>network, {name} rows ({len(mine)})</td>" in page, name
    mine = kept[np.intersect1d(sampled, split[2])]
    row = re.search(rf"<td>network, test rows \({len(mine)}\)</td><td>(.*?)</td>", page)
    assert row is not None
    want = r2_score(frame["y"].iloc[mine], pipeline.predict(frame.drop(columns="y").iloc[mine]))
    assert float(row.group(1)) == pytest.approx(want, abs=1e-4)


@UNCONVERGED
def test_library_model_one_feature_several_targets_subsampled(tmp_path, monkeypatch):
    """A model saved from the library (no fit record), one feature, two targets, arrays
    as data: the estimator's settings, the one-feature title, the importance as the mean
    over the targets (against scikit-learn), and the subsampling said in the captions."""
    from sklearn.inspection import permutation_importance

    from jaxreg import MLPRegressor, plots, report

    seen: dict[str, dict] = {}
    monkeypatch.setattr(plots, "save", _recording(seen))
    monkeypatch.setattr(report, "MAX_POINTS", 50)
    monkeypatch.setattr(report, "MAX_IMPORTANCE_ROWS", 70)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (90, 1))
    y = np.column_stack([np.sin(3 * x[:, 0]), x[:, 0]])
    model = MLPRegressor(hidden_layer_sizes=(4,), epochs=5, batch_size=None, random_state=11)
    model.fit(x, y)
    saved = model.document().saved
    rep = report.write_report(saved, data=(x, y), out_dir=tmp_path / "r")
    page = rep.html.read_text()

    assert seen["fitted_curve.png"]["title"] == "Fitted curve along 'x0'"
    assert "median" not in page and "prediction interval" not in page  # one member: no band
    assert report.curve_title(["a", "b"], 1).endswith("'b' (other features at their median)")

    assert "Saved from the library" in page
    assert _row(page, "setting", "config.learning_rate")[1] == "0.001"
    assert _row(page, "setting", "config.random_state")[1] == "11"
    assert _row(page, "setting", "train_config.epochs")[1] == "5"
    assert _row(page, "setting", "compile_seconds")[1].endswith(" s")

    assert "<td>network, rows given (90), y0</td>" in page
    assert "their split is unknown" in page
    assert "R² is the mean over the 2 targets" in page
    assert "Scored on a random 70 of the 90 rows" in page
    assert page.count("A random 50 of the 90 rows are drawn (seed 11)") == 3
    # scikit-learn's R² scorer averages the targets too: the same 70 rows, the same seed.
    rows = np.sort(np.random.default_rng(11).choice(90, 70, replace=False))
    ref = permutation_importance(
        model, x[rows], y[rows], scoring="r2", n_repeats=5, random_state=11
    )
    _, mean, std = _row(page, "feature", "x0")
    assert float(mean) == pytest.approx(ref.importances_mean[0], rel=1e-4, abs=1e-5)
    assert float(std) == pytest.approx(ref.importances_std[0], rel=1e-3, abs=1e-5)

    # No held-out rows: the training rows, said so.
    imp = report.permutation_importances(saved, x, y, [("training", np.arange(90))], ["x0"], 0)
    assert imp is not None and imp.which == "training"
    assert "the training rows (no held-out rows" in report._importance_note(imp)
    # A refused report writes nothing.
    with pytest.raises(ValueError, match="2 target column"):
        report.write_report(saved, data=(x, y[:, :1]), out_dir=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_cross_validation_rows_are_mean_and_std_over_the_folds():
    from jaxreg.report import _cv_html

    folds = {"r2": [0.5, None, 0.7], "mse": [1.0, 2.0, 3.0], "mae": [0.5, 0.5, 0.5]}
    page = _cv_html({"cv": {"folds": 3, "seed": 4, "metrics": {"network, a": folds}}})
    cells = _row(page, "cv", "network, a")
    assert cells == [
        "network, a",
        "0.6000 ± 0.1000 (2 of 3 folds)",
        f"{2.0:.6g} ± {np.std([1.0, 2.0, 3.0]):.6g}",
        "0.5 ± 0",
    ]
    assert "3-fold cross-validation" in page and "test rows left out, seed 4" in page
    assert _cv_html({"cv": None}) == _cv_html({}) == ""


def test_figures_leave_pyplot_and_the_backend_alone(tmp_path):
    # A report drawn from a notebook must not switch the user's backend or leave figures
    # open in pyplot: jaxreg's figures are plain matplotlib Figures, saved by Agg.
    import matplotlib
    import matplotlib.pyplot as plt

    from jaxreg import plots

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        opened = plt.get_fignums()
        fig, ax = plots.figure()
        ax.plot([0, 1], [1, 0])
        path = plots.save(fig, tmp_path / "line.png")
        assert path.read_bytes().startswith(b"\x89PNG")
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == opened
    finally:
        matplotlib.use(before)
