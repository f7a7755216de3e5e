"""jaxreg itself, through its public API: ``jaxreg.fit`` (one model, the given initial
weights), ``jaxreg.fit_many`` (an ensemble: one compiled call), ``jaxreg.MLPRegressor``
(the estimator, which draws its own weights) and the ``jaxreg lecture`` command.

Variants: ``jaxreg`` (fit / fit_many; the reference of every ratio), ``jaxreg-estimator``
(MLPRegressor: the 1M-row and the real-table workloads), ``jaxreg-cli`` (``jaxreg
lecture --no-keras``: the lecture only, its own timing and XLA options).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import as_numpy


def versions() -> str:
    import jax
    import optax

    import jaxreg

    return f"jaxreg {jaxreg.__version__}, jax {jax.__version__}, optax {optax.__version__}"


def _spec(sizes):
    from jaxreg import MLPSpec

    return MLPSpec(tuple(int(s) for s in sizes), activation="tanh")


def _layers(params):
    """``(W, b)`` NumPy pairs as jaxreg's ``Layer(W, b)`` with ``b`` of shape ``(1, out)``."""
    from jaxreg import Layer

    return tuple(Layer(np.asarray(w), np.asarray(b).reshape(1, -1)) for w, b in params)


class _Fit:
    """``train(params) -> params`` through ``jaxreg.fit``; remembers the runner's timings
    (``compile_seconds`` of the first call, ``run_seconds`` of the executable)."""

    def __init__(self, sizes, cfg, x, y, lr):
        from jaxreg import Dataset, Hparams

        self.spec, self.cfg = _spec(sizes), cfg
        self.data = Dataset(np.asarray(x, np.float32), np.asarray(y, np.float32))
        self.hp = Hparams(learning_rate=lr)
        self.compile_s = None
        self.run_s = []

    def __call__(self, params, run_index: int = 0):
        import jax

        from jaxreg import fit

        res, tm = fit(
            self.spec, self.cfg, self.data, self.hp, params=_layers(params), return_timings=True
        )
        jax.block_until_ready(res.params)
        if self.compile_s is None:
            self.compile_s = tm.compile_seconds
        self.run_s.append(tm.run_seconds)
        return as_numpy(res.params)

    def info(self) -> dict:
        run = np.median(self.run_s[1:] or self.run_s)
        return {
            "compile_s": self.compile_s,
            "note": f"runner's Timings.run_seconds {run:.3f} s (the executable alone)",
        }


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    from jaxreg import TrainConfig

    return _Fit(sizes, TrainConfig(epochs=epochs, optimizer=opt, record_every=0), x, y, lr)


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    if variant == "jaxreg-estimator":
        return _Estimator(lr, epochs, batch, sizes, seed, x, y)
    from jaxreg import TrainConfig

    cfg = TrainConfig(
        epochs=epochs, optimizer="adam", sampling="shuffle", batch_size=batch, record_every=0
    )
    return _Fit(sizes, cfg, x, y, lr)


class _Estimator:
    """``jaxreg.MLPRegressor`` on the already standardized rows (``standardize=False``): its
    own Glorot-uniform weights from ``random_state`` (no parameter takes initial weights)."""

    def __init__(self, lr, epochs, batch, sizes, seed, x, y):
        self.kw = dict(
            hidden_layer_sizes=tuple(sizes[1:-1]),
            activation="tanh",
            optimizer="adam",
            learning_rate=lr,
            epochs=epochs,
            batch_size=batch,
            tol=None,
            standardize=False,
            random_state=seed,
        )
        self.x, self.y = x, (y[:, 0] if y.shape[1] == 1 else y)
        self.compile_s = None
        self.run_s = []

    def __call__(self, params, run_index: int = 0):
        import warnings

        from jaxreg import MLPRegressor

        est = MLPRegressor(**self.kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the epoch limit, by design
            est.fit(self.x, self.y)
        if self.compile_s is None:
            self.compile_s = est.compile_seconds_
        self.run_s.append(est.run_seconds_)
        return as_numpy([(layer.W, layer.b) for layer in est.params_])

    def info(self) -> dict:
        run = np.median(self.run_s[1:] or self.run_s)
        return {
            "compile_s": self.compile_s,
            "note": f"own initial weights (random_state); run_seconds_ {run:.3f} s",
        }


def many(variant: str, lr: float, epochs: int, x, y, sizes, m: int):
    """``fit_many`` over seeds ``0..m-1``: jaxreg's ``init`` from those seeds is exactly the
    stacked initial weights the peers get, so the argument ``stacked`` is not passed in."""
    from jaxreg import Dataset, Hparams, TrainConfig, fit_many

    spec = _spec(sizes)
    cfg = TrainConfig(epochs=epochs, optimizer="gd", record_every=0)
    data = Dataset(np.asarray(x, np.float32), np.asarray(y, np.float32))
    state = {"compile_s": None, "run_s": []}

    def train(stacked):
        import jax

        res, tm = fit_many(
            spec, cfg, data, Hparams(learning_rate=lr), n_models=m, return_timings=True
        )
        jax.block_until_ready(res.params)
        if state["compile_s"] is None:
            state["compile_s"] = tm.compile_seconds
        state["run_s"].append(tm.run_seconds)
        return as_stacked(res.params)

    def info():
        from jaxreg.runner import placement_for

        return {
            "compile_s": state["compile_s"],
            "note": f"placement {placement_for(m)!r}; weights from seeds 0..{m - 1} "
            "(identical to the peers')",
        }

    return train, info


def as_stacked(layers):
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)[:, 0, :]) for w, b in layers]


def lecture_cli(repeats: int) -> list[dict]:
    """``jaxreg lecture --no-keras`` as a subprocess (the CLI's own XLA options): its
    summary table's compile and warm-run seconds (median of its 3 runs, recording the
    training and validation MSE every 10 epochs) and its MSEs."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "lecture")
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "jaxreg", "lecture", "--no-keras", "--out", out],
            check=True,
            capture_output=True,
            env=env,
        )
        wall = time.perf_counter() - t0
        with open(os.path.join(out, "summary.csv")) as fh:
            table = list(csv.DictReader(fh))
    names = {"Pure JAX (hand-coded GD)": "gd", "JAX + Optax ADAM": "adam"}
    for r in table:
        opt = names.get(r["method"])
        if opt is None:
            continue
        rows.append(
            {
                "case": opt,
                "compile_s": float(r["compile_s"]),
                "first_s": None,
                "times": [float(r["run_s"])],
                "train_mse": float(r["train_mse"]),
                "val_mse": float(r["val_mse"]),
                "note": f"the command's own table (median of its 3 warm runs, history "
                f"every 10 epochs, the CLI's XLA options); whole command {wall:.1f} s",
            }
        )
    return rows
