"""``jaxreg fit`` / ``predict`` on a raw table: text categories, a yes/no column, missing
numbers, a held-out test split that training never sees, and prediction on a file with
reordered columns and a category the model never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxreg.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PROC = ["--no-cache", "--default-xla"]
SETTINGS = ["--hidden", "8", "--epochs", "40", "--lr", "0.01", "--seed", "3", "--quiet"]


def _run(args, capsys):
    code = main([*PROC, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _raw(n, seed):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": [f"house-{seed}-{i}" for i in range(n)],
            "area": rng.uniform(40, 200, n).round(1),
            "district": rng.choice(["north", "south", "east"], n),
            "garden": rng.choice(["yes", "no"], n),
        }
    )
    noise = rng.normal(0, 5, n)
    df["price"] = (
        2.0 * df["area"]
        + df["district"].map({"north": 50.0, "south": 0.0, "east": 20.0})
        + (df["garden"] == "yes") * 30.0
        + noise
    )
    df.loc[::9, "area"] = np.nan  # missing numbers, imputed
    return df


def test_raw_table_fit_predict_and_the_test_rows_stay_unseen(tmp_path, capsys):
    from sklearn.pipeline import make_pipeline

    from jaxreg import MLPRegressor, TablePreprocessor, load
    from jaxreg.data import holdout_split

    df = _raw(160, 0)
    data = tmp_path / "houses.csv"
    df.to_csv(data, index=False)
    feats = "area,district,garden"
    code, out, err = _run(
        ["fit", str(data), "--target", "price", "--features", feats, "--out",
         str(tmp_path / "m"), "--test-fraction", "0.25", "--missing-indicator", "--no-report",
         *SETTINGS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "One-hot encoded: district (3 values), garden (2 values -> one 0/1 column)." in out
    assert "Missing numbers imputed with the training medians with indicator columns: area" in out
    assert "network (test)" in out and "Ridge baseline (test)" in out
    assert "40 test rows (never seen in training)" in out

    # The saved pipeline equals one fitted by the library on the non-test rows only, bit for
    # bit: the test rows reached neither the preprocessing, nor training, nor early stopping.
    tr, val, test = holdout_split(len(df), 0.2, 0.25, 3)
    assert len(test) == 40 and not set(test) & (set(tr) | set(val))
    rows = np.union1d(tr, val)
    ref = make_pipeline(
        TablePreprocessor(missing_indicator=True),
        MLPRegressor(
            hidden_layer_sizes=(8,),
            learning_rate=0.01,
            epochs=40,
            early_stopping=True,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=3,
        ),
    )
    ref.fit(df.iloc[rows][feats.split(",")], df["price"].iloc[rows])
    loaded = load(tmp_path / "m")
    assert loaded[0].to_dict() == ref[0].to_dict()
    for a, b in zip(ref[-1].params_, loaded[-1].params_, strict=True):
        np.testing.assert_array_equal(a.W, b.W)

    # Predict on a new file: columns reordered, an extra column, an unseen district.
    new = _raw(12, 1).drop(columns="price")[["garden", "id", "district", "area"]]
    new.loc[2, "district"] = "west"
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    preds = tmp_path / "preds.csv"
    code, out, err = _run(
        ["predict", str(tmp_path / "m"), str(new_path), "--keep", "id", "--out", str(preds)],
        capsys,
    )
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Warning: Column 'district'"), lines
    assert "'west'" in lines[0] and "1 row(s)" in lines[0]
    got = pd.read_csv(preds)
    assert list(got.columns) == ["id", "price"] and list(got["id"]) == list(new["id"])
    with pytest.warns(Warning, match="'west'"):
        want = loaded.predict(pd.read_csv(new_path))
    np.testing.assert_allclose(got["price"], want, rtol=1e-7)


def test_drop_na_drops_instead_of_imputing(tmp_path, capsys):
    df = _raw(60, 2)
    data = tmp_path / "houses.csv"
    df.drop(columns="id").to_csv(data, index=False)
    code, out, err = _run(
        ["fit", str(data), "--target", "price", "--out", str(tmp_path / "m"), "--drop-na",
         "--no-report", *SETTINGS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert f"Dropped {int(df['area'].isna().sum())} row(s)" in out and "imputed" not in out


def test_cv_reports_k_folds_with_one_compilation(tmp_path, capsys, monkeypatch):
    from jaxreg import runner
    from jaxreg.apps import fitcmd

    df = _raw(80, 4).drop(columns="id")
    data = tmp_path / "houses.csv"
    df.to_csv(data, index=False)
    counts = []
    train = fitcmd._train  # the final fit: count what the folds compiled before it

    def counted(*args, **kwargs):
        counts.append(runner.compile_count())
        return train(*args, **kwargs)

    monkeypatch.setattr(fitcmd, "_train", counted)
    before = runner.compile_count()
    code, out, err = _run(
        ["fit", str(data), "--target", "price", "--out", str(tmp_path / "m"), "--cv", "3",
         "--no-report", *SETTINGS],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    # the three folds (53 or 54 rows each) share one bucket: one executable set at most
    assert counts[0] - before <= 1, counts[0] - before
    line = next(x for x in out.splitlines() if x.startswith("3-fold cross-validation"))
    r2 = float(line.split("R² ")[1].split(" ")[0])
    assert -1 < r2 <= 1
