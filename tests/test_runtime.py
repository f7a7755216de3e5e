"""Process settings: applied only before JAX starts, and the persistent compilation cache
really skips compiling in a second process."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxreg import runtime


def test_settings_are_left_alone_once_jax_has_started(monkeypatch):
    jax.devices()  # the backend has started in this process
    monkeypatch.setenv("XLA_FLAGS", "")
    done = runtime.configure_process(compilation_cache=False, fast_cpu=True, n_cpu_devices=2)
    assert done == {"fast_cpu": False}
    assert os.environ["XLA_FLAGS"] == ""


_CHILD = """
import sys, jax
from jax import monitoring
import os
from jaxreg.runtime import configure_process
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
done = configure_process(compilation_cache=sys.argv[1], fast_cpu=True, n_cpu_devices=2)
import jax.numpy as jnp
jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.5)(jnp.arange(7.0)).block_until_ready()
print(len(jax.devices()), "small_while_loop" in os.environ["XLA_FLAGS"],
      ",".join(sorted(k for k in done if done[k])),
      events.count("/jax/compilation_cache/cache_hits"))
"""


def test_configure_process_before_start_and_the_persistent_cache(tmp_path):
    cache = tmp_path / "xla-cache"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}

    def child():
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(cache)], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    first = child()
    assert first[:3] == ["2", "True", "compilation_cache,fast_cpu,n_cpu_devices"]
    assert first[-1] == "0"
    assert any(cache.iterdir())  # the executable was written to the cache folder
    second = child()
    assert int(second[-1]) >= 1  # read back instead of compiled


def test_the_cli_leaves_jax_num_cpu_devices_to_jax(monkeypatch, tmp_path, capsys):
    """JAX_NUM_CPU_DEVICES set: the user's device count stands (JAX reads it); unset: one CPU
    device per core."""
    import jaxreg.runtime as rt
    from jaxreg.cli import main

    seen: dict = {}
    monkeypatch.setattr(rt, "configure_process", lambda **kw: seen.update(kw) or {})
    argv = ["fit", str(tmp_path / "missing.csv"), "--target", "y", "--out", str(tmp_path / "m")]
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "4")
    assert main(argv) == 2 and seen["n_cpu_devices"] is None
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES")
    assert main(argv) == 2 and seen["n_cpu_devices"] == rt.cpu_cores()
    assert "does not exist" in capsys.readouterr().err


def _histories() -> dict:
    """Three trainings of the lecture's data (full-batch GD; full-batch Adam stopping on
    validation; minibatch Adam stopping on the training loss): history, epochs, weights."""
    from jaxreg.data import Dataset, lecture_data
    from jaxreg.engine import TrainConfig
    from jaxreg.model import MLPSpec
    from jaxreg.optim import Hparams
    from jaxreg.runner import fit

    configs = {
        "plain": TrainConfig(epochs=40, optimizer="gd", record_every=10),
        "val": TrainConfig(epochs=200, optimizer="adam", record_every=5, patience=10, tol=1e-3),
        "train": TrainConfig(
            epochs=200,
            optimizer="adam",
            record_every=5,
            patience=15,
            monitor="train",
            tol=1e-3,
            sampling="shuffle",
            batch_size=64,
        ),
    }
    data = Dataset(*lecture_data())
    out: dict = {"small": runtime.small_loop_flags()}
    for name, cfg in configs.items():
        res = fit(MLPSpec((1, 10, 10, 1)), cfg, data, Hparams(1e-2), key=jax.random.PRNGKey(0))
        out[name] = {f: np.asarray(v).tolist() for f, v in res.history._asdict().items()}
        out[name]["epochs_run"] = int(res.epochs_run)
        out[name]["params"] = [np.asarray(p).tolist() for p in jax.tree.leaves(res.params)]
    return out


_HISTORY_CHILD = """
import json, sys
from jaxreg.runtime import configure_process
configure_process(compilation_cache=False, fast_cpu=True)
sys.path.insert(0, sys.argv[1])
from test_runtime import _histories
print(json.dumps(_histories()))
"""


@pytest.mark.long
def test_the_small_loop_form_trains_and_records_as_the_default_form():
    """Under the CLI's XLA options the engine records its history in one flat loop and
    takes small layers' weight gradients by lane blocks; its history, stopping epochs and
    weights must be those of the default form (nested loops, plain products), to float
    tolerance."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}

    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", _HISTORY_CHILD, here], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    fast = json.loads(out.stdout.strip().splitlines()[-1])
    default = _histories()  # this process runs XLA's default options
    assert fast.pop("small") is True and default.pop("small") is False
    for name, runs in fast.items():
        ref = default[name]
        assert runs["epochs_run"] == ref["epochs_run"], name
        assert runs["epoch"] == ref["epoch"], name
        for field in ("train_mse", "val_mse", "objective"):
            a, b = np.asarray(runs[field], float), np.asarray(ref[field], float)
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7, err_msg=f"{name} {field}")
        for a, b in zip(runs["params"], ref["params"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
    # the early-stopping runs really stopped (the rules were exercised)
    assert fast["val"]["epochs_run"] < 200 and fast["train"]["epochs_run"] < 200
