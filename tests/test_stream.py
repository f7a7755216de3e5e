"""Tables streamed from disk (``jaxreg.stream``, ``runner.run_stream``, ``MLPRegressor.fit``
on a ``TableStream``, ``jaxreg fit --max-memory``): equal to in-memory training when the
buffer holds the table, a stable hash split, bounded memory, checkpoints and resume."""

from __future__ import annotations

import re

import jax
import numpy as np
import pandas as pd
import pytest

from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams
from jaxreg.runner import run, run_stream
from jaxreg.stream import TableStream, held_out_mask, parse_size


def _table(path, n=1500, row_group_size=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    df = pd.DataFrame(x, columns=["a", "b", "c"])
    df["y"] = np.sin(x).sum(1) + 0.1 * rng.normal(size=n)
    if str(path).endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, row_group_size=row_group_size)
    return df


def _transform(stream):
    xs, ys = stream.scalers()
    d = len(stream.feature_names)

    def transform(v):
        return (
            ((v[:, :d] - xs.mean) / xs.scale).astype(np.float32),
            ((v[:, d:] - ys.mean) / ys.scale).astype(np.float32),
        )

    return transform


def test_streaming_equals_in_memory_when_the_buffer_holds_the_table(tmp_path):
    """Bit for bit, up to early stopping's stop: the same batches in the same order."""
    cfg = TrainConfig(12, "adam", batch_size=100, sampling="shuffle", patience=2, tol=0.05)
    df = _table(tmp_path / "t.parquet")
    stream = TableStream(tmp_path / "t.parquet", "y", val_fraction=0.2, seed=3, block_rows=250)
    transform = _transform(stream)
    values = df.to_numpy()
    val = held_out_mask(np.arange(len(df)), 0.2, 3)
    xt, yt = transform(values[~val])
    xv, yv = transform(values[val])
    data = Dataset(xt, yt, xv, yv, np.ones(len(xt), np.float32), np.int32(len(xt)))
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), 1))
    spec = MLPSpec((3, 8, 1))
    mem = run(spec, cfg, data, Hparams(1e-2), keys).result
    got = run_stream(spec, cfg, stream, Hparams(1e-2), keys, transform, chunk_steps=4).result
    pairs = zip(jax.tree.leaves(mem.best_params), jax.tree.leaves(got.best_params), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(mem.epochs_run, got.epochs_run)
    # A whole in-memory run keeps recording after a stop; the streamed one ends there.
    r = got.history.epoch.shape[1]
    np.testing.assert_array_equal(mem.history.epoch[:, :r], got.history.epoch)
    np.testing.assert_array_equal(mem.history.val_mse[:, :r], got.history.val_mse)
    np.testing.assert_allclose(mem.history.objective[:, :r], got.history.objective, rtol=1e-6)
    np.testing.assert_allclose(mem.train_mse, got.train_mse, rtol=1e-5)
    np.testing.assert_allclose(mem.val_mse, got.val_mse, rtol=1e-5)
    assert int(got.epochs_run[0]) < cfg.epochs  # the rule stopped both runs early


def test_the_hash_split_is_stable_across_runs_row_groups_blocks_and_formats(tmp_path):
    df = _table(tmp_path / "a.parquet", n=2000, row_group_size=300)
    df.to_parquet(tmp_path / "b.parquet", row_group_size=1000)
    df.to_csv(tmp_path / "c.csv", index=False)
    scans = [
        TableStream(tmp_path / name, "y", val_fraction=0.25, seed=7, block_rows=block).scan()
        for name, block in (("a.parquet", 128), ("b.parquet", 999), ("c.csv", 333))
    ]
    val = held_out_mask(np.arange(2000), 0.25, 7)
    assert np.array_equal(val, held_out_mask(np.arange(2000), 0.25, 7))  # a pure function
    assert 0.2 < val.mean() < 0.3
    train = df.to_numpy()[~val]
    for s in scans:
        assert (s.n_rows, s.n_val, s.n_train) == (2000, int(val.sum()), int((~val).sum()))
        np.testing.assert_array_equal(s.x_val, df[["a", "b", "c"]].to_numpy()[val])
        np.testing.assert_allclose(s.x_mean, train[:, :3].mean(0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.x_std, train[:, :3].std(0), rtol=1e-12)
        np.testing.assert_allclose(s.y_std, train[:, 3:].std(0), rtol=1e-12)
    other_seed = held_out_mask(np.arange(2000), 0.25, 8)
    assert not np.array_equal(val, other_seed)


def test_memory_stays_bounded_and_a_small_buffer_still_trains(tmp_path):
    """A 20,000-row table through a buffer of 1,024 rows: never more than the buffer, one
    block and the held-out rows are held at once, and the model still learns."""
    n = 20_000
    df = _table(tmp_path / "t.parquet", n=n, row_group_size=2000)
    stream = TableStream(
        tmp_path / "t.parquet", "y", buffer_rows=1024, block_rows=256, held_rows=500
    )
    from jaxreg import MLPRegressor

    model = MLPRegressor((16,), epochs=3, batch_size=128, random_state=0, tol=None)
    model.fit(stream)
    bound = 1024 + 128 + 2 * 256 + 500  # buffer, a batch carried over, blocks, held rows
    assert stream.max_rows_held <= bound < n // 8, stream.max_rows_held
    assert model.n_rows_streamed_ == n
    pred = model.predict(df[["a", "b", "c"]])
    r2 = 1 - np.mean((pred - df.y) ** 2) / np.var(df.y)
    assert r2 > 0.8, r2


def test_a_streamed_fit_resumes_from_its_checkpoint(tmp_path):
    from jaxreg import MLPRegressor
    from jaxreg.checkpoint import Checkpointer

    _table(tmp_path / "t.parquet", n=1200)

    def fit(**kw):
        stream = TableStream(tmp_path / "t.parquet", "y", buffer_rows=500, block_rows=200)
        model = MLPRegressor((8,), epochs=6, batch_size=64, random_state=0, tol=None)
        return model.fit(stream, **kw)

    whole = fit()

    def stop_after_3(progress):
        if progress.epoch == 3:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        fit(callbacks=[stop_after_3], checkpoint=Checkpointer(ckpt, every=1))
    resumed = fit(checkpoint=Checkpointer(ckpt, every=1, resume=True))
    assert resumed.n_iter_ == whole.n_iter_ == 6
    for a, b in zip(whole.params_, resumed.params_, strict=True):
        np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(whole.loss_curve_, resumed.loss_curve_)


def test_cli_streams_a_table_over_the_memory_budget(tmp_path, capsys):
    from sklearn.metrics import r2_score

    from jaxreg import load
    from jaxreg.cli import main
    from jaxreg.report import write_report

    df = _table(tmp_path / "t.parquet", n=1000)
    args = ["--no-cache", "--default-xla", "fit", str(tmp_path / "t.parquet"), "--target", "y"]
    code = main([*args, "--out", str(tmp_path / "m"), "--max-memory", "1KB", "--epochs", "3"])
    out = capsys.readouterr().out
    assert code == 0 and "Streaming" in out and "Saved the model" in out
    assert "(--max-memory 1.0 KiB)" in out
    pred = load(tmp_path / "m").predict(df[["a", "b", "c"]])
    assert np.mean((pred - df.y) ** 2) < np.var(df.y)
    # The report covers the rows kept in memory (the training sample, the kept held-out
    # rows) and says so; its network metrics are those the command printed.
    page = (tmp_path / "m" / "report" / "report.html").read_text()
    assert "streamed: its" in page and "are a sample (one in" in page
    printed = re.search(r"network \(validation\)\s*│\s*([-0-9.]+)", out)
    shown = re.search(r"<td>network, validation rows \((\d+)\)</td><td>([-0-9.]+)</td>", page)
    assert printed and shown, page[:3000]
    assert float(shown.group(2)) == pytest.approx(float(printed.group(1)), abs=1e-4)
    for name in ("loss_curves", "predicted_vs_true", "residuals", "fitted_curve"):
        assert (tmp_path / "m" / "report" / f"{name}.png").stat().st_size > 0
    # A later report reads the recorded table within its budget: whole here (1,000 rows
    # is the least it keeps); the library without max_rows asks for data.
    before = (tmp_path / "m" / "model.json").read_bytes()
    with pytest.raises(ValueError, match=r"streamed from disk \(1,000 rows"):
        write_report(tmp_path / "m")
    assert (tmp_path / "m" / "model.json").read_bytes() == before
    assert main(["report", str(tmp_path / "m"), "--max-memory", "1KB"]) == 0
    assert "t.parquet</td>" in (tmp_path / "m" / "report" / "report.html").read_text()
    assert main(["report", str(tmp_path / "m"), "--data", str(tmp_path / "t.parquet")]) == 0
    capsys.readouterr()
    # Beyond max_rows, every k-th row: the page says which, the rows held out by the fit's
    # hash are the validation rows, and the metrics are the network's on those rows.
    rep = write_report(tmp_path / "m", max_rows=100, out_dir=tmp_path / "sampled")
    page = rep.html.read_text()
    assert "one row in 10, 100 of its 1,000 rows (read in blocks, never whole)" in page
    rows = np.arange(0, 1000, 10)
    val = rows[held_out_mask(rows, 0.2, 0)]  # the command's --val-fraction and --seed
    shown = re.search(r"<td>network, validation rows \((\d+)\)</td><td>([-0-9.]+)</td>", page)
    assert shown and int(shown.group(1)) == len(val) > 0, page[:3000]
    want = r2_score(df.y.to_numpy()[val], pred[val])
    assert float(shown.group(2)) == pytest.approx(want, abs=1e-4)
    # The budget is compared with every used column: 1,000 rows x 4 take 16 KB, more than
    # 12 KB (the target and one feature alone would fit).
    assert main([*args, "--out", str(tmp_path / "w"), "--max-memory", "12KB", "--epochs", "1"]) == 0
    assert "Streaming" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "v"), "--max-memory", "17KB", "--epochs", "1"]) == 0
    assert "Streaming" not in capsys.readouterr().out
    # Test rows: held out by the same hash, scored apart.
    test_args = ["--max-memory", "1KB", "--epochs", "1", "--test-fraction", "0.2"]
    assert main([*args, "--out", str(tmp_path / "t"), *test_args]) == 0
    out = capsys.readouterr().out
    assert "test rows (by a hash" in out and "│ network (test)" in out
    # Options that need the table in memory are refused in one line, nothing written.
    code = main([*args, "--out", str(tmp_path / "n"), "--max-memory", "1KB", "--cv", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "--cv is not available when the table is streamed" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "n").exists()
    df.assign(c=df.c.astype(str) + "x").to_parquet(tmp_path / "text.parquet")
    code = main(
        [*args[:3], str(tmp_path / "text.parquet"), "--target", "y"]
        + ["--out", str(tmp_path / "n"), "--max-memory", "1KB"]
    )
    err = capsys.readouterr().err  # 1,000 distinct texts: an identifier, as in memory
    assert code == 2 and "Column 'c' holds more than 100 distinct text values" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "n").exists()


def test_cli_streams_text_columns_and_missing_values(tmp_path, capsys):
    from jaxreg import load
    from jaxreg.cli import main

    df = _mixed(tmp_path / "t.csv")
    args = ["--no-cache", "--default-xla", "fit", str(tmp_path / "t.csv"), "--target", "y"]
    args += ["--max-memory", "1KB", "--epochs", "4", "--missing-indicator"]
    assert main([*args, "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "Streaming" in out and "One-hot encoded: colour (4 values)" in out
    model = load(tmp_path / "m")  # the preprocessing and the network, one pipeline
    assert list(model.named_steps["tablepreprocessor"].feature_names_out_)[:4] == [
        "a",
        "b",
        "flag",
        "missingindicator_a",
    ]
    raw = df.drop(columns="y")
    pred = model.predict(raw)
    assert np.isfinite(pred).all() and np.mean((pred - df.y) ** 2) < 0.5 * np.var(df.y)
    assert (tmp_path / "m" / "report" / "report.html").is_file()
    # A missing target is refused in one line; nothing written.
    bad = df.copy()
    bad.loc[5, "y"] = np.nan
    bad.to_csv(tmp_path / "bad.csv", index=False)
    args[3] = str(tmp_path / "bad.csv")
    assert main([*args, "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err
    assert "Column 'y' of bad.csv has a missing value in row 6: a target must" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "n").exists()
    # --drop-na leaves out that row and every row missing a feature, as in memory.
    assert main([*args, "--drop-na", "--out", str(tmp_path / "d")]) == 0
    incomplete = int((~bad.notna().all(axis=1)).sum())
    assert (
        f"Dropped {incomplete} row(s) with missing values (--drop-na)." in capsys.readouterr().out
    )


def test_parse_size():
    assert parse_size("256MB") == 256 * 2**20
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5G") == int(1.5 * 2**30)
    assert parse_size("4096") == 4096
    for bad in ("lots", "-1MB", "0"):
        with pytest.raises(ValueError, match="--max-memory must be a size"):
            parse_size(bad)


def _mixed(path, n=3000, seed=0):
    """A table with a text column (some missing), missing numbers and a bool column."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "b": rng.normal(size=n),
            "flag": rng.random(n) > 0.5,
        }
    )
    df.loc[::7, "a"] = np.nan
    df.loc[3::11, "colour"] = None
    df["y"] = np.nan_to_num(df.a) + (df.colour == "red") + df.flag + 0.1 * rng.normal(size=n)
    if str(path).endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, row_group_size=700)
    return df


@pytest.mark.parametrize("name", ["t.parquet", "t.csv"])
def test_text_columns_and_missing_values_stream_through_the_preprocessing(tmp_path, name):
    """The first pass fits what ``TablePreprocessor.fit`` fits on the whole table (every
    value sampled here), the statistics are those of its output, and streaming with a
    buffer that holds the table equals in-memory training on that output bit for bit."""
    from jaxreg.preprocess import TablePreprocessor

    df = _mixed(tmp_path / name)
    stream = TableStream(tmp_path / name, "y", val_fraction=0.2, seed=3, block_rows=500)
    stats = stream.scan()
    raw = df.drop(columns="y")
    ref = TablePreprocessor().fit(raw)
    assert stream.preprocessor.to_dict() == ref.to_dict()
    assert stream.feature_names == list(ref.feature_names_out_)
    assert stream.raw_feature_names == ["a", "colour", "b", "flag"]
    features = ref.transform(raw).to_numpy()
    val = held_out_mask(np.arange(len(df)), 0.2, 3)
    train = features[~val]
    np.testing.assert_allclose(stats.x_mean, train.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.x_std, train.std(0), rtol=1e-12)
    np.testing.assert_array_equal(stats.x_val, features[val])
    transform = _transform(stream)
    values = np.concatenate([features, df[["y"]].to_numpy()], axis=1)
    xt, yt = transform(values[~val])
    xv, yv = transform(values[val])
    data = Dataset(xt, yt, xv, yv, np.ones(len(xt), np.float32), np.int32(len(xt)))
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), 1))
    cfg = TrainConfig(3, "adam", batch_size=100, sampling="shuffle")
    spec = MLPSpec((len(stream.feature_names), 8, 1))
    mem = run(spec, cfg, data, Hparams(1e-2), keys).result
    got = run_stream(spec, cfg, stream, Hparams(1e-2), keys, transform, chunk_steps=4).result
    pairs = zip(jax.tree.leaves(mem.params), jax.tree.leaves(got.params), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_streamed_medians_come_from_an_evenly_spaced_sample():
    """Beyond ``median_rows`` present values, a column's median is the median of every
    ``2**j``-th present value; categories still come from every row; a column with no
    value at all is refused."""
    from jaxreg.preprocess import fit_blocks

    rng = np.random.default_rng(5)
    a = rng.normal(size=1000)
    a[rng.random(1000) < 0.3] = np.nan
    text = rng.choice(["p", "q"], 1000).astype(object)
    text[-1] = "r"  # one value only in the last block
    frame = pd.DataFrame({"a": a, "t": text})
    blocks = [frame.iloc[i : i + 96] for i in range(0, 1000, 96)]
    prep = fit_blocks(iter(blocks), median_rows=64)
    present = a[~np.isnan(a)]
    # 700-odd present values, at most 64 kept: every 16th of them in the end
    assert 32 < len(present[::16]) <= 64
    assert prep.to_dict()["medians"] == [float(np.median(present[::16]))]
    assert prep.to_dict()["categorical"] == [{"name": "t", "categories": ["p", "q", "r"]}]
    assert fit_blocks(iter(blocks)).to_dict()["medians"] == [float(np.median(present))]
    empty = [b.assign(a=np.nan) for b in blocks]
    with pytest.raises(ValueError, match="Column 'a' has no values: every one of its 1000 rows"):
        fit_blocks(iter(empty))


def test_several_processes_name_a_missing_value_the_file_did_not_announce(tmp_path):
    """Several processes choose the preprocessing before reading: a CSV file whose first
    block types every column as numbers, with a missing value, is one line naming the
    column and the option that has it preprocessed."""
    df = pd.DataFrame({"a": np.arange(300.0), "b": np.ones(300), "y": np.arange(300.0)})
    df.loc[250, "a"] = np.nan
    df.to_csv(tmp_path / "t.csv", index=False)
    stream = TableStream(tmp_path / "t.csv", "y", process_count=2)
    with pytest.raises(ValueError, match=r"Column 'a' of t.csv has a missing value in row 251: "
                       r"several processes choose the preprocessing before reading the file "
                       r".*name the column in numeric"):  # fmt: skip
        stream.scan(lambda a: np.stack([a, a]))


def _thread_gathers():
    """``gather_for(i)``: the ``gather`` of thread ``i`` of two threads standing for two
    processes (each call stacks both threads' arrays, as ``runner.gather_processes``)."""
    import threading

    barrier = threading.Barrier(2, timeout=60)
    slots: list = [None, None]

    def gather_for(i):
        def gather(a):
            slots[i] = np.asarray(a)
            barrier.wait()
            out = np.stack(slots)
            barrier.wait()
            return out

        return gather

    return gather_for


def _in_two_shares(shares, **kwargs):
    """``fit_blocks`` of each share in its own thread, as two processes would run it: a
    ``gather`` that stacks both threads' arrays. Returns each share's result (a
    preprocessor or the exception it raised)."""
    import threading

    from jaxreg.preprocess import fit_blocks

    gather_for = _thread_gathers()
    results: list = [None, None]

    def run(i):
        try:
            results[i] = fit_blocks(iter(shares[i]), gather=gather_for(i), **kwargs)
        except Exception as exc:  # the test compares it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_shares_of_the_table_combine_into_the_whole_tables_preprocessing():
    """Two processes' shares (rows split unevenly, by blocks) give both the preprocessing of
    the whole table: the categories of both, the exact medians while each share's sample
    holds all its values; beyond, each share's evenly spaced sample counted by its stride;
    an error in one share is raised in both."""
    from jaxreg.preprocess import fit_blocks

    rng = np.random.default_rng(6)
    n = 1500
    a = rng.normal(size=n)
    a[rng.random(n) < 0.2] = np.nan
    b = rng.exponential(size=n)
    text = rng.choice(["p", "q"], n).astype(object)
    text[1200] = "only-in-the-second"
    text[5] = None
    frame = pd.DataFrame({"a": a, "b": b, "t": text})
    blocks = [frame.iloc[i : i + 100] for i in range(0, n, 100)]
    shares = [blocks[:4], blocks[4:]]  # 400 and 1100 rows
    whole = fit_blocks(iter(blocks), missing_indicator=True).to_dict()
    for got in _in_two_shares(shares, missing_indicator=True):
        assert got.to_dict() == whole
    assert whole["medians"] == [float(np.nanmedian(a)), float(np.median(b))]
    assert whole["categorical"][0]["categories"] == ["only-in-the-second", "p", "q", None]

    # Samples of at most 64 values: the first share keeps every 8th of its present values
    # of 'a' (about 320), the second every 16th (about 880): each of those stands for 2.
    got = _in_two_shares(shares, median_rows=64)
    columns = [pd.concat(share)["a"].to_numpy() for share in shares]
    kept = [v[~np.isnan(v)] for v in columns]
    assert len(kept[0][::8]) <= 64 < len(kept[0][::4]) and len(kept[1][::16]) <= 64
    reference = np.median(np.concatenate([kept[0][::8], np.repeat(kept[1][::16], 2)]))
    assert got[0].to_dict()["medians"][0] == float(reference)
    assert got[1].to_dict() == got[0].to_dict()

    worded = blocks[6].astype({"b": object})
    worded.loc[650, "b"] = "a word"
    got = _in_two_shares([blocks[:4], [*blocks[4:6], worded, *blocks[7:]]])
    assert all(isinstance(r, ValueError) for r in got), got
    assert str(got[0]) == str(got[1]) and "'a word'" in str(got[0]), got


def test_a_csv_value_of_another_type_than_its_first_block_is_one_line(tmp_path):
    """pyarrow types a CSV column from its first block (4 MiB): a later value of another
    type is a one-line error naming the column."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(250_000, 3)).round(5), columns=["a", "b", "y"])
    frame["a"] = frame["a"].astype(object)
    frame.loc[240_000, "a"] = "abc"  # beyond the first 4 MiB
    frame.to_csv(tmp_path / "t.csv", index=False)
    assert (tmp_path / "t.csv").stat().st_size > 5 * 2**20
    stream = TableStream(tmp_path / "t.csv", "y")
    with pytest.raises(ValueError, match=r"invalid value 'abc' \(column 'a'\)\. A streamed CSV"):
        stream.scan()


@pytest.mark.parametrize("name", ["t.parquet", "t.csv"])
def test_drop_na_leaves_out_incomplete_rows_and_keeps_the_file_rows_split(tmp_path, name):
    """With drop_na a row missing a feature or its target is left out; the others keep the
    held-out assignment of their row in the file, and the statistics are theirs."""
    df = _table(tmp_path / "full.parquet", n=2000)
    df.loc[::9, "a"] = np.nan
    df.loc[4::31, "y"] = np.nan
    if name.endswith(".csv"):
        df.to_csv(tmp_path / name, index=False)
    else:
        df.to_parquet(tmp_path / name, row_group_size=300)
    with pytest.raises(ValueError, match="Column 'y' of .* has a missing value in row 5"):
        TableStream(tmp_path / name, "y").scan()
    stats = TableStream(tmp_path / name, "y", val_fraction=0.25, seed=2, drop_na=True).scan()
    complete = df.notna().all(axis=1).to_numpy()
    val = held_out_mask(np.arange(len(df)), 0.25, 2)
    train = df.to_numpy()[complete & ~val]
    assert stats.n_dropped == int((~complete).sum()) > 0
    assert (stats.n_rows, stats.n_train) == (int(complete.sum()), len(train))
    np.testing.assert_array_equal(stats.x_val, df[["a", "b", "c"]].to_numpy()[complete & val])
    np.testing.assert_allclose(stats.x_mean, train[:, :3].mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.y_std, train[:, 3:].std(0), rtol=1e-12)


def test_test_rows_are_held_out_by_the_same_hash_and_never_trained_on(tmp_path):
    """test_fraction holds out the rows whose hash falls in [val, val + test): kept for
    scoring, left out of the statistics and of every epoch's minibatches."""
    df = _table(tmp_path / "t.parquet", n=3000, row_group_size=500)
    stream = TableStream(tmp_path / "t.parquet", "y", val_fraction=0.2, test_fraction=0.15, seed=4)
    stats = stream.scan()
    rows = np.arange(len(df))
    val = held_out_mask(rows, 0.2, 4)
    test = held_out_mask(rows, 0.35, 4) & ~val
    train = df.to_numpy()[~val & ~test]
    assert (stats.n_val, stats.n_test, stats.n_train) == (val.sum(), test.sum(), len(train))
    assert 0.1 < test.mean() < 0.2
    np.testing.assert_array_equal(stats.x_test, df[["a", "b", "c"]].to_numpy()[test])
    np.testing.assert_array_equal(stats.x_val, df[["a", "b", "c"]].to_numpy()[val])
    np.testing.assert_allclose(stats.x_mean, train[:, :3].mean(0), rtol=1e-12, atol=1e-15)
    seen = [
        x[w > 0]
        for x, _, w in stream.batches(64, lambda n, i: np.arange(n), lambda v: (v[:, :3], v[:, 3:]))
    ]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)[:, 0]), np.sort(train[:, 0]))
    with pytest.raises(ValueError, match="'test_fraction' parameter of TableStream must be below"):
        TableStream(tmp_path / "t.parquet", "y", val_fraction=0.5, test_fraction=0.5)


def test_gather_rows_concatenates_every_process_share_in_order():
    """``runner.gather_rows`` in two threads standing for two processes: unequal shares
    (one empty) come back whole and in process order on both; in one process, the rows
    themselves."""
    import threading

    from jaxreg.runner import gather_rows

    gather_for = _thread_gathers()
    rng = np.random.default_rng(7)
    for sizes in ((5, 3), (0, 4), (0, 0)):
        shares = [rng.normal(size=(n, 2)) for n in sizes]
        got: list = [None, None]

        def run(i, shares=shares, got=got):
            got[i] = gather_rows(shares[i], gather_for(i))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for g in got:
            np.testing.assert_array_equal(g, np.concatenate(shares))
    alone = rng.normal(size=(3, 2))
    assert gather_rows(alone) is alone
