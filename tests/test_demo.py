"""``jaxreg demo``: the polynomial blog's ten losses, the jit lesson, the linear blog, and
both commands run end to end into a temporary folder."""

import re

import jax
import matplotlib.image
import numpy as np
import pytest

from jaxreg.apps import demo
from jaxreg.cli import main


@pytest.fixture(scope="module")
def blog_run():
    before = jax.config.jax_threefry_partitionable
    run = demo.polynomial_run(1000)
    assert jax.config.jax_threefry_partitionable == before  # the process setting is kept
    return run


def test_the_blogs_ten_losses(blog_run):
    assert not blog_run.partitionable
    assert [i for i, _ in blog_run.logged] == list(range(0, 1000, 100))
    assert [f"{v:.3f}" for _, v in blog_run.logged] == [f"{v:.3f}" for v in demo.BLOG_LOSSES]
    # the logged loss is the train MSE before that epoch's update, from the untrained params
    pred0 = np.tanh(blog_run.x_norm @ blog_run.params0[0].W + blog_run.params0[0].b)
    pred0 = pred0 @ blog_run.params0[1].W + blog_run.params0[1].b
    np.testing.assert_allclose(
        blog_run.losses[0], np.mean((pred0 - blog_run.y_norm) ** 2), rtol=1e-5
    )


def test_data_and_predictions_are_in_the_original_units(blog_run):
    x, y = blog_run.x[:, 0], blog_run.y[:, 0]
    np.testing.assert_allclose(x, np.linspace(-10, 10, 1000), rtol=1e-6, atol=1e-6)
    noise = y - np.polyval(demo.BLOG_COEFFICIENTS, x)
    assert abs(noise.mean()) < 0.15 and 0.85 < noise.std() < 1.15
    np.testing.assert_allclose(blog_run.y_norm.std(), 1.0, rtol=1e-5)  # population std
    # the trained model's MSE in original units is the standardized MSE times var(y)
    mse = np.mean((blog_run.trained_pred - blog_run.y) ** 2)
    final = float(blog_run.result.train_mse[0])
    np.testing.assert_allclose(mse, final * blog_run.y.var(), rtol=1e-3)


def test_partitionable_mode_is_jaxs_current_random_numbers(blog_run):
    before = jax.config.jax_threefry_partitionable
    run = demo.polynomial_run(1000, partitionable=True)
    assert jax.config.jax_threefry_partitionable == before
    assert run.partitionable
    assert run.logged[0][1] != pytest.approx(blog_run.logged[0][1], abs=1e-3)
    with jax.threefry_partitionable(True):
        noise = jax.random.normal(jax.random.split(jax.random.key(21))[1], (1000,))
    expected = np.polyval(demo.BLOG_COEFFICIENTS, run.x[:, 0]) + np.asarray(noise)
    np.testing.assert_allclose(run.y[:, 0], expected, rtol=1e-5, atol=1e-3)


def _check_pngs(folder, names):
    for name in names:
        image = matplotlib.image.imread(folder / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_demo_polynomial_command(tmp_path, capsys):
    out = tmp_path / "poly"
    rc = main(
        [
            "--no-cache",
            "demo",
            "polynomial",
            "--out",
            str(out),
            "--epochs",
            "1000",
            "--quick",
            "--eager-epochs",
            "2",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "jax_threefry_partitionable=False" in text
    assert "Epoch [0/1000] | Train Loss: 2.650" in text
    assert "Epoch [900/1000] | Train Loss: 0.040" in text
    assert "match the blog's" in text
    assert "op by op, no jit" in text and "whole loop compiled" in text
    # the blog's jitted step in a Python loop computes the engine's losses
    diff = float(re.search(r"losses agree with the engine's: max \|diff\| = (\S+)", text)[1])
    assert diff < 1e-4
    # the jaxpr of the forward pass on the raw X: two products and a tanh
    assert "f32[1000,1]" in text and text.count("dot_general") == 2 and "tanh" in text
    # FLOPs of a step: the two products on 1000 x 128, forward and backward, >= 3 x 4 n h
    flops = float(re.search(r"FLOPs of one training step .*: ([\d,]+)", text)[1].replace(",", ""))
    assert 3 * 4 * 1000 * 128 <= flops <= 3 * 3 * 4 * 1000 * 128
    _check_pngs(out, ["data.png", "untrained.png", "trained.png", "loss.png"])


def test_demo_linear_command(tmp_path, capsys):
    out = tmp_path / "lin"
    assert main(["--no-cache", "demo", "linear", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "coef_ = [" in text and "R^2 = 0.99" in text
    _check_pngs(out, ["loss.png", "predicted.png"])


def test_linear_run_recovers_the_blogs_model():
    run = demo.linear_run(5000, seed=0)
    np.testing.assert_allclose(run.coef, [3.0, 4.0], atol=0.05)
    assert abs(run.intercept - 5.5) < 0.1
    assert run.r2 > 0.999 and 0.1 < run.final_loss < 0.5
    assert run.loss_curve.shape == (5000,) and run.loss_curve[0] > 10 * run.final_loss


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo"], "demo needs a sub-command"),
        (["demo", "polynomial", "--epochs", "0"], "--epochs must be a positive integer. Got 0."),
        (["demo", "polynomial", "--eager-epochs", "-1"], "--eager-epochs must be a positive"),
        (["demo", "linear", "--steps", "0"], "--steps must be a positive integer. Got 0."),
        (["demo", "linear", "--seed", "-3"], "--seed must be a non-negative integer. Got -3."),
    ],
)
def test_bad_options_are_one_line_errors(argv, message, capsys):
    assert main(["--no-cache", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
