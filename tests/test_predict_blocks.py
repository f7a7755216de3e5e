"""``jaxreg predict`` of a table larger than ``--max-memory``: read, predicted and written
one block of rows at a time, with the same output as the whole table at once, bounded
blocks, one warning per column for the whole table, and nothing replaced when a late block
fails. ``tabular.read_blocks`` against ``read_table``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaxreg import MLPRegressor, TablePreprocessor, save, tabular
from jaxreg.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PROC = ["--no-cache", "--default-xla"]
ROWS = 3000
SMALL = "16KB"  # 256-row blocks (the least) for every model below


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "id": [f"r{seed}-{i}" for i in range(n)],
            "a": rng.normal(size=n),
            "b": rng.normal(size=n),
            "c": rng.choice(["x", "y", "z"], n),
        }
    )
    df["y"] = np.sin(df["a"]) + 0.5 * df["b"] + (df["c"] == "x") + rng.normal(0, 0.1, n)
    return df


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A pipeline with preprocessing (a text column, missing numbers) and a bare network
    on numbers, each an ensemble of two (so ``--std`` has values), saved."""
    from sklearn.pipeline import make_pipeline

    root = tmp_path_factory.mktemp("models")
    df = _table(400, 0)
    df.loc[::9, "a"] = np.nan
    settings = {"hidden_layer_sizes": (8,), "epochs": 30, "random_state": 0, "n_ensemble": 2}
    pipe = make_pipeline(TablePreprocessor(), MLPRegressor(**settings))
    pipe.fit(df[["a", "b", "c"]], df["y"])
    save(pipe, root / "pipe")
    complete = df.dropna()
    net = MLPRegressor(**settings).fit(complete[["a", "b"]], complete["y"])
    save(net, root / "net")
    return root


def _new_table(tmp_path, suffix: str) -> tuple[str, pd.DataFrame]:
    df = _table(ROWS, 1)
    df.loc[::11, "a"] = np.nan
    df.loc[[5, 900, 2999], "c"] = "w"  # unseen by fit, in three different blocks
    df.loc[1500, "c"] = "v"
    path = tmp_path / f"new{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path, row_group_size=700)
    else:
        df.to_csv(path, index=False)
    return str(path), df


def _predict(args, capsys):
    code = main([*PROC, "predict", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_blocks_predict_what_the_whole_table_predicts(
    tmp_path, capsys, models, suffix, monkeypatch
):
    data, df = _new_table(tmp_path, suffix)
    seen = []
    read_blocks = tabular.read_blocks

    def spy(*args, **kwargs):
        for block in read_blocks(*args, **kwargs):
            seen.append(len(block))
            yield block

    common = [str(models / "pipe"), data, "--keep", "id", "--std"]
    code, _, err_whole = _predict([*common, "--out", str(tmp_path / "whole.csv")], capsys)
    assert code == 0 and not seen
    monkeypatch.setattr(tabular, "read_blocks", spy)
    code, out, err_blocks = _predict(
        [*common, "--out", str(tmp_path / "blocks.csv"), "--max-memory", SMALL], capsys
    )
    assert code == 0, err_blocks
    assert "(256 rows at a time)" in out
    assert max(seen) == 256 and sum(seen) == ROWS  # never more than a block at once
    whole = pd.read_csv(tmp_path / "whole.csv")
    blocks = pd.read_csv(tmp_path / "blocks.csv")
    assert list(blocks.columns) == ["id", "y", "y_std"]
    pd.testing.assert_series_equal(blocks["id"], df["id"])
    np.testing.assert_array_equal(blocks["y"], whole["y"])
    np.testing.assert_allclose(blocks["y_std"], whole["y_std"], rtol=1e-6)
    # one warning line for the whole table, the same as the whole table's
    warned = [ln for ln in err_blocks.splitlines() if ln.startswith("Warning:")]
    assert warned == [ln for ln in err_whole.splitlines() if ln.startswith("Warning:")]
    assert warned == [
        "Warning: Column 'c' holds 2 value(s) not seen in fit ('v', 'w') in 4 row(s); they "
        "are encoded as all zeros."
    ]
    # the model itself on the whole frame: the reference
    from jaxreg import load
    from jaxreg.preprocess import UnknownCategoryWarning

    with pytest.warns(UnknownCategoryWarning):
        want = load(models / "pipe").predict(df[["a", "b", "c"]])
    np.testing.assert_allclose(blocks["y"], want, rtol=1e-6, atol=1e-7)


def test_blocks_to_stdout_with_dropped_rows(tmp_path, capsys, models):
    data, df = _new_table(tmp_path, ".parquet")
    common = [str(models / "net"), data, "--drop-na"]
    code, whole, err_whole = _predict(common, capsys)
    assert code == 0
    code, blocks, err_blocks = _predict([*common, "--max-memory", SMALL], capsys)
    assert code == 0
    assert blocks == whole
    dropped = int(df["a"].isna().sum())
    assert f"{dropped} row(s) with missing features got empty predictions" in err_blocks
    got = pd.read_csv(__import__("io").StringIO(blocks))
    assert got["y"].isna().to_numpy().tolist() == df["a"].isna().tolist()


def test_a_bad_value_in_a_late_block_replaces_nothing(tmp_path, capsys, models):
    df = _table(ROWS, 2)[["id", "a", "b"]].astype({"a": object})
    df.loc[2500, "a"] = "n/a?"
    data = tmp_path / "bad.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "preds.csv"
    out.write_text("the old predictions\n")
    code, printed, err = _predict(
        [str(models / "net"), str(data), "--out", str(out), "--max-memory", SMALL], capsys
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "'a'" in lines[0] and "row 2501 (line 2502 of the file)" in lines[0]
    assert "'n/a?'" in lines[0]
    assert out.read_text() == "the old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "preds.csv"]


def test_every_row_dropped_is_refused_and_replaces_nothing(tmp_path, capsys, models):
    df = _table(600, 3)[["a", "b"]]
    df.loc[:, "a"] = np.nan
    data = tmp_path / "empty.parquet"
    df.to_parquet(data)
    out = tmp_path / "preds.csv"
    out.write_text("old\n")
    code, _, err = _predict(
        [str(models / "net"), str(data), "--drop-na", "--out", str(out), "--max-memory", "1KB"],
        capsys,
    )
    assert code == 2 and "no rows left" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet", "preds.csv"]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv"])
def test_read_blocks_is_read_table_in_pieces(tmp_path, suffix):
    df = _table(1000, 4)
    df.loc[::13, "b"] = np.nan
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path, row_group_size=300)
    else:
        df.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    cols = ["c", "b", "id"]
    parts = list(tabular.read_blocks(path, cols, 128))
    assert [len(p) for p in parts] == [128] * 7 + [104]
    assert [int(p.index[0]) for p in parts] == list(range(0, 1000, 128))
    pd.testing.assert_frame_equal(pd.concat(parts), tabular.read_table(path)[cols])
    with pytest.raises(ValueError, match=r"Column\(s\) 'nope'"):
        next(tabular.read_blocks(path, ["a", "nope"], 128))


def test_read_blocks_names_an_undecodable_byte(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="cannot be read as utf-8 text"):
        list(tabular.read_blocks(path, ["a", "b"], 10))
    (block,) = tabular.read_blocks(path, ["a", "b"], 10, encoding="latin-1")
    assert block["b"].tolist() == ["café"]


@pytest.mark.parametrize("limit", [None, SMALL])
def test_predictions_to_tsv(tmp_path, capsys, models, limit):
    """``--out *.tsv`` writes tab-separated text (whole or in blocks): the CSV's cells."""
    data, _ = _new_table(tmp_path, ".parquet")
    more = [] if limit is None else ["--max-memory", limit]
    common = [str(models / "pipe"), data, "--keep", "id", *more]
    assert _predict([*common, "--out", str(tmp_path / "p.csv")], capsys)[0] == 0
    assert _predict([*common, "--out", str(tmp_path / "p.tsv")], capsys)[0] == 0
    csv_text = (tmp_path / "p.csv").read_text()
    assert (tmp_path / "p.tsv").read_text() == csv_text.replace(",", "\t")


@pytest.mark.parametrize("limit", [None, SMALL])
def test_predictions_to_parquet(tmp_path, capsys, models, limit):
    """``--out *.parquet`` writes Parquet (whole or in blocks): the same values as CSV, the
    kept column with its own type."""
    data, df = _new_table(tmp_path, ".parquet")
    more = [] if limit is None else ["--max-memory", limit]
    common = [str(models / "pipe"), data, "--keep", "id", "--std", *more]
    assert _predict([*common, "--out", str(tmp_path / "p.csv")], capsys)[0] == 0
    code, out, err = _predict([*common, "--out", str(tmp_path / "p.parquet")], capsys)
    assert code == 0, err
    got = pd.read_parquet(tmp_path / "p.parquet")
    want = pd.read_csv(tmp_path / "p.csv")
    assert list(got.columns) == ["id", "y", "y_std"] and len(got) == ROWS
    pd.testing.assert_series_equal(got["id"], df["id"])
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-8)  # the CSV's 9 digits
    np.testing.assert_allclose(got["y_std"], want["y_std"], rtol=1e-8)


def test_a_kept_column_that_changes_type_between_blocks_is_refused(tmp_path, capsys, models):
    df = _table(ROWS, 5)[["id", "a", "b"]]
    df["id"] = np.arange(ROWS).astype(object)
    df.loc[2000, "id"] = "x-2000"  # pandas reads later blocks' ids as text
    data = tmp_path / "ids.csv"
    df.to_csv(data, index=False)
    out = tmp_path / "p.parquet"
    code, _, err = _predict(
        [str(models / "net"), str(data), "--keep", "id", "--out", str(out), "--max-memory", SMALL],
        capsys,
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "column 'id' reads as int64 in the first block" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.csv"]


def test_the_csv_writer_spells_what_pandas_spells():
    """``jaxreg predict``'s CSV text against pandas' ``to_csv(float_format="%.9g")``, the
    reference: numbers of every size, NaN, infinities, -0, float32, ints, flags, text that
    needs quotes, a missing text, a lone empty cell, odd column names, no rows, dates (left
    to pandas)."""
    from jaxreg.tablepredict import csv_text

    rng = np.random.default_rng(8)
    n = 500
    a = rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)
    a[::7] = np.nan
    a[3], a[5], a[6] = -0.0, np.inf, -np.inf
    words = ["plain", "with,comma", 'with "quote"', "two\nlines", "", None, "ünïcode"]
    text = np.array((words * n)[:n], dtype=object)
    ids = np.arange(n)
    frames = [
        pd.DataFrame({"id": ids, "t": text, "flag": ids % 2 == 0, "y": a, "f": a.astype("f4")}),
        pd.DataFrame({"id": ids, "y": a, "y_std": np.abs(a)}),
        pd.DataFrame({"y": a}),  # one column: a missing value is a lone empty cell
        pd.DataFrame({"a,b": a[:9], 'q"x': ids[:9]}),
        pd.DataFrame({"y": a[:0], "y_std": a[:0]}),
        pd.DataFrame({"d": pd.date_range("2020-01-01", periods=5), "y": a[:5]}),
    ]
    for frame in frames:
        for header in (True, False):
            for sep in (",", "\t"):
                want = frame.to_csv(index=False, header=header, float_format="%.9g", sep=sep)
                assert csv_text(frame, header, sep) == want, (list(frame.columns), header, sep)


def test_the_library_predicts_a_table_into_a_stream(tmp_path, models):
    """``jaxreg.predict_table`` from Python: blocks of a text stream, one merged
    ``UnknownCategoryWarning`` for the column, and the model's own predictions."""
    import io

    import jaxreg
    from jaxreg.preprocess import UnknownCategoryWarning

    data, df = _new_table(tmp_path, ".csv")
    model = jaxreg.load(models / "pipe")
    buffer = io.StringIO()
    with pytest.warns(UnknownCategoryWarning) as record:
        done = jaxreg.predict_table(model, data, buffer, keep=["id"], max_memory=16 * 1024)
    assert done == (ROWS, 0, 256, -(-ROWS // 256))
    (warned,) = [w.message for w in record if w.category is UnknownCategoryWarning]
    assert (warned.column, warned.values, warned.rows) == ("c", {"v", "w"}, 4)
    got = pd.read_csv(io.StringIO(buffer.getvalue()))
    with pytest.warns(UnknownCategoryWarning):
        want = model.predict(df[["a", "b", "c"]])
    pd.testing.assert_series_equal(got["id"], df["id"])
    np.testing.assert_allclose(got["y"], want, rtol=1e-8, atol=1e-12)  # nine digits
