"""Scale-out: data-parallel training over a ``data`` mesh axis, the ``(models, data)`` mesh,
and several processes through ``jax.distributed`` (gloo on CPU).

The device counts need their own processes (JAX reads them when its backend starts), so the
checks run in subprocesses with ``JAX_NUM_CPU_DEVICES``; each is bounded in time and its
processes are killed when it fails. The reference is always one device (or one process)
training the same batches in the same order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxreg.runner import Placement, placement_for

TIMEOUT = 240


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _python(code: str, devices: int, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _together(commands: list[list[str]], devices: int) -> list[subprocess.CompletedProcess]:
    """Run the commands at once (the processes of one distributed run); kill them all when
    one fails or the time runs out. Their output goes to files: a process blocked on a full
    pipe would hold the others at JAX's shutdown barrier."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        files = [
            (open(f"{folder}/{i}.out", "w+b"), open(f"{folder}/{i}.err", "w+b"))  # noqa: SIM115
            for i in range(len(commands))
        ]
        procs = [
            subprocess.Popen(c, env=_env(devices), stdout=o, stderr=e)
            for c, (o, e) in zip(commands, files, strict=True)
        ]
        try:
            for p in procs:
                p.wait(timeout=TIMEOUT)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        out = []
        for p, (o, e) in zip(procs, files, strict=True):
            o.seek(0)
            e.seek(0)
            text = o.read().decode(), e.read().decode()
            out.append(subprocess.CompletedProcess(p.args, p.returncode, *text))
            o.close()
            e.close()
    return out


# ---------------------------------------------------------------- placement (in process)


def test_placement_checks_its_data_axis():
    with pytest.raises(ValueError, match=r"'data' parameter of Placement must be a divisor"):
        Placement("map", ("a", "b", "c"), 1, 2)
    with pytest.raises(ValueError, match=r"'parts' parameter of Placement must be 1"):
        Placement("map", ("a", "b"), 2, 2)
    with pytest.raises(ValueError, match=r"'devices' parameter of Placement"):
        Placement("single", ("a", "b", "c", "d"), 1, 2)  # one model, a models axis of 2
    p = Placement("single", ("a", "b"), 1, 2)
    assert (p.models_axis, p.n_slots) == (1, 1)
    q = Placement("map", ("a", "b", "c", "d", "e", "f"), 1, 3)
    assert (q.models_axis, q.n_slots) == (2, 2)
    with pytest.raises(ValueError, match=r"'data_axis' parameter of placement_for"):
        placement_for(2, data_axis=-1)
    # One device: a data axis of one is no data axis.
    assert placement_for(1, data_axis=0) == Placement()


# ---------------------------------------------------------------- one process, four devices

_EQUIVALENCE = """
import re, warnings
import jax, numpy as np
from sklearn.exceptions import ConvergenceWarning
from jaxreg import runner
from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams
from jaxreg.runner import placement_for, run

warnings.simplefilter("ignore", ConvergenceWarning)
assert jax.device_count() == 4
rng = np.random.default_rng(0)
out = {}

def dataset(n, n_val=64):
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = np.stack([np.sin(x).sum(1), x[:, 0] * x[:, 1]], 1).astype(np.float32)
    return Dataset(x, y, x[:n_val], y[:n_val])

def collectives(exe):
    return re.findall(r"= \\(?[^=]*\\)? (all-reduce|all-gather|reduce-scatter)(?:-start)?\\(",
                      exe.as_text())

spec = MLPSpec((3, 8, 2))
cases = {  # name: rows, configuration, models, data axis
    "shuffle": (256, TrainConfig(6, "adam", batch_size=32, sampling="shuffle"), 1, 4),
    "lbfgs": (256, TrainConfig(8, "lbfgs"), 1, 4),  # full batch: the objective over shards
    "feistel order": (70_000, TrainConfig(1, "adam", batch_size=8192, sampling="shuffle"), 1, 4),
    # two models on a (2 models, 2 data) mesh
    "ensemble": (256, TrainConfig(6, "adam", batch_size=32, sampling="shuffle"), 2, 2),
}
for name, (n, cfg, m, axis) in cases.items():
    d = dataset(n)
    keys = jax.random.key_data(jax.random.split(jax.random.key(1), m))
    one = placement_for(m, devices=jax.devices()[:1], threads=1) if m > 1 else None
    ref = run(spec, cfg, d, Hparams(1e-2), keys, placement=one).result
    runner._CACHE.clear()
    got = run(spec, cfg, d, Hparams(1e-2), keys, placement=placement_for(m, data_axis=axis)).result
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params)))
    val = float(np.max(np.abs(np.asarray(ref.val_mse) - np.asarray(got.val_mse))))
    (exe,) = [e for k, e in runner._CACHE.items() if k[0][0] == "train"]
    rows = exe.input_shardings[0][1].x.shard_shape((n, 3))[0]
    out[name] = {"params": diff, "val": val, "rows": rows, "axis": axis, "n": n,
                 "all-reduce": collectives(exe).count("all-reduce")}

print(json.dumps(out))
"""


@pytest.mark.long
def test_data_parallel_equals_one_device():
    """Minibatches, L-BFGS (full batch), the Feistel order of more than 65,536 rows and an
    ensemble on a (models, data) mesh: the same batches in the same order give one device's
    result to float tolerance, with the rows split over the devices and the gradients
    all-reduced."""
    out = json.loads(_python("import json\n" + textwrap.dedent(_EQUIVALENCE), 4))
    for name in ("shuffle", "lbfgs", "feistel order", "ensemble"):
        r = out[name]
        tol = 5e-5 if name == "lbfgs" else 2e-6
        assert r["params"] < tol and r["val"] < tol, (name, r)
        assert r["rows"] == r["n"] // r["axis"], (name, r)  # each device holds its share
        assert r["all-reduce"] >= 1, (name, r)  # the gradients are summed across devices


# ---------------------------------------------------------------- two processes

_PROCESS = """
import json, sys, warnings
import jax, numpy as np
port, pid = sys.argv[1], int(sys.argv[2])
from jaxreg.runtime import start_distributed
assert start_distributed(f"127.0.0.1:{port}", 2, pid) == {"process_index": pid, "process_count": 2}
from sklearn.exceptions import ConvergenceWarning
from jaxreg import MLPRegressor, fit_many
from jaxreg.data import Dataset
from jaxreg.engine import TrainConfig
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams

warnings.simplefilter("ignore", ConvergenceWarning)
assert jax.device_count() == 4 and jax.local_device_count() == 2
rng = np.random.default_rng(0)
X = rng.normal(size=(600, 4)); y = np.sin(X).sum(1)
out = {}
f = np.float32
d = Dataset(X[:500].astype(f), y[:500, None].astype(f), X[500:].astype(f), y[500:, None].astype(f))
# Six models split over the four devices of both processes; the reference on one local device.
for where, devices in (("all", None), ("local", jax.local_devices()[:1])):
    out[f"models/{where}"] = np.asarray(fit_many(
        MLPSpec((4, 8, 1)), TrainConfig(20, "adam"), d, Hparams(1e-2), n_models=6,
        devices=devices, threads=1).val_mse).ravel()
# A table streamed from disk: each process reads its own row groups.
from jaxreg.stream import TableStream

stream = TableStream(sys.argv[3], "y", val_fraction=0.2, seed=1, buffer_rows=2000, block_rows=500)
model = MLPRegressor((16,), epochs=2, batch_size=128, random_state=0, tol=None).fit(stream)
table = np.load(sys.argv[4])
out["streamed"] = model.predict(table[:1000, :3])
out["rows_read"] = stream.rows_read
out["stats"] = np.concatenate([stream.stats.x_mean, stream.stats.x_std, stream.stats.y_std])
# Text columns and missing values: the preprocessing pass split over the processes too.
from jaxreg.runner import gather_processes

mixed = TableStream(sys.argv[3].replace("t.parquet", "mixed.parquet"), "y", val_fraction=0.2,
                    seed=1, block_rows=500, missing_indicator=True,
                    process_index=jax.process_index(), process_count=jax.process_count())
mixed.scan(gather_processes)
out["mixed_stats"] = np.concatenate([mixed.stats.x_mean, mixed.stats.x_std])
out["mixed_rows_read"] = mixed.rows_read
result = {k: np.asarray(v, float).tolist() for k, v in out.items()}
result["mixed_prep"] = mixed.preprocessor.to_dict()
with open(sys.argv[5], "w") as f:
    json.dump(result, f)
# The command line in the same processes (jax.distributed is already running).
from jaxreg.cli import main

sys.exit(main(["--no-cache", *sys.argv[6:], "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(pid)]))
"""


@pytest.mark.long
def test_two_processes_agree_with_one_device(tmp_path, capsys):
    """Two processes of two CPU devices each (jax.distributed on 127.0.0.1, gloo): a model
    axis split over all four devices equals one device's; a streamed table is read half by
    each; and ``jaxreg fit --coordinator`` in the same processes (data-parallel over the four
    devices) writes, from process 0 alone, a model that predicts as one process's on one
    device."""
    import pandas as pd

    import jaxreg
    from jaxreg.cli import main
    from jaxreg.stream import TableStream

    rng = np.random.default_rng(0)
    table = rng.normal(size=(12_000, 4))
    table[:, 3] = np.sin(table[:, :3]).sum(1) + 0.1 * table[:, 3]
    frame = pd.DataFrame(table, columns=["a", "b", "c", "y"])
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=1500)
    mixed = frame.assign(kind=rng.choice(["u", "v", "w"], len(frame)))
    mixed.loc[mixed.index % 7 == 3, "a"] = np.nan
    mixed.loc[11_000, "kind"] = "in-the-last-row-group"
    mixed.to_parquet(tmp_path / "mixed.parquet", row_group_size=1500)
    alone_stream = TableStream(
        tmp_path / "mixed.parquet", "y", val_fraction=0.2, seed=1, missing_indicator=True
    )
    alone = alone_stream.scan()
    frame.iloc[:400].to_csv(tmp_path / "t.csv", index=False)
    np.save(tmp_path / "t.npy", table)
    one = TableStream(tmp_path / "t.parquet", "y", val_fraction=0.2, seed=1).scan()
    fit = ["fit", str(tmp_path / "t.csv"), "--target", "y", "--epochs", "5", "--no-report"]
    fit += ["--quiet"]
    code = textwrap.dedent(_PROCESS)
    port = str(_free_port())
    runs = _together(
        [
            [sys.executable, "-c", code, port, str(i), str(tmp_path / "t.parquet")]
            + [str(tmp_path / "t.npy"), str(tmp_path / f"{i}.json")]
            + [*fit, "--out", str(tmp_path / "two")]
            for i in range(2)
        ],
        2,
    )
    outs = []
    for i, r in enumerate(runs):
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(json.loads((tmp_path / f"{i}.json").read_text()))
    for got in outs:
        np.testing.assert_allclose(got["models/all"], got["models/local"], rtol=1e-5, atol=1e-7)
    assert outs[0] == outs[1]  # both processes hold the same results
    # Streamed: each process read its 4 of the 8 row groups in each of the 3 passes (the
    # scan and 2 epochs; the final metrics use the rows kept in memory); the statistics of
    # both shares are the table's.
    got = outs[0]
    assert got["rows_read"] == 6000 * 3
    np.testing.assert_allclose(
        got["stats"], np.concatenate([one.x_mean, one.x_std, one.y_std]), rtol=1e-13
    )
    # Text columns and missing values: each process passed over its half for the
    # preprocessing and again for the scan; both got one process's preprocessing (exact
    # medians: every value is in the samples) and statistics.
    assert got["mixed_rows_read"] == 6000 * 2
    assert outs[1]["mixed_prep"] == got["mixed_prep"]
    assert got["mixed_prep"] == alone_stream.preprocessor.to_dict()
    np.testing.assert_allclose(
        got["mixed_stats"], np.concatenate([alone.x_mean, alone.x_std]), rtol=1e-12
    )
    y = table[:1000, 3]
    r2 = 1 - np.mean((np.asarray(got["streamed"]) - y) ** 2) / np.var(y)
    assert r2 > 0.8, r2
    # The command: process 0 reports and writes, process 1 prints nothing of its own.
    assert "Saved the model" in runs[0].stdout
    # Gloo's own connection lines come from several threads and may interleave mid-line,
    # so process 1's output is checked for process 0's lines rather than parsed.
    own = [ln.strip() for ln in runs[0].stdout.splitlines() if ln.strip()]
    own = [ln for ln in own if "[Gloo]" not in ln and "peer ranks" not in ln]
    assert own and not any(ln in runs[1].stdout for ln in own), runs[1].stdout[-2000:]
    assert main(["--no-cache", "--default-xla", *fit, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    features = frame.iloc[:400][["a", "b", "c"]]
    np.testing.assert_allclose(
        jaxreg.load(tmp_path / "two").predict(features),
        jaxreg.load(tmp_path / "one").predict(features),
        rtol=1e-5,
        atol=1e-6,
    )
    doc = (tmp_path / "two" / "model.json").read_text()
    assert "4 cpu device(s) in 2 process(es), data-parallel" in doc


@pytest.mark.parametrize(
    "args, message",
    [
        (["--coordinator", "localhost"], "--coordinator must be HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", "2"], "--process-id must be an int from 0"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "from 0 to 1"),
        (["--num-processes", "2"], "go with --coordinator"),
        (["--distributed", "--coordinator", "h:1"], "--distributed reads the processes"),
    ],
)
def test_distributed_options_are_checked(tmp_path, capsys, args, message):
    from jaxreg.cli import main

    table = tmp_path / "t.csv"
    table.write_text("x,y\n1,2\n2,3\n3,5\n")
    code = main(
        ["--no-cache", "--default-xla", "fit", str(table), "--target", "y"]
        + ["--out", str(tmp_path / "m"), *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()
