"""jaxreg.sweeps and ``jaxreg sweep``: vmapped sweeps against single fits, statistics against
SciPy/NumPy, the hold-out against ``training_split``, compilation counts, error paths, and
the CLI's files.

Every sweep here uses one architecture, 40 training rows and 8 models, so the whole module
compiles the vmapped engine once (plus one single-model fit and one lecture-data run).
"""

import ast
import math
import pathlib

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jaxreg import cli
from jaxreg.data import Dataset, lecture_function, training_split
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec, apply, init
from jaxreg.optim import Hparams
from jaxreg.runner import compile_count, fit
from jaxreg.sweeps import (
    confidence_interval,
    ensemble_predict,
    exercise_seeds,
    noise_floor,
    paired_comparison,
    sweep,
)

N_ROWS, EPOCHS, SEEDS = 50, 20, [0, 1]
GRID = {"learning_rate": [1e-2, 2e-2], "l2": [0.0, 1e-3]}


def _xy():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 5, N_ROWS)).astype(np.float32)
    y = (np.sqrt(x) + np.sin(x) + 0.2 * rng.normal(size=N_ROWS)).astype(np.float32)
    return x.reshape(-1, 1), y.reshape(-1, 1)


@pytest.fixture(scope="module")
def result():
    return sweep(_xy(), architectures=[(4,)], grid=GRID, seeds=SEEDS, epochs=EPOCHS)


def test_grid_expands_to_one_row_per_configuration(result):
    t = result.table
    assert len(t) == 4
    assert list(zip(t["learning_rate"], t["l2"], strict=True)) == [
        (1e-2, 0.0),
        (1e-2, 1e-3),
        (2e-2, 0.0),
        (2e-2, 1e-3),
    ]
    assert (t["architecture"] == "1-4-1").all() and (t["n_params"] == 13).all()
    assert (t["n_seeds"] == 2).all() and (t["n_diverged"] == 0).all()
    assert result.val_mse.shape == (4, 2) and result.train_mse.shape == (4, 2)
    assert int(result.best["config"]) == int(t["val_mse_mean"].idxmin())
    assert jax.tree.leaves(result.best_params)[0].shape[0] == 2


def _held_out_as_fit(x, y, val_fraction, seed):
    """The training and validation rows ``jaxreg fit --seed`` (and the estimator) use."""
    _, tr, va = training_split(len(x), val_fraction, seed)
    return x[tr], y[tr], x[va], y[va]


@pytest.mark.parametrize("split_seed", [0, 7])
def test_the_sweep_holds_out_the_rows_fit_holds_out(result, split_seed):
    res = (
        result
        if split_seed == 0
        else sweep(
            _xy(),
            architectures=[(4,)],
            grid=GRID,
            seeds=SEEDS,
            epochs=EPOCHS,
            split_seed=split_seed,
        )
    )
    x_tr, y_tr, x_va, y_va = _held_out_as_fit(*_xy(), 0.2, split_seed)
    assert len(x_va) == math.ceil(0.2 * N_ROWS)
    for got, want in zip(res.data, (x_tr, y_tr, x_va, y_va), strict=False):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_each_vmapped_model_equals_the_model_trained_alone(result):
    data = Dataset(*_held_out_as_fit(*_xy(), 0.2, 0))
    spec, cfg = MLPSpec((1, 4, 1)), TrainConfig(epochs=EPOCHS, record_every=0)
    for i, (lr, l2) in enumerate([(1e-2, 0.0), (2e-2, 1e-3)]):
        row = [0, 3][i]
        for s, seed in enumerate(SEEDS):
            alone = fit(spec, cfg, data, Hparams(lr, l2=l2), key=seed)
            np.testing.assert_allclose(result.val_mse[row, s], float(alone.val_mse[0]), rtol=1e-5)
            np.testing.assert_allclose(
                result.train_mse[row, s], float(alone.train_mse[0]), rtol=1e-5
            )
            if row == int(result.best["config"]):
                for a, b in zip(
                    jax.tree.leaves(alone.params), jax.tree.leaves(result.best_params), strict=True
                ):
                    np.testing.assert_allclose(
                        np.asarray(b[s]), np.asarray(a), rtol=1e-5, atol=1e-6
                    )


def test_sweeping_learning_rates_does_not_recompile(result):
    before = compile_count()
    again = sweep(
        _xy(),
        architectures=[(4,)],
        grid={"learning_rate": [3e-2, 5e-3], "l2": [1e-4, 0.0]},
        seeds=SEEDS,
        epochs=EPOCHS,
    )
    assert compile_count() == before
    assert not np.allclose(again.val_mse, result.val_mse)


def test_confidence_intervals_match_a_direct_computation(result):
    v = result.val_mse[2]
    row = result.table.iloc[2]
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert row["val_mse_ci_low"] == pytest.approx(lo, rel=1e-9)
    assert row["val_mse_ci_high"] == pytest.approx(hi, rel=1e-9)
    assert row["val_mse_std"] == pytest.approx(np.std(v, ddof=1), rel=1e-9)
    rng = np.random.default_rng(0)
    w = rng.normal(1.0, 0.3, 17)
    mean, low, high = confidence_interval(w, 0.9)
    half = stats.t.ppf(0.95, 16) * w.std(ddof=1) / math.sqrt(17)
    assert (mean, low, high) == pytest.approx((w.mean(), w.mean() - half, w.mean() + half))
    assert math.isnan(confidence_interval([1.0])[1])
    with pytest.raises(
        ValueError,
        match=r"The 'confidence' parameter of confidence_interval "
        r"must be a float in \(0, 1\). Got 95 instead.",
    ):
        confidence_interval(w, 95)


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(1)
    b = rng.normal(0.041, 5e-4, 24)
    a = b - 1e-4 + rng.normal(0, 2e-4, 24)
    r = paired_comparison(a, b)
    ref = stats.ttest_rel(a, b)
    assert r.p_value == pytest.approx(ref.pvalue) and r.t_stat == pytest.approx(ref.statistic)
    d = a - b
    half = stats.t.ppf(0.975, 23) * d.std(ddof=1) / math.sqrt(24)
    assert (r.mean_diff, r.ci_low, r.ci_high) == pytest.approx(
        (d.mean(), d.mean() - half, d.mean() + half)
    )
    assert r.frac_a_better == pytest.approx(np.mean(d < 0)) and r.n == 24
    # equal differences: a degenerate test, decided without SciPy's division by zero
    same = paired_comparison([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert (same.t_stat, same.p_value) == (-math.inf, 0.0)
    assert math.isnan(paired_comparison([1.0, 2.0], [1.0, 2.0]).p_value)
    with pytest.raises(
        ValueError,
        match=r"The 'b' parameter of paired_comparison must have "
        r"the length of 'a' \(2: one value per seed\). "
        "Got length 1 instead.",
    ):
        paired_comparison([1.0, 2.0], [1.0])


def test_ensemble_predict_and_noise_floor_against_numpy():
    spec = MLPSpec((1, 5, 2))
    members = [init(jax.random.PRNGKey(s), spec) for s in range(3)]
    stacked = jax.tree.map(lambda *a: np.stack(a), *members)
    x = np.linspace(0, 2, 7, dtype=np.float32).reshape(-1, 1)
    mean, std = ensemble_predict(stacked, spec, x)
    preds = np.stack([np.asarray(apply(p, x)) for p in members])
    np.testing.assert_allclose(mean, preds.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, preds.std(0), rtol=1e-4, atol=1e-6)
    xv, yv = _xy()
    floor = np.mean((np.sqrt(xv) + np.sin(xv) - yv) ** 2)
    assert noise_floor(xv, yv) == pytest.approx(float(floor), rel=1e-6)
    assert noise_floor(xv, lecture_function(xv)) == pytest.approx(0.0, abs=1e-10)


def test_exercise_seeds_start_with_the_lectures():
    assert exercise_seeds(4) == [1234, 0, 1, 2]
    with pytest.raises(ValueError, match="The 'n_seeds' parameter of exercise_seeds must be"):
        exercise_seeds(1)


GRID_RULE = "The 'grid' parameter of sweep must be a dict whose "


@pytest.mark.parametrize(
    "grid, match",
    [
        (
            {"learning_rate": []},
            GRID_RULE + "'learning_rate' value is a non-empty list. Got "
            r"\[\] instead.",
        ),
        ({"lr": [1e-3]}, GRID_RULE + "keys are in .*Got the unknown key 'lr' instead."),
        (
            {"learning_rate": [1e-3, -1e-3]},
            "The 'learning_rate' parameter of Hparams must be a "
            r"float in \(0, inf\). Got -0.001 instead.",
        ),
        ({"l2": ["big"]}, GRID_RULE + "'l2' values are numbers. Got 'big' instead."),
        ({"l2": [True]}, GRID_RULE + "'l2' values are numbers. Got True instead."),
        ({"optimizer": ["adamax"]}, GRID_RULE + r"'optimizer' values are in \[.*\]. Got 'adamax'"),
        ({"learning_rate": [1e-3, 1e-3]}, GRID_RULE + "'learning_rate' values are distinct."),
        ([("learning_rate", 1e-3)], "The 'grid' parameter of sweep must be a dict of name"),
    ],
)
def test_bad_grids_give_clear_errors(grid, match):
    with pytest.raises(ValueError, match=match):
        sweep(_xy(), grid=grid, seeds=2, epochs=EPOCHS)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seeds": 0}, "The 'seeds' parameter of sweep must be .* Got 0 instead."),
        ({"seeds": [1, 1]}, r"'seeds' parameter of sweep must be .*distinct.* Got \[1, 1\]"),
        (
            {"architectures": []},
            r"'architectures' parameter of sweep must be a non-empty list. "
            r"Got \[\] instead.",
        ),
        ({"architectures": [(4, 0)]}, "positive hidden widths. Got \\(4, 0\\) instead."),
        (
            {"architectures": [MLPSpec((2, 3, 1))]},
            "must list MLPSpec with 1 input.* Got 2-3-1 instead.",
        ),
        (
            {"val_fraction": 1.5},
            r"The 'val_fraction' parameter of sweep must be a float in "
            r"\(0, 1\). Got 1.5 instead.",
        ),
        (
            {"val_fraction": 0.99},
            "'val_fraction' parameter of sweep must leave at least one "
            "training row. Got 0.99 instead",
        ),
        (
            {"split_seed": -1},
            r"The 'split_seed' parameter of sweep must be an int in "
            r"\[0, 4294967295\]. Got -1 instead.",
        ),
        ({"confidence": 1.0}, "'confidence' parameter of sweep must be a float in"),
        ({"data_or_xy": "table.csv"}, "The 'data_or_xy' parameter of sweep must be a Dataset"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, match):
    kwargs = dict(kwargs)
    data = kwargs.pop("data_or_xy", _xy())
    with pytest.raises(ValueError, match=match) as info:
        sweep(data, **{"epochs": EPOCHS, **kwargs})
    assert "--" not in str(info.value)  # library messages name parameters, not CLI flags


def _write_csv(path):
    x, y = _xy()
    pd.DataFrame({"x": x[:, 0], "noise": 0.0, "y": y[:, 0]}).to_csv(path, index=False)


def test_cli_sweeps_a_csv_file_with_a_toml_grid(tmp_path, capsys, result):
    csv = tmp_path / "d.csv"
    _write_csv(csv)
    toml = tmp_path / "grid.toml"
    toml.write_text(
        "hidden = [[4]]\nepochs = 20\nseeds = 2\n"
        "[grid]\nlearning_rate = [1e-2, 2e-2]\nl2 = [0, 1e-3]\n"
    )
    out = tmp_path / "out"
    before = compile_count()
    code = cli.main(
        [
            "--no-cache",
            "sweep",
            "--data",
            str(csv),
            "--target",
            "y",
            "--features",
            "x",
            "--grid",
            str(toml),
            "--out",
            str(out),
            "--plain",
            "--ensemble-plot",
        ]
    )
    assert code == 0
    assert compile_count() == before  # same shapes as the fixture's sweep: no new compile
    for name in ("sweep.csv", "sweep.md", "sweep.png", "ensemble.png"):
        assert (out / name).stat().st_size > 0
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4 and set(table["l2"]) == {0.0, 1e-3}
    assert (out / "sweep.md").read_text().startswith("| architecture |")
    printed = capsys.readouterr().out
    assert "Best:" in printed and "jaxreg sweep --data" in printed


def test_cli_lecture_reports_the_noise_floor(tmp_path, capsys):
    out = tmp_path / "lec"
    code = cli.main(
        [
            "--no-cache",
            "sweep",
            "--lecture",
            "--hidden",
            "2",
            "--lr",
            "1e-2",
            "--epochs",
            "5",
            "--seeds",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for name in ("sweep.csv", "sweep.md", "sweep.png", "ensemble.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Noise floor" in printed and "gap %" in printed
    assert "gap_pct" in pd.read_csv(out / "sweep.csv").columns


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--target", "nope"], r"'nope' \(--target\) not found in"),
        (["--target", "y", "--lr", "abc"], "'--lr' option must be a comma-separated list"),
        (["--target", "y", "--lr", "-1"], "'learning_rate' parameter of Hparams must be a float"),
        (["--target", "y", "--hidden", "4,x"], "'--hidden' option must be positive integer"),
        (["--target", "y", "--l2", "0", "--schedule", "linear"], "'schedule' values are in"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, match):
    csv = tmp_path / "d.csv"
    _write_csv(csv)
    code = cli.main(
        ["--no-cache", "sweep", "--data", str(csv), "--out", str(tmp_path / "o"), *argv]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_cli_rejects_a_non_numeric_column(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,2\n2,three\n3,4\n")
    assert cli.main(["--no-cache", "sweep", "--data", str(csv), "--target", "y"]) == 2
    assert "Target column 'y' in" in capsys.readouterr().err


def _private_uses(path: pathlib.Path) -> list[str]:
    """``from jaxreg.x import _y`` and ``x._y`` on an imported jaxreg module, in ``path``."""
    tree = ast.parse(path.read_text())
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxreg"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"from {node.module} import {a.name}")
                elif node.module == "jaxreg":
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname or a.name for a in node.names if a.name.startswith("jaxreg"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("name", ["sweepcmd.py", "lecture.py"])
def test_the_cli_workflows_use_only_public_names(name):
    path = pathlib.Path(cli.__file__).parent / "apps" / name
    assert _private_uses(path) == []
