"""jaxreg.sweeps and ``jaxreg sweep``: vmapped sweeps against single fits, statistics against
SciPy/NumPy, compilation counts, error paths, and the CLI's files.

Every sweep here uses one architecture, 40 training rows and 8 models, so the whole module
compiles the vmapped engine once (plus one single-model fit and one lecture-data run).
"""

import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jaxreg import cli
from jaxreg.data import Dataset, lecture_function
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec, apply, init
from jaxreg.optim import Hparams
from jaxreg.runner import compile_count, fit
from jaxreg.sweeps import (
    _t_two_sided_p,
    confidence_interval,
    ensemble_predict,
    exercise_seeds,
    noise_floor,
    paired_comparison,
    split_validation,
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
        (1e-2, 0.0), (1e-2, 1e-3), (2e-2, 0.0), (2e-2, 1e-3)]
    assert (t["architecture"] == "1-4-1").all() and (t["n_params"] == 13).all()
    assert (t["n_seeds"] == 2).all() and (t["n_diverged"] == 0).all()
    assert result.val_mse.shape == (4, 2) and result.train_mse.shape == (4, 2)
    assert int(result.best["config"]) == int(t["val_mse_mean"].idxmin())
    assert jax.tree.leaves(result.best_params)[0].shape[0] == 2


def test_each_vmapped_model_equals_the_model_trained_alone(result):
    data = Dataset(*split_validation(*_xy(), 0.2, 0))
    spec, cfg = MLPSpec((1, 4, 1)), TrainConfig(epochs=EPOCHS, record_every=0)
    for i, (lr, l2) in enumerate([(1e-2, 0.0), (2e-2, 1e-3)]):
        row = [0, 3][i]
        for s, seed in enumerate(SEEDS):
            alone = fit(spec, cfg, data, Hparams(lr, l2=l2), key=seed)
            np.testing.assert_allclose(result.val_mse[row, s], float(alone.val_mse[0]),
                                       rtol=1e-5)
            np.testing.assert_allclose(result.train_mse[row, s], float(alone.train_mse[0]),
                                       rtol=1e-5)
            if row == int(result.best["config"]):
                for a, b in zip(jax.tree.leaves(alone.params),
                                jax.tree.leaves(result.best_params), strict=True):
                    np.testing.assert_allclose(np.asarray(b[s]), np.asarray(a), rtol=1e-5,
                                               atol=1e-6)


def test_sweeping_learning_rates_does_not_recompile(result):
    before = compile_count()
    again = sweep(_xy(), architectures=[(4,)], grid={"learning_rate": [3e-2, 5e-3],
                                                     "l2": [1e-4, 0.0]},
                  seeds=SEEDS, epochs=EPOCHS)
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
        (d.mean(), d.mean() - half, d.mean() + half))
    assert r.frac_a_better == pytest.approx(np.mean(d < 0)) and r.n == 24
    # the SciPy-free fallback of the p-value
    for t, df in [(0.3, 3), (2.1, 15), (-4.0, 31)]:
        assert _t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-6)
    with pytest.raises(ValueError, match="equal length"):
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
    with pytest.raises(ValueError, match="n_seeds"):
        exercise_seeds(1)


@pytest.mark.parametrize("grid, match", [
    ({"learning_rate": []}, "'learning_rate' must be a non-empty list"),
    ({"lr": [1e-3]}, "unknown parameter 'lr'"),
    ({"learning_rate": [1e-3, -1e-3]}, "'learning_rate' hyperparameter must be a float in "
                                       r"\(0, inf\). Got -0.001"),
    ({"l2": ["big"]}, "values of 'l2' must be numbers. Got 'big'"),
    ({"l2": [True]}, "values of 'l2' must be numbers"),
    ({"optimizer": ["adamax"]}, "'optimizer' must be one of"),
    ({"learning_rate": [1e-3, 1e-3]}, "must be distinct"),
    ([("learning_rate", 1e-3)], "must be a dict"),
])
def test_bad_grids_give_clear_errors(grid, match):
    with pytest.raises(ValueError, match=match):
        sweep(_xy(), grid=grid, seeds=2, epochs=EPOCHS)


@pytest.mark.parametrize("kwargs, match", [
    ({"seeds": 0}, "'seeds' parameter"),
    ({"seeds": [1, 1]}, "must not repeat"),
    ({"architectures": []}, "must not be empty"),
    ({"architectures": [(4, 0)]}, "positive hidden widths"),
    ({"architectures": [MLPSpec((2, 3, 1))]}, "must take 1 input"),
    ({"val_fraction": 1.5}, "'val_fraction' parameter must be a float in \\(0, 1\\)"),
])
def test_bad_arguments_give_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sweep(_xy(), **{"epochs": EPOCHS, **kwargs})


def _write_csv(path):
    x, y = _xy()
    pd.DataFrame({"x": x[:, 0], "noise": 0.0, "y": y[:, 0]}).to_csv(path, index=False)


def test_cli_sweeps_a_csv_file_with_a_toml_grid(tmp_path, capsys, result):
    csv = tmp_path / "d.csv"
    _write_csv(csv)
    toml = tmp_path / "grid.toml"
    toml.write_text('hidden = [[4]]\nepochs = 20\nseeds = 2\n'
                    '[grid]\nlearning_rate = [1e-2, 2e-2]\nl2 = [0, 1e-3]\n')
    out = tmp_path / "out"
    before = compile_count()
    code = cli.main(["--no-cache", "sweep", "--data", str(csv), "--target", "y", "--features",
                     "x", "--grid", str(toml), "--out", str(out), "--plain",
                     "--ensemble-plot"])
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
    code = cli.main(["--no-cache", "sweep", "--lecture", "--hidden", "2", "--lr", "1e-2",
                     "--epochs", "5", "--seeds", "2", "--out", str(out)])
    assert code == 0
    for name in ("sweep.csv", "sweep.md", "sweep.png", "ensemble.png"):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "Noise floor" in printed and "gap %" in printed
    assert "gap_pct" in pd.read_csv(out / "sweep.csv").columns


@pytest.mark.parametrize("argv, match", [
    (["--target", "nope"], r"'nope' \(--target\) not found in"),
    (["--target", "y", "--lr", "abc"], "'--lr' option must be a comma-separated list"),
    (["--target", "y", "--lr", "-1"], "'learning_rate' hyperparameter must be a float"),
    (["--target", "y", "--hidden", "4,x"], "'--hidden' option must be positive integer"),
    (["--target", "y", "--l2", "0", "--schedule", "linear"], "'schedule' must be one of"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, argv, match):
    csv = tmp_path / "d.csv"
    _write_csv(csv)
    code = cli.main(["--no-cache", "sweep", "--data", str(csv), "--out", str(tmp_path / "o"),
                     *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_cli_rejects_a_non_numeric_column(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("x,y\n1,2\n2,three\n3,4\n")
    assert cli.main(["--no-cache", "sweep", "--data", str(csv), "--target", "y"]) == 2
    assert "Target column 'y' in" in capsys.readouterr().err
