"""What every child process of the peer benchmark shares: the workloads' constants, the
inputs the parent writes once (data and initial weights), the timing rule and a NumPy
evaluation of any library's final weights.

Weights travel between processes and libraries in one format: a list of ``(W, b)`` NumPy
float32 pairs, ``W`` of shape ``(fan_in, fan_out)`` and ``b`` of shape ``(fan_out,)``
(the lecture's ``x @ W + b``); each library module converts to and from its own layout.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)

# The lecture (jaxreg/apps/lecture.py, benchmarks/bench_lecture.py): 1-10-10-10-1 tanh,
# He-normal weights from PRNGKey(1234) with biases one, 400 points, 4000 full-batch
# epochs, learning rate 1e-3 for gradient descent and for Adam.
LECTURE_SIZES = (1, 10, 10, 10, 1)
LECTURE_EPOCHS = 4000
LECTURE_LR = 1e-3
LECTURE_SEED = 1234
ADAM_EPS = 1e-8  # Optax's, PyTorch's and scikit-learn's default; Keras's is 1e-7

# Real tables: the narrow network of jaxreg.MLPRegressor's "auto" widths, trained for a fixed
# number of epochs by every library (no stopping rule, so that every row is the same amount
# of training).
REAL_HIDDEN = (32, 32)
REAL_EPOCHS = 200
REAL_BATCH = 200  # scikit-learn's batch_size="auto" (min(200, n)), jaxreg's too
REAL_LR = 1e-3

JSON_MARK = "PEERS_JSON "


# ---------------------------------------------------------------- inputs written once


def inputs_path(scratch: str, name: str) -> str:
    return os.path.join(scratch, f"{name}.npz")


def load_inputs(scratch: str, name: str) -> dict:
    """The arrays the parent wrote for a workload (``lecture``, ``bigdata``)."""
    with np.load(inputs_path(scratch, name)) as z:
        return {k: z[k] for k in z.files}


def lecture_params(d: dict, member: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The lecture's initial weights (``member=None``) or those of ensemble member
    ``member`` (jaxreg's ``init`` from seed ``member``, what ``fit_many`` draws)."""
    n = len(LECTURE_SIZES) - 1
    if member is None:
        return [(d[f"W{i}"].copy(), d[f"b{i}"].copy()) for i in range(n)]
    return [(d[f"eW{i}"][member].copy(), d[f"eb{i}"][member].copy()) for i in range(n)]


def glorot_params(sizes, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform weights and zero biases drawn with NumPy (the real tables)."""
    rng = np.random.default_rng(seed)
    out = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        limit = np.sqrt(6.0 / (a + b))
        out.append((rng.uniform(-limit, limit, (a, b)).astype(np.float32), np.zeros(b, np.float32)))
    return out


def stack(params_list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Several models' weights with a leading model axis."""
    return [
        (np.stack([p[i][0] for p in params_list]), np.stack([p[i][1] for p in params_list]))
        for i in range(len(params_list[0]))
    ]


# ---------------------------------------------------------------- evaluation


def predict(params, x) -> np.ndarray:
    """The tanh MLP's output for ``x`` in float64 (NumPy), from ``(W, b)`` pairs."""
    h = np.asarray(x, np.float64)
    *hidden, last = params
    for w, b in hidden:
        h = np.tanh(h @ np.asarray(w, np.float64) + np.asarray(b, np.float64).reshape(-1))
    return h @ np.asarray(last[0], np.float64) + np.asarray(last[1], np.float64).reshape(-1)


def mse(params, x, y) -> float:
    return float(np.mean((predict(params, x) - np.asarray(y, np.float64)) ** 2))


def as_numpy(params) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W, b)`` pairs of any array type as float32 NumPy, ``b`` flattened to 1-D."""
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1)) for w, b in params]


# ---------------------------------------------------------------- timing


def timed_runs(run, repeats: int, budget: float) -> dict:
    """Run ``run(i)`` once cold (compilation or first-call work included), then up to
    ``repeats`` warm times while the next run is expected to fit within ``budget`` seconds
    in all; at least one warm run unless the cold one already took more than half of it.

    Returns ``first_s`` (the cold run), ``times`` (the warm runs, seconds) and ``out`` (the
    last run's result).
    """
    t0 = time.perf_counter()
    out = run(0)
    first = time.perf_counter() - t0
    spent, times = first, []
    while len(times) < repeats:
        expected = statistics.median(times) if times else first
        if times and spent + expected > budget:
            break
        if not times and first > budget / 2:
            break
        t0 = time.perf_counter()
        out = run(len(times) + 1)
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return {"first_s": first, "times": times, "out": out}


def loop_members(train_one, members, budget: float) -> dict:
    """Train ensemble members one after the other (``train_one(i)``) until all are done or
    ``budget`` seconds have passed: ``done`` members in ``seconds``, their results."""
    t0 = time.perf_counter()
    outs = []
    for i in members:
        outs.append(train_one(i))
        if time.perf_counter() - t0 > budget and len(outs) < len(members):
            break
    return {"done": len(outs), "seconds": time.perf_counter() - t0, "outs": outs}


# ---------------------------------------------------------------- child protocol


def emit(payload) -> None:
    """The child's one result line (the parent reads the last line with the mark)."""
    print(JSON_MARK + json.dumps(payload, default=_jsonable), flush=True)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def add_benchmarks_to_path() -> None:
    """Make ``benchmarks/`` importable (``bench_bigdata``, ``bench_realdata``)."""
    if BENCHMARKS not in sys.path:
        sys.path.insert(0, BENCHMARKS)


# ---------------------------------------------------------------- minibatch orders


def epoch_orders(seed: int, run_index: int, n: int, epochs: int) -> np.ndarray:
    """``(epochs, n)`` row orders, one NumPy permutation per epoch: the libraries whose
    loop this benchmark writes (Flax, Equinox, PyTorch) share them; jaxreg, Keras,
    scikit-learn and skorch shuffle with their own generators."""
    rng = np.random.default_rng([seed, run_index])
    return np.stack([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)


def batches(order: np.ndarray, batch: int):
    """The index arrays of one epoch's minibatches (the last one partial)."""
    return [order[i : i + batch] for i in range(0, len(order), batch)]


# ---------------------------------------------------------------- the peers

WORKLOADS = ("lecture", "ensemble", "bigdata", "realdata")
ALL = WORKLOADS
# variant: (module, label, workloads). jaxreg's ``jaxreg`` row is every ratio's reference.
VARIANTS = {
    "jaxreg": ("lib_jaxreg", "jaxreg (fit / fit_many)", ALL),
    "jaxreg-estimator": ("lib_jaxreg", "jaxreg MLPRegressor", ("bigdata", "realdata")),
    "jaxreg-cli": ("lib_jaxreg", "`jaxreg lecture` (its own table)", ("lecture",)),
    "keras-jit": ("lib_keras", "Keras 3 (JAX), jit_compile=True", ALL),
    "keras-nojit": ("lib_keras", "Keras 3 (JAX), jit_compile=False", ALL),
    "torch-eager": ("lib_torch", "PyTorch eager", ALL),
    "torch-compile": ("lib_torch", "PyTorch, torch.compile(model)", ALL),
    "flax-step": ("lib_flax", "Flax NNX, step under nnx.jit", ALL),
    "flax-loop": ("lib_flax", "Flax NNX, whole loop in one jit", ALL),
    "eqx-step": ("lib_equinox", "Equinox, step under eqx.filter_jit", ALL),
    "eqx-loop": ("lib_equinox", "Equinox, whole loop in one jit", ALL),
    "sklearn": ("lib_sklearn", "scikit-learn MLPRegressor", ALL),
    "skorch": ("lib_torch", "skorch NeuralNetRegressor", ALL),
}
# The package whose absence makes a variant's row "not installed".
PACKAGES = {
    "lib_jaxreg": "jaxreg",
    "lib_keras": "keras",
    "lib_torch": "torch",
    "lib_flax": "flax",
    "lib_equinox": "equinox",
    "lib_sklearn": "sklearn",
}
