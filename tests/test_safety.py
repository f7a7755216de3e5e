"""Nothing lost, nothing half-done: one test per defect of the safety issue.

Each test fails on the jaxreg that had the defect: a fit that deleted folders it did not
create, replaced a model and then failed, crashed on malformed documents or overflowing data,
or printed tracebacks. (Kill tests of the atomic commit are in test_atomic.py.)
"""

import errno
import gc
import hashlib
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from jaxreg.cli import main

# Short fits in these tests end at their epoch limit on purpose; the stopping rule's
# ConvergenceWarning is tested on its own in test_convergence.py.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PROC = ["--no-cache", "--default-xla"]
# One small setup shared by the tests, so in-process runs reuse one compilation.
FAST = [
    "--target",
    "y",
    "--hidden",
    "4",
    "--epochs",
    "10",
    "--batch-size",
    "0",
    "--patience",
    "0",
    "--seed",
    "3",
    "--quiet",
    "--no-report",
]


def _run(args, capsys):
    code = main([*PROC, *args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, command: str = "fit") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"jaxreg {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": np.sin(x[:, 0]) + 0.5 * x[:, 1]})


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "d.csv"
    _frame().to_csv(path, index=False)
    return path


def _snapshot(folder):
    """Every entry under ``folder`` with its bytes (links by target): what must not change."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isfile(p):
                out[rel] = hashlib.sha256(pathlib.Path(p).read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def model_dir(tmp_path, csv, capsys):
    """A model fitted by the CLI (the 'old model' that failing commands must keep)."""
    path = tmp_path / "model"
    code, _, err = _run(["fit", str(csv), *FAST, "--out", str(path)], capsys)
    assert code == 0, err
    return path


# ---------------------------------------------------------------- 1, 2: ownership


def test_1_out_with_a_foreign_model_json_is_refused_untouched(tmp_path, csv, capsys):
    project = tmp_path / "P"
    (project / "src").mkdir(parents=True)
    (project / "model.json").write_text('{"name": "other"}')
    (project / "src" / "main.py").write_text("code")
    before = _snapshot(project)
    for extra in ([], ["--overwrite"]):
        code, _, err = _run(["fit", str(csv), *FAST, *extra, "--out", str(project)], capsys)
        assert code == 2
        assert "not a jaxreg model; refusing to touch it" in _one_error_line(err)
        assert _snapshot(project) == before


def test_1_an_existing_model_needs_overwrite_checked_before_training(model_dir, csv, capsys):
    before = _snapshot(model_dir)
    code, out, err = _run(["fit", str(csv), *FAST, "--out", str(model_dir)], capsys)
    assert code == 2 and "--overwrite" in _one_error_line(err)
    assert "Read " not in out  # refused before the data was even read
    assert _snapshot(model_dir) == before
    code, _, err = _run(
        ["fit", str(csv), *FAST, "--lr", "0.01", "--overwrite", "--out", str(model_dir)], capsys
    )
    assert code == 0, err
    assert _snapshot(model_dir) != before


def _fit_checkpointed(csv, ckpt, out, *extra) -> list[str]:
    """``jaxreg fit`` arguments with checkpoints every 5 epochs in ``ckpt``."""
    args = ["fit", str(csv), *FAST, "--checkpoint-every", "5", "--checkpoint-dir", str(ckpt)]
    return [*args, *extra, "--out", str(out)]


def test_2_checkpoint_dir_with_a_foreign_checkpoint_json_is_refused_untouched(
    tmp_path, csv, capsys
):
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "checkpoint.json").write_text('{"step": 3}')
    (ckpt / "notes.txt").write_text("mine")
    before = _snapshot(ckpt)
    for extra in ([], ["--resume"]):
        code, out, err = _run(_fit_checkpointed(csv, ckpt, tmp_path / "m", *extra), capsys)
        assert code == 2 and "checkpoint" in _one_error_line(err)
        assert "Read " not in out
        assert _snapshot(ckpt) == before and not (tmp_path / "m").exists()


def test_2_a_finished_run_removes_only_its_own_checkpoint_files(tmp_path, csv, capsys):
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no checkpoint"):
        # A folder with other content is not a checkpoint folder: refused before training.
        from jaxreg.checkpoint import check_checkpoint_folder

        check_checkpoint_folder(ckpt)
    (ckpt / "notes.txt").unlink()
    code, _, err = _run(_fit_checkpointed(csv, ckpt, tmp_path / "m"), capsys)
    assert code == 0, err
    # The user made the folder: jaxreg removes its own files and leaves the folder.
    assert ckpt.is_dir() and list(ckpt.iterdir()) == []
    # A folder jaxreg made itself goes away with the checkpoint.
    code, _, err = _run(
        ["fit", str(csv), *FAST, "--checkpoint-every", "5", "--out", str(tmp_path / "n")], capsys
    )
    assert code == 0, err
    assert not (tmp_path / "n.checkpoint").exists()


def test_2_clear_checkpoint_keeps_what_jaxreg_did_not_write(tmp_path):
    import jax.numpy as jnp

    from jaxreg import checkpoint as ck

    ck.save_checkpoint(tmp_path / "c", {"s": {"w": jnp.ones(3)}}, {"epoch": 1})
    (tmp_path / "c" / "later.txt").write_text("someone else's")
    ck.clear_checkpoint(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["later.txt"]


# ---------------------------------------------------------------- 3: fail without replacing


def test_3_a_failing_fit_replaces_nothing(tmp_path, model_dir, capsys):
    from jaxreg.data import training_split

    before = _snapshot(model_dir)
    frame = _frame()
    _, _, val = training_split(len(frame), 0.2, 3)
    frame.loc[val[0], "b"] = 1e300  # a validation row far outside the training rows
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    code, _, err = _run(
        ["fit", str(bad), *FAST, "--val-fraction", "0.2", "--overwrite", "--out", str(model_dir)],
        capsys,
    )
    line = _one_error_line(err)
    assert code == 2 and "'b'" in line and "cannot represent" in line
    assert _snapshot(model_dir) == before
    # --resume with a non-empty foreign checkpoint folder: refused before training.
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.bin").write_bytes(b"\x00")
    code, out, err = _run(
        [
            "fit",
            str(tmp_path / "d.csv"),
            *FAST,
            "--resume",
            "--checkpoint-dir",
            str(tmp_path / "foreign"),
            "--overwrite",
            "--out",
            str(model_dir),
        ],
        capsys,
    )
    assert code == 2 and "refusing to touch it" in _one_error_line(err)
    assert "Read " not in out and _snapshot(model_dir) == before


def test_3_tiny_tables_and_huge_targets_fit_or_fail_before_the_commit(tmp_path, model_dir, capsys):
    from jaxreg.estimator import load

    three = tmp_path / "three.csv"
    pd.DataFrame({"a": [1.0, 2, 3], "b": [1.0, 0, 1], "y": [1.0, 2, 4]}).to_csv(three, index=False)
    code, out, err = _run(
        ["fit", str(three), *FAST, "--overwrite", "--out", str(model_dir)], capsys
    )
    assert code == 0, err
    assert "n/a" in out  # R² of one validation row is undefined, and says so
    doc = json.loads((model_dir / "model.json").read_text())
    assert doc["run"]["metrics"]["network (validation)"]["r2"] is None
    huge = tmp_path / "huge.csv"
    frame = _frame()
    frame["y"] *= 1e38
    frame.to_csv(huge, index=False)
    code, _, err = _run(["fit", str(huge), *FAST, "--overwrite", "--out", str(model_dir)], capsys)
    assert code == 0, err
    pred = load(model_dir).predict(frame[["a", "b"]])
    assert np.all(np.isfinite(pred)) and np.abs(pred).max() > 1e37


# ---------------------------------------------------------------- 5: OS errors


def test_5_os_errors_are_one_line_naming_the_path(tmp_path, csv, model_dir, capsys, monkeypatch):
    before = _snapshot(model_dir)
    # A file where a folder must be: sweep, lecture, report --out, --cache-dir.
    afile = tmp_path / "afile"
    afile.write_text("x")
    for argv, cmd in (
        (["report", str(model_dir), "--out", str(afile)], "report"),
        (["lecture", "--epochs", "10", "--no-keras", "--out", str(afile)], "lecture"),
        (["sweep", "--lecture", "--epochs", "2", "--seeds", "1", "--out", str(afile)], "sweep"),
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2 and str(afile) in _one_error_line(err, cmd), err
    code = main(
        [
            "--cache-dir",
            str(afile),
            "--default-xla",
            "fit",
            str(csv),
            *FAST,
            "--out",
            str(tmp_path / "m"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(afile) in _one_error_line(err)
    assert afile.read_text() == "x"

    # An unreadable data file (the OS says no): one line with the path and the reason.
    import pandas

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(pandas, "read_csv", denied)
    code, _, err = _run(["fit", str(csv), *FAST, "--out", str(tmp_path / "m")], capsys)
    line = _one_error_line(err)
    assert code == 2 and "Permission denied" in line and str(csv) in line
    monkeypatch.undo()

    # A read-only --out: found before training, nothing written.
    from jaxreg import files

    real_open = os.open

    def read_only(path, flags, *a):
        if flags & os.O_CREAT and str(path).startswith(str(model_dir)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(files.os, "open", read_only)
    code, out, err = _run(["fit", str(csv), *FAST, "--overwrite", "--out", str(model_dir)], capsys)
    line = _one_error_line(err)
    assert code == 2 and "Read-only file system" in line and "--out" in line
    assert "Read " not in out
    monkeypatch.undo()
    assert _snapshot(model_dir) == before


@pytest.mark.parametrize("where", ["weights", "report"])
def test_5_disk_full_during_the_save_or_the_report_keeps_the_old_model(
    tmp_path, csv, model_dir, capsys, monkeypatch, where
):
    from jaxreg import files, plots

    before = _snapshot(model_dir)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(model_dir))

    argv = ["fit", str(csv), *FAST, "--lr", "0.02", "--overwrite", "--out", str(model_dir)]
    if where == "weights":
        monkeypatch.setattr(files.os, "write", full)
    else:
        monkeypatch.setattr(plots, "save", full)
        argv.remove("--no-report")
    code, _, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert code == 2 and "No space left on device" in line
    assert _snapshot(model_dir) == before  # no temporaries left, nothing replaced


# ---------------------------------------------------------------- 6: Ctrl-C


def test_6_an_interrupt_swallowed_by_a_callback_is_not_lost():
    from jaxreg import interrupts

    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()
    fired = []

    def callback(phase, info):  # like JAX's GC callback: its exceptions are swallowed
        if not fired:
            fired.append(phase)
            os.kill(os.getpid(), signal.SIGINT)

    gc.callbacks.append(callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    try:
        assert fired
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.deferred():
                pass  # a commit never starts after an interrupt
    finally:
        interrupts.install()  # clears the remembered interrupt
        signal.signal(signal.SIGINT, previous)


@pytest.mark.long
def test_6_ctrl_c_at_any_moment_exits_130_with_nothing_replaced(tmp_path, csv, model_dir):
    env = {**os.environ, "JAXREG_CACHE_DIR": str(tmp_path / "xla")}
    cmd = [
        sys.executable,
        "-m",
        "jaxreg",
        "--default-xla",
        "fit",
        str(csv),
        *FAST[:-2],
        "--epochs",
        "3000",
        "--overwrite",
        "--out",
        str(model_dir),
    ]
    before = _snapshot(model_dir)
    codes = []
    # From 0.25 s: earlier, the signal can land while the interpreter itself starts up
    # (before any line of jaxreg runs), where Python prints its own traceback.
    for delay in (0.25, 0.6, 1.2, 2.0, 3.5):
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        codes.append(proc.returncode)
        # -SIGINT: the signal came while the interpreter itself was starting, before jaxreg
        # ran a line (nothing done at all).
        assert proc.returncode in (0, 130, -signal.SIGINT), err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        if proc.returncode != 0:
            if proc.returncode == 130:  # before the arguments are parsed: "jaxreg: ..."
                assert re.fullmatch(r"jaxreg( fit)?: interrupted", err.strip().splitlines()[-1]), (
                    err
                )
            assert _snapshot(model_dir) == before
        else:  # finished before the signal: the new model, complete
            from jaxreg.store import load_model

            load_model(model_dir)
            before = _snapshot(model_dir)
    assert 130 in codes


# ---------------------------------------------------------------- 7: malformed documents


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d.__setitem__("metadata", [1, 2]), "metadata"),
        (lambda d: d["model"].__setitem__("feature_names", 5), "model.feature_names"),
        (lambda d: d["metadata"].__setitem__("n_iter", float("inf")), "Infinity"),
        (None, "nests too deeply"),
        (lambda d: d["model"]["spec"].__setitem__("layer_sizes", ["2", 3]), "layer_sizes"),
    ],
)
def test_7_malformed_model_json_is_one_line(tmp_path, capsys, edit, field):
    from jaxreg.estimator import MLPRegressor, load

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    MLPRegressor(hidden_layer_sizes=(3,), epochs=2, random_state=0).fit(X, y).save(tmp_path / "m")
    path = tmp_path / "m" / "model.json"
    doc = json.loads(path.read_text())
    if field == "nests too deeply":
        text = json.dumps(doc)[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
    else:
        edit(doc)
        text = json.dumps(doc)  # writes Infinity for inf, as a hand edit might
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load(tmp_path / "m")
    assert field in str(info.value) and "\n" not in str(info.value)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="x0,x1", comments="")
    code, _, err = _run(["predict", str(tmp_path / "m"), str(tmp_path / "x.csv")], capsys)
    assert code == 2 and field in _one_error_line(err, "predict")


# ---------------------------------------------------------------- 8: numbers


def test_8_overflowing_scales_are_refused_naming_the_column():
    from jaxreg.estimator import MLPRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 2)), columns=["p", "q"])
    y = rng.normal(size=30)
    model = MLPRegressor(hidden_layer_sizes=(3,), epochs=3, random_state=0)
    with pytest.raises(ValueError, match=r"^y column 0 cannot be standardized"):
        model.fit(X, y * 1e300)
    X_big = X.copy()
    X_big["q"] *= 1e300
    with pytest.raises(ValueError, match=r"^X column 'q' cannot be standardized"):
        model.fit(X_big, y)
    near_max = X.copy()
    near_max["p"] = np.where(np.arange(30) % 2, 1.7e308, -1.7e308)
    with pytest.raises(ValueError, match="column 'p' cannot be standardized") as info:
        model.fit(near_max, y)
    assert "diverged" not in str(info.value)


def test_8_non_finite_weights_raise_scikit_learns_message_as_a_value_error():
    from jaxreg.errors import TrainingDivergedError
    from jaxreg.estimator import MLPRegressor

    assert issubclass(TrainingDivergedError, ValueError)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    with pytest.raises(
        ValueError,
        match=r"^Solver produced non-finite parameter weights\. "
        r"The input data may contain large values and need "
        r"to be preprocessed\.",
    ):
        MLPRegressor(
            hidden_layer_sizes=(8,), epochs=50, learning_rate=1e30, optimizer="sgd", random_state=0
        ).fit(X, y)


def test_10_huge_sample_weights_fit_like_their_ratios():
    from jaxreg.estimator import MLPRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    w = rng.uniform(0.5, 1.0, size=30)
    kw = dict(hidden_layer_sizes=(3,), epochs=20, random_state=0, dtype="float64")
    small = MLPRegressor(**kw).fit(X, y, sample_weight=w / w.max())
    huge = MLPRegressor(**kw).fit(X, y, sample_weight=w / w.max() * 1e308)
    np.testing.assert_allclose(huge.predict(X), small.predict(X), rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- 9: tamper-evident models


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["model"]["spec"].__setitem__("activation", "relu"),
        lambda d: d["model"]["x_scaler"]["mean"].__setitem__(0, 0.5),
        lambda d: d["model"].__setitem__("feature_names", ["b", "a"]),
        lambda d: d["model"].__setitem__("y_ndim", 2),
    ],
)
def test_9_edits_to_what_determines_predictions_are_refused(tmp_path, edit):
    from jaxreg.estimator import MLPRegressor, load

    frame = _frame(20)
    MLPRegressor(hidden_layer_sizes=(3,), epochs=2, random_state=0).fit(
        frame[["a", "b"]], frame["y"]
    ).save(tmp_path / "m")
    load(tmp_path / "m")  # loads before the edit
    path = tmp_path / "m" / "model.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="modified after it was saved"):
        load(tmp_path / "m")


def test_9_feature_order_is_checked_at_predict_time(tmp_path):
    from jaxreg.estimator import MLPRegressor, load

    frame = _frame(20)
    model = MLPRegressor(hidden_layer_sizes=(3,), epochs=2, random_state=0).fit(
        frame[["a", "b"]], frame["y"]
    )
    model.save(tmp_path / "m")
    for m in (model, load(tmp_path / "m")):
        with pytest.raises(ValueError, match="feature names"):
            m.predict(frame[["b", "a"]])
    arrays = MLPRegressor(hidden_layer_sizes=(3,), epochs=2, random_state=0).fit(
        frame[["a", "b"]].to_numpy(), frame["y"].to_numpy()
    )
    arrays.save(tmp_path / "n")
    with pytest.raises(ValueError, match="2 features"):
        load(tmp_path / "n").predict(frame[["a", "b", "y"]].to_numpy())


# ---------------------------------------------------------------- 10: smaller defects


def test_10_out_dot_is_checked_like_any_folder(tmp_path, csv, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # holds d.csv: not empty, not a model
    code, _, err = _run(["fit", str(csv), *FAST, "--out", "."], capsys)
    line = _one_error_line(err)
    assert code == 2 and "PosixPath" not in line and "refusing to touch it" in line
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    code, _, err = _run(["fit", str(csv), *FAST, "--out", "."], capsys)
    assert code == 0, err
    assert (tmp_path / "empty" / "model.json").is_file()


def test_10_predict_refuses_to_overwrite_its_input(tmp_path, csv, model_dir, capsys):
    before = csv.read_bytes()
    code, _, err = _run(["predict", str(model_dir), str(csv), "--out", str(csv)], capsys)
    assert code == 2 and "--out must not be the input file" in _one_error_line(err, "predict")
    assert csv.read_bytes() == before


def test_10_no_runtime_warning_reaches_the_terminal(tmp_path, capsys):
    # One validation row: R² is undefined (0/0 inside NumPy) and reported as n/a.
    three = tmp_path / "three.csv"
    pd.DataFrame({"a": [1.0, 2, 3], "b": [1.0, 0, 1], "y": [1.0, 2, 4]}).to_csv(three, index=False)
    env = {**os.environ, "JAXREG_CACHE_DIR": str(tmp_path / "xla")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxreg",
            "--default-xla",
            "fit",
            str(three),
            *FAST,
            "--out",
            str(tmp_path / "m"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
