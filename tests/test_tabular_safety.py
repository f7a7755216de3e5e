"""Safety of reading user tables: true byte offsets, duplicate headers, ``jaxreg sweep``
reading files exactly as ``jaxreg fit`` does, and sweep options checked before any work."""

import argparse
import gzip

import numpy as np
import pandas as pd
import pytest

from jaxreg import tabular
from jaxreg.apps import sweepcmd
from jaxreg.cli import main

# In-process runs leave the test process's JAX settings alone.
PROC = ["--no-cache", "--default-xla"]
# A sweep that would finish in moments if it ever started.
TINY = ["--hidden", "1", "--epochs", "1", "--seeds", "1", "--plain"]


def _run(args, capsys):
    code = main([*PROC, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err: str, prefix: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0][len(prefix) :]


# ------------------------------------------------------------------ 1. true byte offset


def _big_text_then_bad_byte() -> bytes:
    rows = ["a,y"] + [f"{i},{2 * i + 1}" for i in range(50_000)]
    data = ("\n".join(rows) + "\n").encode("ascii")
    assert len(data) > 300_000  # far past pandas' first decoding piece
    return data + "caf\u00e9,1\n".encode("latin-1")


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz"])
def test_invalid_byte_is_reported_at_its_offset_in_the_file(tmp_path, name):
    data = _big_text_then_bad_byte()
    offset = data.index(b"\xe9")
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    # the offset is the first one UTF-8 refuses, from the start of the text
    with pytest.raises(UnicodeDecodeError) as raw:
        data.decode("utf-8")
    assert raw.value.start == offset
    with pytest.raises(ValueError) as info:
        tabular.read_table(p)
    msg = str(info.value)
    assert "\n" not in msg and name in msg
    assert f"byte 0xe9 at offset {offset}" in msg, msg
    # the same file is valid latin-1: the byte, not the reader, is the problem
    assert tabular.read_table(p, encoding="latin-1").shape == (50_001, 2)


def test_invalid_byte_offset_counts_the_byte_order_mark(tmp_path):
    data = b"\xef\xbb\xbf" + b"a,y\n" + b"1,2\n" * 100_000 + b"3,\xff\n"
    p = tmp_path / "d.csv"
    p.write_bytes(data)
    offset = data.index(b"\xff")
    with pytest.raises(ValueError, match=rf"byte 0xff at offset {offset} is invalid"):
        tabular.read_table(p, encoding="utf-8-sig")


# ------------------------------------------------------------------ 2. duplicate columns


@pytest.mark.parametrize("name, sep", [("d.csv", ","), ("d.tsv", "\t")])
def test_a_text_header_naming_a_column_twice_is_refused(tmp_path, name, sep):
    header = ["a", "b", "a", "c", "b", "y"]
    p = tmp_path / name
    p.write_text(sep.join(header) + "\n" + sep.join("123456") + "\n" + sep.join("234567") + "\n")
    # pandas alone would rename the second 'a' silently
    assert "a.1" in pd.read_csv(p, sep=sep).columns
    with pytest.raises(ValueError) as info:
        tabular.load_xy(p, "y")
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg and "more than once" in msg
    dup = {c for c in header if header.count(c) > 1}
    for c in header:
        assert (repr(c) in msg) == (c in dup), (c, msg)


def test_a_parquet_schema_naming_a_column_twice_is_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    names = ["x", "y", "x"]
    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1.0, 2.0, 3.0])] * 3, names=names), p)
    assert pq.read_schema(p).names == names
    with pytest.raises(ValueError) as info:
        tabular.load_xy(p, "y")
    msg = str(info.value)
    assert "\n" not in msg and str(p) in msg and "more than once" in msg
    assert "'x'" in msg and "'y'" not in msg


def test_distinct_names_that_look_renamed_are_kept(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,a.1,y\n1,2,3\n4,5,7\n")
    t = tabular.load_xy(p, "y")
    assert t.feature_names == ["a", "a.1"]
    np.testing.assert_array_equal(t.x, [[1, 2], [4, 5]])


def test_sweep_refuses_a_duplicated_column(tmp_path, capsys):
    p = tmp_path / "d.csv"
    p.write_text("x,x,y\n1,2,3\n2,3,5\n3,4,6\n")
    code, _, err = _run(
        ["sweep", "--data", str(p), "--target", "y", "--out", str(tmp_path / "o"), *TINY], capsys
    )
    assert code == 2
    line = _one_line(err, "jaxreg sweep: error: ")
    assert "'x'" in line and "more than once" in line and str(p) in line
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 3. sweep reads as fit


BAD_FILES = [
    ("non-numeric target", "d.csv", "a,y\n1,2\n2,three\n3,4\n", ["row 2", "'three'"]),
    ("non-numeric feature", "d.csv", "a,y\n1,2\n2,3\nfour,4\n", ["row 3", "'four'"]),
    ("missing value", "d.csv", "a,y\n1,2\n2,\n3,4\n", ["row 2", "'y'"]),
    ("infinite value", "d.csv", "a,y\n1,2\n2,3\n3,4\ninf,5\n", ["row 4", "'a'"]),
    ("constant target", "d.csv", "a,y\n1,7\n2,7\n3,7\n4,7\n", ["'y'", "constant"]),
    ("tsv non-numeric", "d.tsv", "a\ty\n1\t2\n2\tthree\n3\t4\n", ["row 2", "'three'"]),
    ("missing target", "d.csv", "a,b\n1,2\n2,3\n", ["'y'", "not found"]),
]


@pytest.mark.parametrize("case, name, text, pieces", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_sweep_refuses_a_bad_file_with_fits_message(tmp_path, capsys, case, name, text, pieces):
    p = tmp_path / name
    p.write_text(text)
    code, _, err = _run(["fit", str(p), "--target", "y", "--out", str(tmp_path / "model")], capsys)
    assert code == 2
    fit_line = _one_line(err, "jaxreg fit: error: ")
    code, _, err = _run(
        ["sweep", "--data", str(p), "--target", "y", "--out", str(tmp_path / "o"), *TINY], capsys
    )
    assert code == 2
    assert _one_line(err, "jaxreg sweep: error: ") == fit_line
    for piece in pieces:  # rows counted from 1 as data rows, as the file was written
        assert piece in fit_line, (piece, fit_line)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.parquet"])
def test_sweep_load_table_reads_every_format_as_load_xy(tmp_path, name):
    rng = np.random.default_rng(3)
    df = pd.DataFrame(rng.normal(size=(9, 4)), columns=["a", "b", "c", "y"])
    p = tmp_path / name
    if name.endswith(".parquet"):
        df.to_parquet(p)
    else:
        df.to_csv(p, sep="\t" if name.endswith(".tsv") else ",", index=False)
    x, y, feats, targets = sweepcmd.load_table(str(p), "y,a", "c,b")
    assert feats == ["c", "b"] and targets == ["y", "a"]
    np.testing.assert_allclose(x, df[["c", "b"]].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(y, df[["y", "a"]].to_numpy(), rtol=1e-6)
    assert x.dtype == np.float32 and y.dtype == np.float32


# ------------------------------------------------------------------ 4. sweep options


def _small_csv(tmp_path, n=10):
    p = tmp_path / "d.csv"
    pd.DataFrame({"x": np.arange(n, dtype=float), "y": np.arange(n) ** 2.0}).to_csv(p, index=False)
    return p


def _sweep_without_data(tmp_path, option: str, value: str) -> list[str]:
    """``jaxreg sweep`` on a data file that does not exist: an option must be refused first."""
    data = str(tmp_path / "none.csv")
    return [
        "sweep",
        "--data",
        data,
        "--target",
        "y",
        option,
        value,
        "--out",
        str(tmp_path / "o"),
        *TINY,
    ]


@pytest.mark.parametrize("value", ["-1", "4294967296"])
def test_sweep_split_seed_out_of_range_is_refused_before_any_work(tmp_path, capsys, value):
    # the data file does not exist: the option is checked first
    code, _, err = _run(_sweep_without_data(tmp_path, "--split-seed", value), capsys)
    assert code == 2
    line = _one_line(err, "jaxreg sweep: error: ")
    assert line == f"--split-seed must be an integer in [0, 4294967295]. Got {value}."
    assert not (tmp_path / "o").exists()


def test_sweep_split_seed_range_is_the_generators(tmp_path):
    top = 2**32 - 1
    np.random.default_rng(top)  # the largest accepted seed is a valid NumPy seed
    args = argparse.Namespace(val_fraction=0.2, split_seed=top, out=str(tmp_path / "o"))
    sweepcmd.check_args(args)
    with pytest.raises(ValueError, match="--split-seed"):
        sweepcmd.check_args(
            argparse.Namespace(val_fraction=0.2, split_seed=-1, out=str(tmp_path / "o"))
        )


@pytest.mark.parametrize("value", ["-0.1", "0", "1", "1.5", "nan"])
def test_sweep_val_fraction_outside_0_1_is_refused_before_any_work(tmp_path, capsys, value):
    code, _, err = _run(_sweep_without_data(tmp_path, "--val-fraction", value), capsys)
    assert code == 2
    line = _one_line(err, "jaxreg sweep: error: ")
    assert line.startswith("--val-fraction must be a float in (0, 1)"), line
    assert line.endswith(f"Got {float(value)!r}."), line


def test_sweep_val_fraction_leaving_no_training_rows_names_the_option(tmp_path, capsys):
    p = _small_csv(tmp_path, n=10)
    code, _, err = _run(
        [
            "sweep",
            "--data",
            str(p),
            "--target",
            "y",
            "--val-fraction",
            "0.99",
            "--out",
            str(tmp_path / "o"),
            *TINY,
        ],
        capsys,
    )
    assert code == 2
    line = _one_line(err, "jaxreg sweep: error: ")
    n_val = round(0.99 * 10)
    assert line.startswith("--val-fraction 0.99 of 10 rows"), line
    assert f"holds out {n_val} row(s) and leaves {10 - n_val} for training" in line
    assert not (tmp_path / "o").exists()
