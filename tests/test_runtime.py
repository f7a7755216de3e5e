"""Process settings: applied only before JAX starts, and the persistent compilation cache
really skips compiling in a second process."""

import os
import subprocess
import sys

import jax

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
