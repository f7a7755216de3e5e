import csv
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from jaxreg.cli import main
from jaxreg.sweeps import EXERCISE_STRATEGIES


def test_help_is_fast_and_imports_no_heavy_library():
    code = (
        "import sys\nfrom jaxreg.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in ('jax', 'matplotlib', 'pandas', 'keras', 'sklearn') "
        "if m in sys.modules]\nprint('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "lecture" in out
    assert "HEAVY []" in out


@pytest.mark.long
def test_lecture_cli_writes_plots_and_tables(tmp_path, capsys):
    out = tmp_path / "lec"
    code = main(
        [
            "--no-cache",
            "lecture",
            "--out",
            str(out),
            "--epochs",
            "20",
            "--record-every",
            "10",
            "--exercise",
            "--seeds",
            "2",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Noise floor" in text and "JAX + Optax ADAM" in text
    assert "Hand-coded GD and Optax SGD parameters identical: yes" in text
    for name in ("data", "fit_gd", "fit_sgd", "fit_adam", "loss_gd", "loss_sgd", "loss_adam"):
        img = mpimg.imread(out / f"{name}.png")
        assert img.ndim == 3 and img.shape[0] > 100
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    methods = [r["method"] for r in rows]
    assert methods[-3:] == ["Pure JAX (hand-coded GD)", "JAX + Optax SGD", "JAX + Optax ADAM"]
    assert any(m.startswith("Keras") for m in methods)  # a row, installed or not
    for r in rows[-3:]:
        assert 0 < float(r["val_mse"]) < 5 and float(r["run_s"]) > 0
    md = (out / "summary.md").read_text()
    assert md.startswith("| Method |") and "Noise floor" in md
    ex = (out / "exercise.md").read_text().splitlines()
    assert len(ex) == 2 + len(EXERCISE_STRATEGIES) and "| 187 |" in ex[3] and "| 251 |" in ex[2]
    # one definition of the exercise: the library's, for single runs and over seeds
    labels = [s.label for s in EXERCISE_STRATEGIES]
    assert [line.split(" | ")[0].lstrip("| ") for line in ex[2:]] == labels
    seeds = list(csv.DictReader((out / "exercise_seeds.csv").read_text().splitlines()))
    assert [r["strategy"] for r in seeds] == labels and labels[0].startswith("Baseline")
    assert "paired t-test" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lecture", "--epochs", "0"], "--epochs must be a positive integer. Got 0"),
        (
            ["lecture", "--epochs", "100", "--record-every", "7"],
            "--record-every must be a positive divisor of --epochs (100). Got 7",
        ),
        (["lecture", "--seeds", "4"], "--seeds needs --exercise"),
    ],
)
def test_lecture_cli_bad_options(argv, message, capsys, tmp_path):
    assert main(["--no-cache", *argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
