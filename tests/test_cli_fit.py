"""``jaxreg fit`` / ``predict`` / ``report``: end to end on the diabetes data, a real kill
and resume, and every bad input (exit code 2, one line on stderr, nothing written)."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from jaxreg.cli import main

# In-process runs leave the test process's JAX settings alone.
PROC = ["--no-cache", "--default-xla"]


def _run(args, capsys):
    code = main([*PROC, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory):
    from sklearn.datasets import load_diabetes

    path = tmp_path_factory.mktemp("data") / "diabetes.csv"
    load_diabetes(as_frame=True).frame.to_csv(path, index=False)
    return path


def test_help_does_not_import_jax_matplotlib_or_pandas():
    code = (
        "import sys\nfrom jaxreg.cli import main\n"
        "for argv in (['--help'], ['fit', '--help'], ['predict', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('jax', 'matplotlib', 'pandas', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "jaxreg fit" in proc.stdout and "--checkpoint-every" in proc.stdout
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_diabetes_fit_predict_report(tmp_path, diabetes_csv, capsys):
    import matplotlib.image

    from jaxreg.estimator import MLPRegressor, load
    from jaxreg.report import member_predictions
    from jaxreg.runner import compile_count
    from jaxreg.store import load_model

    model_dir = tmp_path / "model"
    compiles = compile_count()
    code, out, err = _run(
        [
            "fit",
            str(diabetes_csv),
            "--target",
            "target",
            "--hidden",
            "16",
            "--epochs",
            "40",
            "--patience",
            "10",
            "--ensemble",
            "2",
            "--lr",
            "3e-3",
            "--seed",
            "1",
            "--no-report",
            "--out",
            str(model_dir),
        ],
        capsys,
    )
    assert code == 0, err
    # init, chunk and finish compile once: no recompilation between chunks or members.
    assert compile_count() - compiles == 3
    assert "353 training and 89 validation rows" in out
    assert "Ridge baseline (validation)" in out and "network (validation)" in out
    assert "HistGradientBoosting baseline (validation)" in out
    assert "Compile" in out and "training" in out
    run = json.loads((model_dir / "model.json").read_text())["run"]
    net = run["metrics"]["network (validation)"]
    ridge = run["metrics"]["Ridge baseline (validation)"]
    # Ridge on diabetes explains roughly half of the variance; the network is in that range.
    assert 0.2 < ridge["r2"] < 0.8 and 0.0 < net["r2"] < 0.8
    # The baselines are scikit-learn's, refitted here on the training rows the run recorded.
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import r2_score

    from jaxreg.data import training_split

    frame = pd.read_csv(diabetes_csv)
    x, y = frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()
    split = run["split"]
    _, tr, val_rows = training_split(len(y), split["validation_fraction"], split["seed"])
    hgb = HistGradientBoostingRegressor(random_state=split["seed"]).fit(x[tr], y[tr])
    ref = r2_score(y[val_rows], hgb.predict(x[val_rows]))
    assert run["metrics"]["HistGradientBoosting baseline (validation)"]["r2"] == pytest.approx(ref)
    loses = [
        name for name, m in run["metrics"].items() if "baseline" in name and m["r2"] > net["r2"]
    ]
    assert ("The network loses on the validation rows" in out) == bool(loses)
    assert not (tmp_path / "model.checkpoint").exists()

    # predict: one row per input row, columns named after the target, plus the std.
    preds = tmp_path / "preds.csv"
    code, out, err = _run(
        ["predict", str(model_dir), str(diabetes_csv), "--out", str(preds), "--std"], capsys
    )
    assert code == 0, err
    df = pd.read_csv(preds)
    assert list(df.columns) == ["target", "target_std"] and df.shape == (442, 2)
    assert (df["target_std"] > 0).all()
    # The loaded model (library door) and an independent forward pass agree with the CSV.
    data = pd.read_csv(diabetes_csv)
    model = load(model_dir)
    mean, std = model.predict(data.drop(columns="target"), return_std=True)
    np.testing.assert_allclose(df["target"], mean, rtol=1e-8)
    np.testing.assert_allclose(df["target_std"], std, rtol=1e-6)
    saved = load_model(model_dir)
    members = member_predictions(saved, data.drop(columns="target").to_numpy())
    np.testing.assert_allclose(df["target"], members.mean(axis=0)[:, 0], rtol=1e-6)
    assert isinstance(model[-1], MLPRegressor) and saved.n_ensemble == 2

    # report: PNGs that load, an HTML page with embedded images and no external resources.
    code, out, err = _run(["report", str(model_dir)], capsys)
    assert code == 0, err
    rep = model_dir / "report"
    names = {"loss_curves.png", "predicted_vs_true.png", "residuals.png", "fitted_curve.png"}
    names |= {"permutation_importance.png"}
    assert names <= {p.name for p in rep.iterdir()}
    for name in names:
        img = matplotlib.image.imread(rep / name)
        assert img.ndim == 3 and img.shape[0] > 100
    page = (rep / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "Ridge baseline" in page

    # A refused report writes nothing: every check runs before the first file.
    code, out, err = _run(
        ["report", str(model_dir), "--feature", "zz", "--out", str(tmp_path / "rep2")], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--feature" in err and "'zz'" in err
    assert not (tmp_path / "rep2").exists()


def _small_frame(n=50):
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(n, 2))
    y = np.tanh(x[:, 0]) * x[:, 1] + 0.1 * rng.normal(size=n)
    return pd.DataFrame({"u": x[:, 0], "v": x[:, 1], "y": y})


# One small setup shared by several tests, so in-process runs reuse one compilation.
SMALL = [
    "--target",
    "y",
    "--hidden",
    "8",
    "--epochs",
    "400",
    "--batch-size",
    "16",
    "--patience",
    "0",
    "--lr",
    "1e-2",
    "--seed",
    "7",
    "--quiet",
    "--no-report",
]


@pytest.mark.long
def test_resume_after_sigkill_equals_an_uninterrupted_run_and_the_estimator(tmp_path, capsys):
    from jaxreg.apps.fitcmd import _chunk_epochs
    from jaxreg.estimator import MLPRegressor, load

    frame = _small_frame()
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)

    # A real process, killed with SIGKILL right after its first checkpoint (epoch 5 of 400).
    env = {**os.environ, "JAXREG_CACHE_DIR": str(tmp_path / "xla")}
    cmd = [
        sys.executable,
        "-m",
        "jaxreg",
        "--default-xla",
        "fit",
        str(data),
        *SMALL,
        "--checkpoint-every",
        "5",
        "--out",
        str(tmp_path / "killed"),
    ]
    ckpt = tmp_path / "killed.checkpoint"
    victim = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (ckpt / "checkpoint.json").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.001)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()  # no model folder from the killed run
    epoch = json.loads((ckpt / "checkpoint.json").read_text())["meta"]["epoch"]
    assert 0 < epoch < 400
    # The same command with --resume, in a new process ...
    resumed = subprocess.Popen(
        [*cmd, "--resume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # ... while this process makes the uninterrupted run (no checkpoints).
        code, _, err = _run(["fit", str(data), *SMALL, "--out", str(tmp_path / "straight")], capsys)
        assert code == 0, err
        # It equals MLPRegressor with the same settings, bit for bit.
        ref = MLPRegressor(
            hidden_layer_sizes=(8,),
            learning_rate=1e-2,
            epochs=400,
            batch_size=16,
            validation_fraction=0.2,
            tol=None,  # --patience 0: every epoch, no stopping rule
            random_state=7,
        )
        ref.fit(frame[["u", "v"]], frame["y"], chunk_epochs=_chunk_epochs(400, None))
        got = load(tmp_path / "straight")[-1]  # the network behind the preprocessing
        for a, b in zip(ref.params_, got.params_, strict=True):
            assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
    finally:
        out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"Resumed from the checkpoint in {ckpt} (epoch {epoch})" in out
    docs = [json.loads((tmp_path / d / "model.json").read_text()) for d in ("straight", "killed")]
    assert docs[0]["files"]["weights"] == docs[1]["files"]["weights"]  # content-addressed
    assert (tmp_path / "straight" / docs[0]["files"]["weights"]).read_bytes() == (
        tmp_path / "killed" / docs[1]["files"]["weights"]
    ).read_bytes()
    meta = [doc["metadata"] for doc in docs]
    assert meta[0]["loss_curve"] == meta[1]["loss_curve"]
    assert meta[0]["validation_loss_curve"] == meta[1]["validation_loss_curve"]
    assert not ckpt.exists()  # a finished run removes its checkpoint


# ------------------------------------------------------------------ bad input


def _write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p)


BAD_FIT = [
    ("missing file", None, [], ["does not exist"]),
    ("empty file", "", [], ["is empty"]),
    ("header only", "a,y\n", [], ["no data rows"]),
    ("unreadable encoding", "a,y\n1,2\n".encode("utf-16"), [], ["cannot be read as utf-8"]),
    ("missing target", "a,b\n1,2\n3,4\n", [], ["'y'", "not found", "Available columns: 'a', 'b'"]),
    (
        "number with a typo",
        "a,y\n1,2\nabc,3\n4,5\n",
        [],
        ["Column 'a'", "mixes numbers and text", "'abc'", "row 2 (line 3", "--categorical"],
    ),
    (
        "identifier column",
        "id,a,y\nr1,1,2\nr2,2,3\nr3,4,5\n",
        ["--max-categories", "2"],
        ["Column 'id'", "3 distinct text values", "--max-categories 2", "identifier"],
    ),
    (
        "declared numeric",
        "a,b,y\n1,x,2\n2,3,3\n4,5,5\n",
        ["--numeric", "b"],
        ["Column 'b'", "declared numeric (--numeric)", "'x'", "row 1 (line 2"],
    ),
    (
        "unknown categorical",
        "a,y\n1,2\n2,3\n4,5\n",
        ["--categorical", "z"],
        ["--categorical", "['z']", "not among the features"],
    ),
    (
        "missing target",
        "a,y\n1,2\n2,\n4,5\n5,6\n",
        [],
        ["1 row(s) with a missing target", "row 2 (line 3", "'y'", "--drop-na"],
    ),
    ("bad test fraction", "a,y\n1,2\n2,3\n3,4\n", ["--test-fraction", "1"], ["--test-fraction"]),
    ("bad cv", "a,y\n1,2\n2,3\n3,4\n", ["--cv", "1"], ["--cv must be an integer >= 2"]),
    (
        "bad schedule",
        "a,y\n1,2\n2,3\n3,4\n",
        ["--schedule", "nope"],
        ["--schedule must be one of", "'nope'"],
    ),
    ("single row", "a,y\n1,2\n", [], ["at least 2 data rows", "Got 1"]),
    ("constant target", "a,y\n1,2\n2,2\n3,2\n", [], ["'y'", "is constant"]),
    (
        "unknown format",
        "a,y\n1,2\n2,3\n",
        ["--data-name", "d.xlsx"],
        ["Unknown data format", "'.xlsx'"],
    ),
    ("folder", None, ["--data-name", "folder.csv"], ["is not a file"]),
    ("bad lr", "a,y\n1,2\n2,3\n3,4\n", ["--lr", "-1"], ["--lr must be a float in (0, inf)", "-1"]),
    ("bad hidden", "a,y\n1,2\n2,3\n3,4\n", ["--hidden", "8,x"], ["--hidden", "'8,x'"]),
    (
        "bad activation",
        "a,y\n1,2\n2,3\n3,4\n",
        ["--activation", "nope"],
        ["--activation must be one of", "'nope'"],
    ),
]


@pytest.mark.parametrize(
    "argv, pieces",
    [
        (
            ["fit", "d.csv", "--target", "y", "--epochs", "abc"],
            ["jaxreg fit: error: argument --epochs", "'abc'"],
        ),
        (["fit", "d.csv"], ["jaxreg fit: error: the following arguments are required: --target"]),
        (["fitt"], ["jaxreg: error: argument COMMAND: invalid choice: 'fitt'"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(capsys, argv, pieces):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])


@pytest.mark.parametrize("case, content, extra, pieces", BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_bad_fit_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, capsys, case, content, extra, pieces
):
    name = "d.csv"
    if extra[:1] == ["--data-name"]:
        name, extra = extra[1], extra[2:]
    if case == "folder":
        (tmp_path / name).mkdir()
    elif content is not None:
        _write(tmp_path, name, content)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(
        [
            "fit",
            str(tmp_path / name),
            "--target",
            "y",
            "--epochs",
            "2",
            "--checkpoint-every",
            "1",
            "--out",
            str(tmp_path / "model"),
            *extra,
        ],
        capsys,
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxreg fit: error: "), err
    assert "Traceback" not in err
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_drop_na_drops_rows_then_predict_needs_the_model_features(tmp_path, capsys):
    frame = _small_frame(52)
    frame.loc[3, "u"] = np.nan
    frame.loc[9, "y"] = np.nan
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    code, out, err = _run(
        ["fit", str(data), *SMALL, "--drop-na", "--resume", "--out", str(tmp_path / "m")], capsys
    )
    assert code == 0, err
    assert "Dropped 2 row(s) with missing values" in out and "50 rows" in out
    assert f"No checkpoint in {tmp_path / 'm.checkpoint'}; starting from the beginning" in out
    # predict keeps one row per input row: rows with a missing feature stay empty.
    code, out, err = _run(["predict", str(tmp_path / "m"), str(data), "--drop-na"], capsys)
    assert code == 0, err
    preds = pd.read_csv(io.StringIO(out))
    assert preds.shape == (52, 1) and list(preds.columns) == ["y"]
    assert preds["y"].isna().tolist() == [i == 3 for i in range(52)]
    other = _write(tmp_path, "e.csv", "u,w\n1,2\n")
    code, _, err = _run(["predict", str(tmp_path / "m"), other], capsys)
    assert code == 2 and "'v'" in err and "Available columns: 'u', 'w'" in err


def test_bad_model_folders_and_prediction_data(tmp_path, capsys):
    data = _write(tmp_path, "d.csv", "a,y\n1,2\n2,3\n")
    (tmp_path / "notmodel").mkdir()
    (tmp_path / "notmodel" / "x.txt").write_text("hello")
    cases = [
        (["predict", str(tmp_path / "notmodel"), data], "predict", "is not a jaxreg model"),
        (["predict", str(tmp_path / "nothing"), data], "predict", "does not exist"),
        (["report", str(tmp_path / "notmodel")], "report", "is not a jaxreg model"),
        (
            ["fit", data, "--target", "y", "--out", str(tmp_path / "notmodel")],
            "fit",
            "not a jaxreg model; refusing to touch it",
        ),
    ]
    for argv, cmd, piece in cases:
        code, _, err = _run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and piece in err, err
        assert err.startswith(f"jaxreg {cmd}: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv", "notmodel"]
    assert [p.name for p in (tmp_path / "notmodel").iterdir()] == ["x.txt"]


def test_the_verdict_names_every_baseline_that_beats_the_network():
    from jaxreg.apps.fitcmd import verdict

    def m(r2):
        return {"r2": r2, "mse": 1.0, "mae": 1.0}

    names = ["network (validation)", "Ridge baseline (validation)", "HGB baseline (validation)"]
    assert verdict(dict(zip(names, [m(0.5), m(0.4), m(0.3)], strict=True))) == []
    assert verdict(dict(zip(names, [m(0.5), m(0.6), m(0.7)], strict=True))) == [
        "The network loses on the validation rows: its R² 0.5000 is below "
        "Ridge (0.6000) and HGB (0.7000)."
    ]
    assert verdict(dict(zip(names, [m(None), m(0.6), m(0.7)], strict=True))) == []
    # Several targets: each target's network against that target's baselines only.
    per_target = {
        "network (validation), a": m(0.9),
        "network (validation), b": m(0.2),
        "Ridge baseline (validation), a": m(0.5),
        "Ridge baseline (validation), b": m(0.3),
        "HGB baseline (validation; trained on 9 of the 10 training rows), b": m(0.1),
    }
    assert verdict(per_target) == [
        "The network loses on the validation rows for b: its R² 0.2000 is below Ridge (0.3000)."
    ]


def test_a_large_table_trains_the_boosting_baseline_on_a_subsample(monkeypatch):
    from jaxreg.apps import fitcmd

    class Mean:  # a stand-in network: predicts the training mean
        def predict(self, frame):
            return np.full(len(frame), 0.5)

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    y = (x[["a"]].to_numpy() > 0).astype(float)
    monkeypatch.setattr(fitcmd, "HGB_ROWS", 30)
    empty = np.arange(0)
    metrics = fitcmd._metrics(Mean(), x, y, ["y"], np.arange(48), np.arange(48, 60), empty)
    assert list(metrics)[2] == (
        "HistGradientBoosting baseline (validation; trained on 30 of the 48 training rows)"
    )
    # With test rows, the baselines are scored there and the verdict compares like rows.
    metrics = fitcmd._metrics(
        Mean(), x, y, ["y"], np.arange(40), np.arange(40, 50), np.arange(50, 60)
    )
    assert list(metrics) == [
        "network (validation)",
        "network (test)",
        "Ridge baseline (test)",
        "HistGradientBoosting baseline (test; trained on 30 of the 40 training rows)",
    ]
    lines = fitcmd.verdict(metrics)
    assert len(lines) == 1 and lines[0].startswith("The network loses on the test rows")


def test_the_baselines_run_beside_training_and_their_failure_writes_nothing(
    tmp_path, diabetes_csv, capsys, monkeypatch
):
    from jaxreg.apps import fitcmd

    threads = []
    baselines = fitcmd._baselines

    def recorded(*args, **kwargs):
        import threading

        threads.append(threading.current_thread().name)
        return baselines(*args, **kwargs)

    monkeypatch.setattr(fitcmd, "_baselines", recorded)
    argv = ["fit", str(diabetes_csv), "--target", "target", "--hidden", "4", "--epochs", "2"]
    code, out, err = _run([*argv, "--no-report", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert threads == ["jaxreg-beside-training"]  # not the main thread
    assert "Ridge baseline (validation)" in out

    def fails(*args, **kwargs):
        raise ValueError("the baseline failed on purpose")

    monkeypatch.setattr(fitcmd, "_baselines", fails)
    code, out, err = _run([*argv, "--out", str(tmp_path / "failed")], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == "jaxreg fit: error: the baseline failed on purpose"
    assert not (tmp_path / "failed").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging left behind


def test_a_convergence_warning_stays_one_line_when_the_baselines_restore_the_filters(
    tmp_path, diabetes_csv, capsys, monkeypatch
):
    """scikit-learn's checks in the baselines' thread save and restore Python's (global)
    warning filters. Here that thread saves them before the training starts recording and
    restores them while it records, as it may by chance: the training's ConvergenceWarning
    must still be one recorded line (under this suite's "error" filter it was raised)."""
    import threading
    import warnings

    from jaxreg import MLPRegressor
    from jaxreg.apps import fitcmd

    entered, fitting, left = threading.Event(), threading.Event(), threading.Event()
    baselines, train, fit = fitcmd._baselines, fitcmd._train, MLPRegressor.fit

    def restoring(*args, **kwargs):
        with warnings.catch_warnings():  # as sklearn.utils.validation.check_array does
            entered.set()
            fitting.wait(60)
        left.set()
        return baselines(*args, **kwargs)

    def train_after(*args, **kwargs):
        entered.wait(60)
        return train(*args, **kwargs)

    def fit_after(self, *args, **kwargs):  # inside the training's recording
        fitting.set()
        left.wait(60)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(fitcmd, "_baselines", restoring)
    monkeypatch.setattr(fitcmd, "_train", train_after)
    monkeypatch.setattr(MLPRegressor, "fit", fit_after)
    argv = ["fit", str(diabetes_csv), "--target", "target", "--hidden", "4", "--epochs", "2"]
    code, out, err = _run([*argv, "--no-report", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert entered.is_set() and left.is_set()
    assert "Warning: Stochastic Optimizer: Maximum iterations (2) reached" in err


def test_the_console_entry_flushes_runs_atexit_and_keeps_the_exit_code(tmp_path, diabetes_csv):
    # jaxreg.cli.run (the `jaxreg` script, python -m jaxreg) skips the interpreter's
    # teardown after main: the atexit handlers must still run, every line must reach the
    # pipe, and the exit code must be main's. The process's young garbage-collection
    # generation is collected every 100,000 allocations, not CPython's 700.
    from jaxreg.estimator import load

    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('atexit ran', gc.get_threshold()[0]))\n"
        "from jaxreg.cli import run\n"
        "sys.argv = ['jaxreg', *sys.argv[1:]]\n"
        "run()\n"
    )
    argv = [*PROC, "fit", str(diabetes_csv), "--hidden", "4", "--epochs", "2", "--no-report"]
    env = {**os.environ, "JAXREG_CACHE_DIR": str(tmp_path / "xla")}

    def script(*args):
        return subprocess.run(
            [sys.executable, "-c", code, *argv, *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )

    ok = script("--target", "target", "--out", str(tmp_path / "m"))
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[-1] == "atexit ran 100000"
    assert f"Saved the model to {tmp_path / 'm'}/" in lines
    assert load(tmp_path / "m").predict(pd.read_csv(diabetes_csv).drop(columns="target")).shape
    bad = script("--target", "target", "--epochs", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("jaxreg fit: error: --epochs must be an integer >= 1. Got 0.")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert bad.stdout.splitlines()[-1] == "atexit ran 100000"
    assert not (tmp_path / "bad").exists()


def test_several_targets_get_metrics_each_in_their_own_units(tmp_path, capsys):
    from sklearn.metrics import mean_absolute_error, r2_score

    from jaxreg.data import training_split
    from jaxreg.estimator import load

    rng = np.random.default_rng(3)
    u, v = rng.uniform(-2, 2, 120), rng.uniform(-2, 2, 120)
    frame = pd.DataFrame({"u": u, "v": v, "big": 1000 * np.sin(u), "small": v / 1000})
    data = tmp_path / "two.csv"
    frame.to_csv(data, index=False)
    args = ["fit", str(data), "--target", "big", "--target", "small", "--hidden", "8"]
    args += ["--epochs", "30", "--patience", "0", "--quiet", "--no-report"]
    code, out, err = _run([*args, "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    run = json.loads((tmp_path / "m" / "model.json").read_text())["run"]
    names = list(run["metrics"])
    for model in ("network", "Ridge baseline", "HistGradientBoosting baseline"):
        for target in ("big", "small"):
            assert f"{model} (validation), {target}" in names
            assert f"{model} (validation), {target}" in out
    _, _, val = training_split(120, 0.2, 0)
    pred = load(tmp_path / "m").predict(frame[["u", "v"]].iloc[val])
    for j, target in enumerate(("big", "small")):
        m = run["metrics"][f"network (validation), {target}"]
        truth = frame[target].to_numpy()[val]
        assert m["r2"] == pytest.approx(r2_score(truth, pred[:, j]), rel=1e-9)
        assert m["mae"] == pytest.approx(mean_absolute_error(truth, pred[:, j]), rel=1e-9)
    # MAE in each target's own units: thousands apart, never averaged together.
    big, small = (run["metrics"][f"network (validation), {t}"]["mae"] for t in ("big", "small"))
    assert big > 1e4 * small


def test_progress_without_a_terminal_is_a_few_plain_lines(tmp_path, capsys):
    frame = _small_frame()
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    args = [a for a in SMALL if a != "--quiet"]
    code, out, err = _run(["fit", str(data), *args, "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert lines[0] == "compiling the training loop (400 epochs) ..."
    epochs = [int(line.split("epoch ")[1].split("/")[0]) for line in lines[1:]]
    assert 2 <= len(epochs) <= 11 and epochs == sorted(epochs) and epochs[-1] == 400
    assert all("train MSE" in line and "val MSE" in line for line in lines[1:])
    assert "\x1b[" not in err  # no terminal escape codes in a log


def test_predict_keep_copies_identifier_columns_for_every_row(tmp_path, capsys):
    frame = _small_frame()
    data = tmp_path / "d.csv"
    frame.to_csv(data, index=False)
    code, _, err = _run(["fit", str(data), *SMALL, "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    new = frame[["u", "v"]].head(6).copy()
    new.insert(0, "patient", [f"p{i}" for i in range(6)])
    new.loc[2, "u"] = np.nan  # a row with a missing feature keeps its identifier
    rows = tmp_path / "new.csv"
    new.to_csv(rows, index=False)
    out_file = tmp_path / "pred.csv"
    args = ["predict", str(tmp_path / "m"), str(rows), "--keep", "patient", "--drop-na"]
    code, _, err = _run([*args, "--out", str(out_file)], capsys)
    assert code == 0, err
    got = pd.read_csv(out_file)
    assert list(got.columns) == ["patient", "y"]
    assert list(got["patient"]) == [f"p{i}" for i in range(6)]
    assert np.isnan(got["y"][2]) and np.isfinite(got["y"].drop(index=2)).all()
    for bad, message in [
        (["--keep", "nope"], "--keep must name a column of"),
        (["--keep", "patient", "--keep", "patient"], "--keep must name each column once"),
    ]:
        args = ["predict", str(tmp_path / "m"), str(rows), "--drop-na", *bad]
        code, _, err = _run(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "rows, extra, small",
    [
        (300, [], True),  # auto: 200 rows x 32 units a step
        (300, ["--batch-size", "0"], True),  # full batch of 300
        (300, ["--batch-size", "1024", "--hidden", "64,64"], False),
        (5000, ["--batch-size", "0"], False),  # full batch of 5,000 x 32
        (5000, ["--optimizer", "lbfgs", "--hidden", "4"], True),  # 5,000 x 4
        (5000, ["--hidden", "200"], False),  # 200 x 200
    ],
)
def test_the_small_loop_options_only_for_small_steps(tmp_path, rows, extra, small):
    """The CLI's single-kernel XLA options are chosen from the rows (estimated before reading:
    CSV size over line length, Parquet metadata), the batch and the widest layer."""
    from jaxreg.cli import build_parser
    from jaxreg.tabular import estimate_rows

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(rows, 3)), columns=list("abc"))
    for name in ("d.csv", "d.parquet"):
        path = tmp_path / name
        frame.to_parquet(path) if name.endswith("parquet") else frame.to_csv(path, index=False)
        assert abs(estimate_rows(path) - rows) <= rows * 0.02
        args = build_parser().parse_args(["fit", str(path), "--target", "c", "--out", "m", *extra])
        assert args.small_loop(args) is small
