"""jaxreg.tabular: CSV/Parquet into numeric arrays, with one-line errors for bad files."""

import numpy as np
import pandas as pd
import pytest

from jaxreg import tabular


def _csv(tmp_path, text, name="d.csv", mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_csv_and_parquet_give_the_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(7, 4)), columns=["a", "b", "c", "y"])
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    for name in ("d.csv", "d.parquet"):
        t = tabular.load_xy(tmp_path / name, ["y"], dtype=np.float64)
        assert t.feature_names == ["a", "b", "c"] and t.target_names == ["y"]
        np.testing.assert_allclose(t.x, df[["a", "b", "c"]].to_numpy(), rtol=1e-15)
        np.testing.assert_allclose(t.y, df[["y"]].to_numpy(), rtol=1e-15)
    t = tabular.load_xy(tmp_path / "d.csv", ["y", "a"], features=["c"])
    assert t.x.shape == (7, 1) and t.y.shape == (7, 2) and t.x.dtype == np.float32


def test_bool_columns_are_numeric_and_features_may_be_read_without_targets(tmp_path):
    p = _csv(tmp_path, "a,flag,y\n1,True,2\n2,False,3\n")
    t = tabular.load_xy(p, "y")
    np.testing.assert_array_equal(t.x, [[1, 1], [2, 0]])
    t = tabular.load_features(p, ["a"], targets=["missing"])
    assert t.y is None and t.x.shape == (2, 1)


@pytest.mark.parametrize(
    "content, kwargs, exc, pieces",
    [
        (None, {}, FileNotFoundError, ["does not exist"]),
        ("", {}, ValueError, ["empty (0 bytes)"]),
        ("a,y\n", {}, ValueError, ["no data rows", "'a', 'y'"]),
        (
            "a,y\n1,2\n",
            {"targets": ["z"]},
            ValueError,
            ["'z'", "(targets) not found", "Available columns: 'a', 'y'"],
        ),
        ("a,y\n1,2\n", {"features": ["b"]}, ValueError, ["'b'", "(features)", "Available"]),
        (
            "a,b,y\n1,2,3\n4,oops,6\n",
            {},
            ValueError,
            ["column 'b'", "must be numeric", "'oops'", "row 2 (line 3"],
        ),
        ("a,y\n1,2\n2,x\n", {}, ValueError, ["Target column 'y'", "'x'", "row 2"]),
        (
            "a,y\n1,\n2,3\n3,4\n",
            {},
            ValueError,
            ["1 row(s) with missing values", "row 1", "column 'y'", "drop_na=True"],
        ),
        ("a,y\n1,2\n", {}, ValueError, ["at least 2 data rows", "Got 1"]),
        ("a,y\n1,5\n2,5\n3,5\n", {}, ValueError, ["'y'", "is constant", "5"]),
        ("a,y\n1,inf\n2,5\n", {}, ValueError, ["infinite value (inf)", "'y'", "row 1"]),
        (
            "a,y\n1,2\n",
            {"targets": ["y"], "features": ["y"]},
            ValueError,
            ["both a feature and a target"],
        ),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, content, kwargs, exc, pieces):
    p = tmp_path / "d.csv" if content is None else _csv(tmp_path, content)
    kwargs = {"targets": ["y"], **kwargs}
    with pytest.raises(exc) as info:
        tabular.load_xy(p, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    for piece in pieces:
        assert piece in msg, (piece, msg)


def test_unreadable_encoding_unknown_format_folder_and_bad_parquet(tmp_path):
    p = _csv(tmp_path, "a,y\n1,2\n".encode("utf-16"), mode="wb")
    with pytest.raises(ValueError, match=r"cannot be read as utf-8 text: byte 0xff"):
        tabular.load_xy(p, ["y"])
    q = _csv(tmp_path, "a,y\n1,2\n", name="d.xlsx")
    with pytest.raises(ValueError, match=r"Unknown data format .* one of \['.csv'"):
        tabular.load_xy(q, ["y"])
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ValueError, match="is not a file"):
        tabular.load_xy(tmp_path / "dir.csv", ["y"])
    r = _csv(tmp_path, b"not parquet at all", name="d.parquet", mode="wb")
    with pytest.raises(ValueError, match="is not a readable Parquet file"):
        tabular.load_xy(r, ["y"])
    # Latin-1 text reads when its encoding is given.
    s = _csv(tmp_path, "caf\xe9,y\n1,2\n2,3\n".encode("latin-1"), name="l.csv", mode="wb")
    assert tabular.load_xy(s, ["y"], encoding="latin-1").feature_names == ["caf\xe9"]


def test_drop_na_drops_and_counts_rows(tmp_path):
    p = _csv(tmp_path, "a,b,y\n1,2,3\n,5,6\n7,8,\n10,11,12\n13,14,15\n")
    t = tabular.load_xy(p, ["y"], drop_na=True)
    assert t.n_dropped == 2
    np.testing.assert_array_equal(t.rows, [0, 3, 4])
    np.testing.assert_array_equal(t.x, [[1, 2], [10, 11], [13, 14]])
    # Missing values only in an unused column do not count.
    t = tabular.load_xy(p, ["b"], features=["y"], drop_na=True)
    assert t.n_dropped == 1
    q = _csv(tmp_path, "a,y\n1,\n,2\n", name="e.csv")
    with pytest.raises(ValueError, match="no rows left after dropping the 2 row"):
        tabular.load_xy(q, ["y"], drop_na=True)


def test_column_names_read_only_the_schema_or_the_header(tmp_path):
    from jaxreg.tabular import column_names

    frame = pd.DataFrame({"a b": [1.0, 2.0], "c,d": ["x", "y"], "y": [0.5, 1.5]})
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    for name in ("t.parquet", "t.csv", "t.tsv"):
        assert column_names(tmp_path / name) == ["a b", "c,d", "y"], name
    (tmp_path / "t.json").write_text("{}")
    assert column_names(tmp_path / "t.json") is None
    assert column_names(tmp_path / "missing.csv") is None
