"""The runner compiles thin minibatch loops with XLA's products on one thread on a CPU of at
most two cores (``runner._product_options``): chosen only there, and training the same
model as XLA's threaded products."""

import jax
import numpy as np
import pytest

from jaxreg import runner
from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams
from jaxreg.runner import Placement, compile_count, fit

MINIBATCH = TrainConfig(epochs=3, optimizer="adam", batch_size=64, sampling="shuffle")


@pytest.fixture
def cores(monkeypatch):
    """Set the cores the runner sees."""

    def set_cores(n: int) -> None:
        monkeypatch.setattr(runner, "cpu_cores", lambda: n)

    return set_cores


@pytest.mark.parametrize(
    "sizes, cfg, placement, n_cores, one_thread",
    [
        ((8, 64, 64, 1), TrainConfig(batch_size=1024, sampling="shuffle"), Placement(), 2, True),
        ((8, 64, 64, 1), TrainConfig(batch_size=1024, sampling="shuffle"), Placement(), 1, True),
        # 8192 x 64 x 64 = 2**25 multiply-adds: the limit itself
        ((8, 64, 64, 1), TrainConfig(batch_size=8192, sampling="bootstrap"), Placement(), 2, True),
        # 1024 x 256 x 256 = 2**26: XLA's threads
        ((8, 256, 256, 1), TrainConfig(batch_size=1024, sampling="shuffle"), Placement(), 2, False),
        # more cores than measured
        ((8, 64, 64, 1), TrainConfig(batch_size=1024, sampling="shuffle"), Placement(), 4, False),
        # full batch (the lecture) and L-BFGS: XLA's threads
        ((1, 10, 10, 10, 1), TrainConfig(), Placement(), 2, False),
        ((8, 64, 1), TrainConfig(optimizer="lbfgs"), Placement(), 2, False),
        # an ensemble's model axis
        (
            (8, 64, 1),
            TrainConfig(batch_size=1024, sampling="shuffle"),
            Placement("map"),
            2,
            False,
        ),
    ],
)
def test_one_thread_only_for_thin_minibatch_loops_on_two_cores(
    cores, sizes, cfg, placement, n_cores, one_thread
):
    cores(n_cores)
    got = runner._product_options(MLPSpec(sizes), cfg, placement)
    assert got == (runner._ONE_THREAD if one_thread else ())


def _data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(700, 4)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.3 * x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    return Dataset(x[:600], y[:600], x[600:], y[600:])


def test_one_thread_trains_what_the_threaded_products_train(cores):
    """Two compilations of the same loop (one-thread options on two cores, XLA's threads
    on eight), the same data and key: the same weights and history to float rounding."""
    spec, data, key = MLPSpec((4, 32, 32, 1)), _data(), jax.random.PRNGKey(7)
    results = {}
    for n_cores in (2, 8):
        cores(n_cores)
        before = compile_count()
        results[n_cores] = fit(spec, MINIBATCH, data, Hparams(1e-2), key=key)
        assert compile_count() > before  # its own executable: the options are in the key
    one, threaded = results[2], results[8]
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(threaded.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for field in ("train_mse", "val_mse"):
        np.testing.assert_allclose(
            np.asarray(getattr(one.history, field)),
            np.asarray(getattr(threaded.history, field)),
            rtol=1e-5,
        )
    assert float(one.val_mse[0]) < float(one.history.val_mse[0, 0])  # it trained
