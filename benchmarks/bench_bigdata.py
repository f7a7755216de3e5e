"""One epoch on a million rows: plain JAX, jaxreg (estimator and CLI), Keras, PyTorch and
scikit-learn side by side, in one run.

Workload: ``--rows`` (default 1,000,000) training rows x 8 features, ``x ~ N(0, 1)`` (or
``U(-2, 2)`` with ``--dist uniform``), ``y = sum(sin(x_i)) + 0.1 N(0, 1)``, seeded; a fixed
held-out set of 50,000 more rows from the same draw. MLP 8-64-64-1 tanh, Adam at lr 1e-3
(eps 1e-8 everywhere), minibatches of 1024 rows reshuffled every epoch, mean squared error.
Every formulation starts from the same data, the same standardization (training mean and
population std of X and y, float64, applied in float32) and the same initial weights
(drawn once with NumPy: Glorot-uniform weights, zero biases), except jaxreg's estimator and
CLI, which standardize themselves (the same statistics) and draw their own Glorot-uniform
weights (no public parameter takes initial weights).

Rows (``--only`` takes these names, comma separated):

- ``plain-host``: plain JAX + Optax; the permutation drawn with NumPy on the host each
  epoch, x and y gathered on the host into ``(steps, 1024, 8)`` and ``(steps, 1024, 1)``,
  put on the device and passed to a jitted ``lax.scan`` over the steps (state donated).
  The timed epoch includes the host-side permutation, gather and transfer.
- ``plain-injit``: the same step, with ``jax.random.permutation`` and the gather
  (``dynamic_slice`` of the permuted indices, ``x[idx]``) inside the jitted epoch; the data
  stays on the device between epochs.
- ``plain-gather``: the permutation drawn with NumPy on the host each epoch, as in
  ``plain-host``, but only the indices are put on the device: each step gathers its rows
  (``x[idx]``) from the table held on the device, inside the jitted scan.
- ``estimator``: ``jaxreg.MLPRegressor(hidden_layer_sizes=(64, 64), activation="tanh",
  optimizer="adam", learning_rate=1e-3, batch_size=1024, epochs=1, tol=None,
  random_state=0)`` with its defaults otherwise (standardize=True), ``fit`` on the raw
  table; samples/s from ``run_seconds_``, wall time of the whole ``fit`` beside it.
- ``cli``: ``jaxreg fit`` on the same training rows written as Parquet (``--hidden 64,64
  --batch-size 1024 --epochs 3 --patience 0 --val-fraction 0.05 --no-report --quiet``), as
  a subprocess with the CLI's own process settings (XLA options, compilation cache):
  samples/s from the training time it prints; the first run with an empty compilation
  cache, the others with the cache it left. Its val MSE is after 3 epochs (the saved model,
  loaded with ``jaxreg.load``, on the same held-out rows).
- ``keras``: Keras 3 on JAX (``KERAS_BACKEND=jax``), ``model.fit(x, y, batch_size=1024,
  epochs=1, shuffle=True, verbose=0)`` after ``set_weights``, ``jit_compile`` default.
- ``torch``: PyTorch eager (``torch.randperm``, index, ``Adam``), if installed.
- ``floor`` and ``floor-lanes`` (not run unless named in ``--only``): what no formulation
  of this step through XLA's float32 products can beat. The same network with the identity
  in place of ``tanh`` and plain SGD in place of Adam, on batches gathered once before the
  timing: so the step is its products (three forward, five backward: the first layer's
  input gradient is not needed), the bias adds and sums and a subtraction per weight.
  ``floor`` holds the batches as ``(1024, 8)`` (``x @ W``), ``floor-lanes`` as ``(8,
  1024)`` (``W.T @ x``: samples on the vector lanes). Its val MSE is that of a linear
  model and is not comparable.
- ``plain-gather-1t``, ``floor-1t`` and ``floor-lanes-1t`` (not run unless named):
  ``plain-gather``, ``floor`` and ``floor-lanes`` compiled with XLA's compile options for
  products on one thread (``ONE_THREAD``), which jaxreg's runner uses for thin minibatch
  loops on a CPU of at most two cores.
- ``sklearn``: scikit-learn's ``MLPRegressor(hidden_layer_sizes=(64, 64),
  activation="tanh", solver="adam", batch_size=1024, max_iter=1, learning_rate_init=1e-3,
  shuffle=True, alpha=0)`` with the same weights (``warm_start=True``, ``coefs_`` and
  ``intercepts_`` written before each fit), BLAS threads set by threadpoolctl.

Each row runs in its own fresh process (XLA's default options: ``XLA_FLAGS`` removed, except
for the CLI, which sets its own), so that its peak RSS is its own and no row inherits
another's thread pools or caches. In each: compile (or the first call) apart, a warm-up
epoch, then ``--repeats`` timed epochs (``block_until_ready`` on JAX results), each from
the initial weights with a fresh optimizer state; the median is reported. The float32
matmul peak is measured in this process before and after the rows (a jitted 2048 x 2048
product, median of 7); ``% peak`` uses the larger. scikit-learn and PyTorch get one row per
``--threads`` value (default: all cores, then 1).
Useful FLOPs: 6 x (multiply-adds of the three weight matrices) per sample (forward 2,
backward 4), so a step of 1024 rows is 28.7 MFLOP; XLA's cost analysis of one step is
printed beside it.

    python benchmarks/bench_bigdata.py                       # about 8 minutes on 2 busy cores
    python benchmarks/bench_bigdata.py --rows 100000 --repeats 1 --only plain-host,estimator
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

FORMULATIONS = (
    "plain-host",
    "plain-injit",
    "plain-gather",
    "estimator",
    "cli",
    "keras",
    "torch",
    "sklearn",
    "floor",
    "floor-lanes",
    "plain-gather-1t",
    "floor-1t",
    "floor-lanes-1t",
)
LABELS = {
    "plain-host": "plain JAX, host permutation",
    "plain-injit": "plain JAX, in-jit permutation",
    "plain-gather": "plain JAX, host permutation, in-jit gather",
    "estimator": "jaxreg MLPRegressor.fit",
    "cli": "jaxreg fit (CLI)",
    "keras": "Keras 3 (JAX backend)",
    "torch": "PyTorch eager",
    "sklearn": "scikit-learn MLPRegressor",
    "floor": "floor: the step's products alone, batch-major",
    "floor-lanes": "floor: the step's products alone, samples on the lanes",
    "plain-gather-1t": "plain JAX, host permutation, in-jit gather, products on one thread",
    "floor-1t": "floor, batch-major, products on one thread",
    "floor-lanes-1t": "floor, samples on the lanes, products on one thread",
}
# XLA compile options of the ``-1t`` rows: the matrix products on one thread (what
# jaxreg's runner compiles a thin minibatch loop with on a CPU of at most two cores).
ONE_THREAD = {"xla_cpu_multi_thread_eigen": False, "xla_cpu_experimental_ynn_fusion_type": ""}
FEATURES = 8
HIDDEN = (64, 64)
BATCH = 1024
LR = 1e-3
N_VAL = 50_000
CLI_EPOCHS = 3
CLI_VAL_FRACTION = 0.05
SIZES = (FEATURES, *HIDDEN, 1)
MATMUL_PARAMS = sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))  # 4672
FLOP_PER_SAMPLE = 6 * MATMUL_PARAMS  # forward 2, backward 4 FLOP per multiply-add
JSON_MARK = "BENCH_JSON "


# ---------------------------------------------------------------- data (shared by every row)


def make_data(rows: int, dist: str, seed: int) -> dict:
    """Training and held-out rows, standardization statistics and initial weights."""
    rng = np.random.default_rng(seed)
    n = rows + N_VAL
    if dist == "normal":
        x = rng.standard_normal((n, FEATURES), dtype=np.float32)
    else:
        x = rng.uniform(-2.0, 2.0, (n, FEATURES)).astype(np.float32)
    noise = rng.standard_normal(n)
    y = (np.sin(x.astype(np.float64)).sum(axis=1) + 0.1 * noise).astype(np.float32)
    d = {"x": x[:rows], "y": y[:rows], "xv": x[rows:], "yv": y[rows:]}
    d["x_mean"] = d["x"].mean(axis=0, dtype=np.float64)
    d["x_std"] = d["x"].std(axis=0, dtype=np.float64)
    d["y_mean"] = np.float64(d["y"].mean(dtype=np.float64))
    d["y_std"] = np.float64(d["y"].std(dtype=np.float64))
    wrng = np.random.default_rng(seed + 1)
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        limit = math.sqrt(6.0 / (a + b))
        d[f"W{i}"] = wrng.uniform(-limit, limit, (a, b)).astype(np.float32)
        d[f"b{i}"] = np.zeros(b, np.float32)
    return d


def standardized(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """The training rows standardized in float32: ``(rows, 8)`` and ``(rows, 1)``."""
    xs = ((d["x"] - d["x_mean"]) / d["x_std"]).astype(np.float32)
    ys = ((d["y"] - d["y_mean"]) / d["y_std"]).astype(np.float32)[:, None]
    return xs, ys


def initial_params(d: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W (fan_in, fan_out), b (fan_out,)), ...]``, float32 copies."""
    return [(d[f"W{i}"].copy(), d[f"b{i}"].copy()) for i in range(len(SIZES) - 1)]


def val_mse(d: dict, params) -> float:
    """MSE in y's units on the held-out rows of a network in the standardized space
    (``[(W (in, out), b), ...]``), evaluated in float64 with NumPy."""
    h = (d["xv"].astype(np.float64) - d["x_mean"]) / d["x_std"]
    *hidden, last = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in params]
    for w, b in hidden:
        h = np.tanh(h @ w + b.reshape(-1))
    z = (h @ last[0] + last[1].reshape(-1))[:, 0]
    pred = z * d["y_std"] + d["y_mean"]
    return float(np.mean((pred - d["yv"].astype(np.float64)) ** 2))


def _peak_rss_mib(pid="self") -> float | None:
    """The process's peak resident set size (``VmHWM``). Not ``getrusage``: a child started
    by ``vfork``/``posix_spawn`` inherits its parent's ``ru_maxrss`` across ``exec``."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            kib = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
        return kib / 1024
    except (OSError, StopIteration, ValueError):
        if pid != "self":
            return None
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_now_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


# ---------------------------------------------------------------- rows (each in a child)


def _jax_step():
    """The training step of both plain-JAX rows: ``(params, opt_state), (xb, yb)``."""
    import jax
    import jax.numpy as jnp
    import optax

    opt = optax.adam(LR)

    def forward(params, x):
        *hidden, (w, b) = params
        for wh, bh in hidden:
            x = jnp.tanh(x @ wh + bh)
        return x @ w + b

    def loss(params, xb, yb):
        return jnp.mean((forward(params, xb) - yb) ** 2)

    def step(state, batch):
        params, opt_state = state
        xb, yb = batch
        value, grads = jax.value_and_grad(loss)(params, xb, yb)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    def init_state(d):
        params = tuple((jnp.array(w), jnp.array(b)) for w, b in initial_params(d))
        return params, opt.init(params)

    return step, init_state


def _jitted_seconds(fn, *args, runs: int = 3) -> float:
    """Median seconds of a jitted ``fn(*args)`` after a warm-up call."""
    import jax

    exe = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(exe(*args))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(exe(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _timed_runs(run_once, repeats: int) -> tuple[float, list[float], list]:
    """The warm-up run's seconds, the timed runs' seconds and every run's output."""
    t0 = time.perf_counter()
    outs = [run_once(0)]
    first = time.perf_counter() - t0
    times = []
    for r in range(1, repeats + 1):
        t0 = time.perf_counter()
        outs.append(run_once(r))
        times.append(time.perf_counter() - t0)
    return first, times, outs


def _gathering_epoch(step, steps: int):
    """An epoch of ``steps`` minibatches, each gathered inside the jit from ``perm``."""
    import jax.numpy as jnp
    from jax import lax

    def epoch(state, perm, x, y):
        def body(state, i):
            idx = lax.dynamic_slice(perm, (i * BATCH,), (BATCH,))
            return step(state, (x[idx], y[idx]))

        state, losses = lax.scan(body, state, jnp.arange(steps))
        return state, losses.mean()

    return epoch


def _row(steps: int, compile_s, first: float, times: list, val: list, note: str) -> dict:
    return {
        "steps": steps,
        "samples": steps * BATCH,
        "compile_s": compile_s,
        "first_s": first,
        "times": times,
        "val": val,
        "note": note,
    }


def row_plain_host(d: dict, repeats: int, seed: int, threads: int) -> dict:
    import jax
    from jax import lax

    step, init_state = _jax_step()
    xs, ys = standardized(d)
    n = xs.shape[0]
    steps = n // BATCH
    rng = np.random.default_rng(seed + 2)

    def epoch(state, xb, yb):
        state, losses = lax.scan(step, state, (xb, yb))
        return state, losses.mean()

    shapes = (
        jax.ShapeDtypeStruct((steps, BATCH, FEATURES), np.float32),
        jax.ShapeDtypeStruct((steps, BATCH, 1), np.float32),
    )
    t0 = time.perf_counter()
    exe = jax.jit(epoch, donate_argnums=0).lower(init_state(d), *shapes).compile()
    compile_s = time.perf_counter() - t0
    host = []

    def run_once(_):
        state = jax.block_until_ready(init_state(d))  # fresh weights and Adam state
        t0 = time.perf_counter()
        perm = rng.permutation(n)[: steps * BATCH]
        xb = jax.device_put(xs[perm].reshape(steps, BATCH, FEATURES))
        yb = jax.device_put(ys[perm].reshape(steps, BATCH, 1))
        host.append(time.perf_counter() - t0)
        state, _ = exe(state, xb, yb)
        return jax.device_get(jax.block_until_ready(state[0]))

    first, times, outs = _timed_runs(run_once, repeats)
    val = [val_mse(d, p) for p in outs[1:]]
    host_ms = 1e3 * statistics.median(host[1:])
    note = f"host permutation + gather + transfer {host_ms:.0f} ms of the epoch (median)"
    return _row(steps, compile_s, first, times, val, note)


def row_plain_injit(d: dict, repeats: int, seed: int, threads: int) -> dict:
    import jax

    step, init_state = _jax_step()
    xs, ys = standardized(d)
    n = xs.shape[0]
    steps = n // BATCH
    x, y = jax.device_put(xs), jax.device_put(ys)
    gathering = _gathering_epoch(step, steps)

    def epoch(state, key, x, y):
        return gathering(state, jax.random.permutation(key, x.shape[0]), x, y)

    base = jax.random.PRNGKey(seed + 2)
    t0 = time.perf_counter()
    exe = jax.jit(epoch, donate_argnums=0).lower(init_state(d), base, x, y).compile()
    compile_s = time.perf_counter() - t0

    def run_once(r):
        state = jax.block_until_ready(init_state(d))
        key = jax.random.fold_in(base, r)
        state, _ = exe(state, key, x, y)
        return jax.device_get(jax.block_until_ready(state[0]))

    first, times, outs = _timed_runs(run_once, repeats)
    perm_s = _jitted_seconds(lambda k: jax.random.permutation(k, n), base)
    val = [val_mse(d, p) for p in outs[1:]]
    note = f"`jax.random.permutation` of {n:,} rows alone: {1e3 * perm_s:.0f} ms"
    return _row(steps, compile_s, first, times, val, note)


def row_plain_gather(
    d: dict, repeats: int, seed: int, threads: int, options: dict | None = None
) -> dict:
    import jax

    step, init_state = _jax_step()
    xs, ys = standardized(d)
    n = xs.shape[0]
    steps = n // BATCH
    x, y = jax.device_put(xs), jax.device_put(ys)
    rng = np.random.default_rng(seed + 2)
    perm_shape = jax.ShapeDtypeStruct((steps * BATCH,), np.int32)
    t0 = time.perf_counter()
    exe = (
        jax.jit(_gathering_epoch(step, steps), donate_argnums=0)
        .lower(init_state(d), perm_shape, x, y)
        .compile(compiler_options=options)
    )
    compile_s = time.perf_counter() - t0
    host = []

    def run_once(_):
        state = jax.block_until_ready(init_state(d))
        t0 = time.perf_counter()
        perm = jax.device_put(rng.permutation(n)[: steps * BATCH].astype(np.int32))
        host.append(time.perf_counter() - t0)
        state, _ = exe(state, perm, x, y)
        return jax.device_get(jax.block_until_ready(state[0]))

    first, times, outs = _timed_runs(run_once, repeats)
    val = [val_mse(d, p) for p in outs[1:]]
    note = f"host permutation + transfer {1e3 * statistics.median(host[1:]):.0f} ms of the epoch"
    return _row(steps, compile_s, first, times, val, note + " (median)")


def row_floor(
    d: dict,
    repeats: int,
    seed: int,
    threads: int,
    lanes: bool = False,
    options: dict | None = None,
) -> dict:
    import jax
    import jax.numpy as jnp
    from jax import lax

    xs, ys = standardized(d)
    n = xs.shape[0]
    steps = n // BATCH
    perm = np.random.default_rng(seed + 2).permutation(n)[: steps * BATCH]
    xb = xs[perm].reshape(steps, BATCH, FEATURES)
    yb = ys[perm].reshape(steps, BATCH, 1)
    if lanes:  # (steps, features, batch): every product has the 1024 samples on its lanes
        xb, yb = (
            np.ascontiguousarray(xb.transpose(0, 2, 1)),
            np.ascontiguousarray(yb.transpose(0, 2, 1)),
        )
    xb, yb = jax.device_put(xb), jax.device_put(yb)

    def forward(params, x):
        *hidden, (w, b) = params
        for wh, bh in hidden:  # no activation: the products and the bias adds only
            x = wh.T @ x + bh[:, None] if lanes else x @ wh + bh
        return w.T @ x + b[:, None] if lanes else x @ w + b

    def step(params, batch):
        xb, yb = batch
        value, grads = jax.value_and_grad(lambda p: jnp.mean((forward(p, xb) - yb) ** 2))(params)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), value

    def epoch(params, xb, yb):
        params, losses = lax.scan(step, params, (xb, yb))
        return params, losses.mean()

    def init():
        return tuple((jnp.array(w), jnp.array(b)) for w, b in initial_params(d))

    t0 = time.perf_counter()
    exe = jax.jit(epoch, donate_argnums=0).lower(init(), xb, yb).compile(compiler_options=options)
    compile_s = time.perf_counter() - t0

    def run_once(_):
        params = jax.block_until_ready(init())
        params, _ = exe(params, xb, yb)
        return jax.device_get(jax.block_until_ready(params))

    first, times, outs = _timed_runs(run_once, repeats)
    val = [val_mse(d, p) for p in outs[1:]]
    note = "a linear network: its val MSE is not comparable; batches gathered before timing"
    return _row(steps, compile_s, first, times, val, note)


def row_estimator(d: dict, repeats: int, seed: int, threads: int) -> dict:
    import jaxreg

    x, y = d["x"], d["y"]
    n = x.shape[0]
    est = jaxreg.MLPRegressor(
        hidden_layer_sizes=HIDDEN,
        activation="tanh",
        optimizer="adam",
        learning_rate=LR,
        batch_size=BATCH,
        epochs=1,
        tol=None,
        random_state=0,
    )
    walls, runs = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est.fit(x, y)
        first = time.perf_counter() - t0
        compile_s = est.compile_seconds_
        first_run = est.run_seconds_
        vals = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            est.fit(x, y)
            walls.append(time.perf_counter() - t0)
            runs.append(est.run_seconds_)
            pred = est.predict(d["xv"])
            vals.append(float(np.mean((pred - d["yv"].astype(np.float64)) ** 2)))
    import jax

    from jaxreg.data import bucket_rows

    padded = bucket_rows(n)
    # What its shuffle costs (engine._shuffled over the padded rows, the real ones first:
    # a sort of random keys up to SORT_SHUFFLE_ROWS, a Feistel permutation beyond), apart.
    from jaxreg.engine import SORT_SHUFFLE_ROWS, _shuffled

    sort_s = _jitted_seconds(lambda k: _shuffled(k, padded, n), jax.random.PRNGKey(0))
    how = "one sort of" if padded <= SORT_SHUFFLE_ROWS else "a Feistel permutation of"
    kinds = sorted({w.category.__name__ for w in caught})
    note = (
        f"{-(-n // BATCH)} steps (last one {n - (n // BATCH) * BATCH or BATCH} rows) in a scan "
        f"of {-(-padded // BATCH)} over {padded:,} padded rows; its shuffle ({how} "
        f"{padded:,} rows) alone {1e3 * sort_s:.0f} ms; first fit's run {first_run:.2f} s"
    )
    if kinds:
        note += f"; warnings: {', '.join(kinds)}"
    return {
        "steps": -(-n // BATCH),
        "samples": n,
        "compile_s": compile_s,
        "first_s": first,
        "times": runs,
        "walls": walls,
        "val": vals,
        "note": note,
    }


def row_keras(d: dict, repeats: int, seed: int, threads: int) -> dict:
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(seed + 2)
    xs, ys = standardized(d)
    n = xs.shape[0]
    layers = [keras.Input((FEATURES,))]
    layers += [keras.layers.Dense(h, activation="tanh") for h in HIDDEN]
    layers += [keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LR, epsilon=1e-8), loss="mse")
    weights = [a for wb in initial_params(d) for a in wb]

    def run_once(_):
        model.set_weights(weights)
        for v in model.optimizer.variables:  # a fresh Adam state (the rate kept)
            if not v.path.endswith("learning_rate"):
                v.assign(np.zeros(v.shape, v.dtype))
        model.fit(xs, ys, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
        w = model.get_weights()
        return list(zip(w[0::2], w[1::2], strict=True))

    first, times, outs = _timed_runs(run_once, repeats)
    return {
        "steps": -(-n // BATCH),
        "samples": n,
        "compile_s": None,
        "first_s": first,
        "times": times,
        "val": [val_mse(d, p) for p in outs[1:]],
        "note": f"keras {keras.__version__}, backend {keras.backend.backend()}; last batch "
        f"{n - (n // BATCH) * BATCH or BATCH} rows; first fit (tracing and compiling) "
        f"{first:.2f} s",
    }


def row_torch(d: dict, repeats: int, seed: int, threads: int) -> dict:
    try:
        import torch
    except ImportError:
        return {"skipped": "not installed"}
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed + 2)
    xs, ys = standardized(d)
    n = xs.shape[0]
    steps = n // BATCH
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    linears = [nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:], strict=True)]
    model = nn.Sequential(linears[0], nn.Tanh(), linears[1], nn.Tanh(), linears[2])
    gen = torch.Generator().manual_seed(seed + 2)

    def run_once(_):
        with torch.no_grad():
            for lin, (w, b) in zip(linears, initial_params(d), strict=True):
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(torch.from_numpy(b))
        opt = torch.optim.Adam(model.parameters(), lr=LR, eps=1e-8)
        perm = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
            loss.backward()
            opt.step()
        return [
            (lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy())
            for lin in linears
        ]

    first, times, outs = _timed_runs(run_once, repeats)
    return {
        "steps": steps,
        "samples": steps * BATCH,
        "compile_s": None,
        "first_s": first,
        "times": times,
        "val": [val_mse(d, p) for p in outs[1:]],
        "note": f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}",
    }


def row_sklearn(d: dict, repeats: int, seed: int, threads: int) -> dict:
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    xs, ys = standardized(d)
    n = xs.shape[0]
    y1 = ys[:, 0]
    sk = MLPRegressor(
        hidden_layer_sizes=HIDDEN,
        activation="tanh",
        solver="adam",
        batch_size=BATCH,
        max_iter=1,
        learning_rate_init=LR,
        shuffle=True,
        alpha=0.0,
        epsilon=1e-8,
        warm_start=True,
        random_state=0,
    )
    n_warned = 0

    def run_once(_):
        nonlocal n_warned
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if not hasattr(sk, "coefs_"):  # builds scikit-learn's fitted attributes
                sk.fit(xs[:BATCH], y1[:BATCH])
            start = initial_params(d)
            sk.coefs_ = [w for w, _ in start]
            sk.intercepts_ = [b for _, b in start]
            sk.fit(xs, y1)  # warm_start: from these weights, a fresh Adam state
        n_warned += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        return list(zip(sk.coefs_, sk.intercepts_, strict=True))

    with threadpool_limits(limits=threads):
        first, times, outs = _timed_runs(run_once, repeats)
    return {
        "steps": -(-n // BATCH),
        "samples": n,
        "compile_s": None,
        "first_s": first,
        "times": times,
        "val": [val_mse(d, p) for p in outs[1:]],
        "note": f"scikit-learn {sklearn.__version__}, BLAS threads {threads}, weights "
        f"{outs[-1][0][0].dtype}; last batch {n - (n // BATCH) * BATCH or BATCH} rows; "
        f"ConvergenceWarning (max_iter=1) suppressed {n_warned} times",
    }


ROWS = {
    "plain-host": row_plain_host,
    "plain-injit": row_plain_injit,
    "estimator": row_estimator,
    "keras": row_keras,
    "torch": row_torch,
    "sklearn": row_sklearn,
    "plain-gather": row_plain_gather,
    "floor": row_floor,
    "floor-lanes": lambda d, repeats, seed, threads: row_floor(d, repeats, seed, threads, True),
    "plain-gather-1t": lambda d, repeats, seed, threads: row_plain_gather(
        d, repeats, seed, threads, ONE_THREAD
    ),
    "floor-1t": lambda d, repeats, seed, threads: row_floor(
        d, repeats, seed, threads, False, ONE_THREAD
    ),
    "floor-lanes-1t": lambda d, repeats, seed, threads: row_floor(
        d, repeats, seed, threads, True, ONE_THREAD
    ),
}


def _child(args) -> int:
    import traceback

    loaded = np.load(os.path.join(args.scratch, "data.npz"))
    d = {k: loaded[k] for k in loaded.files}
    threads = int(args.threads) if args.threads else (os.cpu_count() or 1)
    rss_data = _rss_now_mib()
    try:
        out = ROWS[args.child](d, args.repeats, args.seed, threads)
    except Exception as exc:
        traceback.print_exc()
        text = str(exc).strip().splitlines()
        out = {"error": f"{type(exc).__name__}: {text[0] if text else ''}"}
    out["peak_rss_mib"] = _peak_rss_mib()
    out["rss_data_mib"] = rss_data
    print(JSON_MARK + json.dumps(out), flush=True)
    return 0


# ---------------------------------------------------------------- the parent


def _run(cmd, env, timeout: float) -> dict:
    """Run ``cmd``: stdout lines with their arrival time (seconds since the start), stderr,
    exit status, wall time and the child's peak RSS (``VmHWM``, read every 20 ms while it
    runs)."""
    t0 = time.perf_counter()
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            cmd,
            stdin=devnull,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    hwm = [0.0]
    done = threading.Event()

    def watch():
        while not done.wait(0.02):
            got = _peak_rss_mib(proc.pid)
            if got is not None:
                hwm[0] = max(hwm[0], got)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    killed = threading.Event()

    def kill():
        killed.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    _, status, _ = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    timer.cancel()
    reader.join()
    watcher.join()
    return {
        "lines": lines,
        "stderr": "".join(err),
        "rc": proc.returncode,
        "wall": wall,
        "peak_rss_mib": hwm[0],
        "timed_out": killed.is_set(),
    }


def _child_env(**extra) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _last_error(res: dict) -> str:
    tail = [ln for ln in res["stderr"].strip().splitlines() if ln.strip()]
    why = tail[-1].strip() if tail else f"exit status {res['rc']}"
    if res["timed_out"]:
        why = "timed out"
    return why[:200]


def run_row(name: str, args, threads: int | None = None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        name,
        "--scratch",
        args.scratch,
        "--repeats",
        str(args.repeats),
        "--seed",
        str(args.seed),
    ]
    label = LABELS[name]
    if threads is not None:
        cmd += ["--threads", str(threads)]
        label += f", {threads} thread{'s' if threads > 1 else ''}"
    res = _run(cmd, _child_env(KERAS_BACKEND="jax"), args.timeout)
    found = [ln[len(JSON_MARK) :] for _, ln in res["lines"] if ln.startswith(JSON_MARK)]
    if not found:
        return {"name": name, "label": label, "error": _last_error(res)}
    row = json.loads(found[-1])
    row["name"] = name
    row["label"] = label
    row["process_wall_s"] = res["wall"]
    return row


def _cli_phases(res: dict, training_rows: int) -> dict:
    """Times of the CLI's phases from the arrival of its stdout lines."""
    lines = res["lines"]

    def first(prefix):
        return next((t for t, ln in lines if ln.startswith(prefix)), None)

    t_read = first("Read ")
    t_timing = first("Compile ")
    t_saved = first("Saved the model")
    timing = next(ln for _, ln in lines if ln.startswith("Compile "))
    words = timing.replace(",", " ").split()
    compile_s, train_s = float(words[1]), float(words[4])
    after = [t for t, _ in lines if t_timing is not None and t > t_timing]
    t_metrics = min(after) if after else None
    return {
        "compile_s": compile_s,
        "train_s": train_s,
        "wall": res["wall"],
        # start-up, imports, reading the Parquet file, column checks, the split
        "start_read": t_read,
        # preprocessing and the estimator's host-side work (float64 copy, scalers,
        # padding, transfer) outside compile and training
        "fit_other": t_timing - t_read - compile_s - train_s,
        # predictions on every row, the Ridge and HistGradientBoosting baselines, metrics
        "metrics": (t_metrics - t_timing) if t_metrics else None,
        # the model document, the atomic save
        "save": (t_saved - t_metrics) if t_saved and t_metrics else None,
        # after the last line: interpreter shutdown
        "exit": res["wall"] - (t_saved or lines[-1][0]),
        "peak_rss_mib": res["peak_rss_mib"],
        "training_rows": training_rows,
    }


def run_cli(args, d: dict) -> list[dict]:
    import pandas as pd

    scratch = args.scratch
    parquet = os.path.join(scratch, "data.parquet")
    frame = pd.DataFrame(d["x"], columns=[f"x{i}" for i in range(FEATURES)])
    frame["y"] = d["y"]
    frame.to_parquet(parquet, index=False)
    del frame
    cache = os.path.join(scratch, "xla-cache")
    shutil.rmtree(cache, ignore_errors=True)
    out = os.path.join(scratch, "cli-model")
    runs = []
    for r in range(1 + max(1, args.repeats - 1)):
        shutil.rmtree(out, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "jaxreg",
            "--cache-dir",
            cache,
            "fit",
            parquet,
            "--target",
            "y",
            "--hidden",
            ",".join(map(str, HIDDEN)),
            "--batch-size",
            str(BATCH),
            "--epochs",
            str(CLI_EPOCHS),
            "--patience",
            "0",
            "--val-fraction",
            str(CLI_VAL_FRACTION),
            "--no-report",
            "--quiet",
            "--out",
            out,
        ]
        res = _run(cmd, _child_env(), args.timeout)
        if res["rc"] != 0:
            return [{"name": "cli", "error": _last_error(res)}]
        read = next(ln for _, ln in res["lines"] if ln.startswith("Read "))
        n_train = int(read.split("; ")[1].split(" training")[0])
        runs.append(_cli_phases(res, n_train))
        if r == 0:
            print(f"  CLI output (run 1): {' / '.join(ln for _, ln in res['lines'][:3])}")
    import jaxreg

    model = jaxreg.load(out)
    xv = pd.DataFrame(d["xv"], columns=[f"x{i}" for i in range(FEATURES)])
    vm = float(np.mean((np.asarray(model.predict(xv)) - d["yv"].astype(np.float64)) ** 2))
    n_train = runs[0]["training_rows"]
    rows = []
    for label, group in (("empty compilation cache", runs[:1]), ("cache warm", runs[1:])):
        med = {
            k: statistics.median(r[k] for r in group if r[k] is not None)
            for k in (
                "compile_s",
                "train_s",
                "wall",
                "start_read",
                "fit_other",
                "metrics",
                "save",
                "exit",
                "peak_rss_mib",
            )
        }
        outside = med["wall"] - med["compile_s"] - med["train_s"]
        rows.append(
            {
                "name": "cli",
                "label": f"{LABELS['cli']}, {label}",
                "steps": -(-n_train // BATCH),
                "samples": n_train * CLI_EPOCHS,
                "compile_s": med["compile_s"],
                "first_s": None,
                "times": [r["train_s"] for r in group],
                "walls": [r["wall"] for r in group],
                "val": [vm],
                "peak_rss_mib": med["peak_rss_mib"],
                "phases": med,
                "note": (
                    f"{CLI_EPOCHS} epochs on {n_train:,} rows (val MSE after {CLI_EPOCHS}); "
                    f"{len(group)} run(s); outside compile+training {outside:.1f} s: start-up, "
                    f"imports, Parquet read and split {med['start_read']:.1f} s, preprocessing "
                    f"and fit's host-side work {med['fit_other']:.1f} s, predictions + "
                    f"Ridge/HGB baselines + metrics {med['metrics'] or 0:.1f} s, model save "
                    f"{med['save'] or 0:.1f} s, exit {med['exit']:.1f} s"
                ),
            }
        )
    return rows


def _versions() -> str:
    import importlib.metadata as md

    parts = [f"Python {platform.python_version()}"]
    for dist in ("jax", "jaxlib", "optax", "keras", "torch", "scikit-learn", "numpy", "pyarrow"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} not installed")
    return ", ".join(parts)


def _jaxreg_version() -> str:
    import jaxreg

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "-C", here, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "?"
    return f"jaxreg {jaxreg.__version__} (git {rev})"


def _cpu() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB"


def step_cost_flops() -> float | None:
    """FLOPs of one plain-JAX step (batch 1024) by XLA's cost analysis."""
    import jax

    step, init_state = _jax_step()
    d = {
        f"W{i}": np.zeros((a, b), np.float32)
        for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True))
    }
    d.update({f"b{i}": np.zeros(b, np.float32) for i, b in enumerate(SIZES[1:])})
    batch = (np.zeros((BATCH, FEATURES), np.float32), np.zeros((BATCH, 1), np.float32))
    try:
        cost = jax.jit(step).lower(init_state(d), batch).compile().cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0]
        return float(cost["flops"])
    except Exception:
        return None


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def table(rows: list[dict], peak: float) -> str:
    head = (
        "formulation",
        "steps/epoch",
        "compile s",
        "first call s",
        "epoch s (med)",
        "samples/s",
        "% peak",
        "wall s (med)",
        "peak RSS MiB",
        "val MSE",
        "notes",
    )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        label = r.get("label") or LABELS[r["name"]]
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            cells = [label] + ["-"] * 9 + [("failed: " if "error" in r else "") + why]
            out.append("| " + " | ".join(cells) + " |")
            continue
        t = statistics.median(r["times"])
        if r["name"] == "cli":
            per_epoch = t / CLI_EPOCHS
            sps = r["samples"] / t
        else:
            per_epoch = t
            sps = r["samples"] / t
        wall = statistics.median(r["walls"]) if r.get("walls") else t
        val = statistics.median(r["val"])
        spread = max(r["val"]) - min(r["val"])
        val_s = f"{val:.5f}" + (f" (±{spread / 2:.5f})" if spread > 0 else "")
        cells = [
            label,
            str(r["steps"]),
            _fmt(r["compile_s"], ".2f"),
            _fmt(r["first_s"], ".2f"),
            f"{per_epoch:.3f}",
            f"{sps:,.0f}",
            f"{100 * FLOP_PER_SAMPLE * sps / peak:.1f}",
            f"{wall:.2f}",
            f"{r['peak_rss_mib']:.0f}",
            val_s,
            r.get("note", ""),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="training rows")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs after the warm-up")
    p.add_argument(
        "--only", default=None, help=f"comma-separated rows among {', '.join(FORMULATIONS)}"
    )
    p.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bigdata.md"),
        help="markdown file to write",
    )
    p.add_argument(
        "--threads",
        default=None,
        metavar="N[,N]",
        help="BLAS/intra-op threads of scikit-learn and PyTorch, one row per value "
        "(default: all cores, then 1)",
    )
    p.add_argument(
        "--dist", choices=("normal", "uniform"), default="normal", help="x ~ N(0, 1) or U(-2, 2)"
    )
    p.add_argument("--seed", type=int, default=0, help="data and weight seed")
    p.add_argument("--scratch", default="/tmp/big", help="folder for the data files")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    p.add_argument("--child", choices=tuple(ROWS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.rows < BATCH:
        p.error(f"--rows must be >= {BATCH}")
    if args.child:
        return _child(args)
    cores = os.cpu_count() or 1
    try:
        thread_counts = (
            ([cores, 1] if cores > 1 else [1])
            if args.threads is None
            else [int(t) for t in args.threads.split(",") if t.strip()]
        )
    except ValueError:
        thread_counts = []
    if not thread_counts or min(thread_counts) < 1:
        p.error(f"--threads must be positive integers, comma separated. Got {args.threads!r}.")
    names = (
        tuple(n for n in FORMULATIONS if not n.startswith("floor") and not n.endswith("-1t"))
        if args.only is None
        else tuple(s.strip() for s in args.only.split(",") if s.strip())
    )
    bad = [n for n in names if n not in FORMULATIONS]
    if bad:
        p.error(f"--only: unknown {bad}; choose among {', '.join(FORMULATIONS)}")

    os.makedirs(args.scratch, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    terms = " + ".join(f"{a}*{b}" for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    load0 = os.getloadavg()
    d = make_data(args.rows, args.dist, args.seed)
    np.savez(os.path.join(args.scratch, "data.npz"), **d)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import jax
    from bench_lecture import measure_peak

    peak = measure_peak()
    xla_step = step_cost_flops()
    step_flop = FLOP_PER_SAMPLE * BATCH
    head = [
        f"# One epoch on {args.rows:,} rows: bench_bigdata.py",
        "",
        f"- run: {started:%Y-%m-%d %H:%M} UTC; command: "
        f"`{' '.join(['python benchmarks/bench_bigdata.py', command]).strip()}`",
        f"- machine: {_cpu()}; load average at start {load0[0]:.2f} / {load0[1]:.2f}",
        f"- {_versions()}; {_jaxreg_version()}; JAX platform {jax.devices()[0].platform}",
        f"- data: {args.rows:,} training + {N_VAL:,} held-out rows x {FEATURES} features, "
        f"x ~ {'N(0, 1)' if args.dist == 'normal' else 'U(-2, 2)'}, y = sum(sin(x_i)) + "
        f"0.1 N(0, 1), seed {args.seed}; the noise floor of the val MSE is 0.01, predicting "
        f"the mean gives {float(np.var(d['yv'].astype(np.float64))):.4f}",
        f"- model: {'-'.join(map(str, SIZES))} tanh, Adam lr {LR:g} (eps 1e-8), batch {BATCH}",
        f"- useful FLOPs: 6 x ({terms}) "
        f"= 6 x {MATMUL_PARAMS:,} = {FLOP_PER_SAMPLE:,} FLOP per sample, "
        f"{step_flop / 1e6:.2f} MFLOP per step of {BATCH} rows; XLA's cost analysis of one "
        f"plain-JAX step (tanh, loss and Adam included): "
        f"{_fmt(xla_step and xla_step / 1e6, '.2f', '?')} MFLOP",
        f"- float32 matmul peak (jitted 2048 x 2048 product, median of 7, this process): "
        f"{peak / 1e9:.1f} GFLOP/s before the rows, PEAK_END; `% peak` = useful FLOPs/s over "
        f"the larger",
        f"- each row in a fresh process, XLA's default options (XLA_FLAGS unset) except the "
        f"CLI's own; --repeats {args.repeats} timed epochs after a warm-up, each from the "
        f"initial weights with a fresh optimizer state; JAX (and Keras on it) use XLA's own "
        f"thread pool; scikit-learn and PyTorch rows for {', '.join(map(str, thread_counts))} "
        f"thread(s) (threadpoolctl, torch.set_num_threads)",
    ]
    print("\n".join(head).replace(", PEAK_END", "") + "\n", flush=True)
    rows = []
    for name in names:
        print(f"running {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            if name == "cli":
                got = run_cli(args, d)
            elif name in ("torch", "sklearn"):
                got = [run_row(name, args, t) for t in thread_counts]
            else:
                got = [run_row(name, args)]
        except Exception as exc:  # the run goes on; the row says why
            got = [{"name": name, "error": f"{type(exc).__name__}: {exc}"[:200]}]
        rows += got
        for r in got:
            status = r.get("error") or r.get("skipped") or "ok"
            print(f"  {r.get('label') or LABELS[name]}: {status}", flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    load1 = os.getloadavg()
    peak_end = measure_peak()
    head = [h.replace("PEAK_END", f"{peak_end / 1e9:.1f} after them") for h in head]
    peak = max(peak, peak_end)
    text = (
        "\n".join(head)
        + "\n\n"
        + table(rows, peak)
        + "\n\n"
        + (
            f"Load average at the end {load1[0]:.2f} / {load1[1]:.2f}. Steps per epoch: the plain "
            f"JAX and PyTorch rows drop the last partial batch ({args.rows % BATCH} rows); jaxreg, "
            f"Keras and scikit-learn train it as a smaller batch; samples/s counts the rows "
            f"trained. val MSE: median over the timed epochs (± half their range when they "
            f"differ: a different shuffle each epoch) on the same {N_VAL:,} held-out rows, in y's "
            f"units. Initial weights: every row starts from the same NumPy weights except "
            f"jaxreg's estimator and CLI, which draw their own Glorot-uniform weights (seed 0): "
            f"no public parameter takes initial weights, so their val MSE differs by the luck "
            f"of that draw. The CLI trains {CLI_EPOCHS} epochs on the {1 - CLI_VAL_FRACTION:.0%} "
            f"of the rows it does not hold out, with its own XLA options "
            f"(`jaxreg.runtime.FAST_CPU_XLA_FLAGS`) and its persistent compilation cache; its "
            f"phases are timed from the arrival of its output lines. Threads: more threads "
            f"than free cores (other work on the machine) slow the BLAS/OpenMP rows (and the "
            f"CLI's HistGradientBoosting baseline) by up to tens of times; compare the 1-thread "
            f"rows.\n"
        )
    )
    print("\n" + table(rows, peak))
    with open(args.out, "w") as fh:
        fh.write(text)
    with open(os.path.join(args.scratch, "rows.json"), "w") as fh:
        json.dump(
            {
                "peak_flops": peak,
                "peak_end_flops": peak_end,
                "xla_step_flops": xla_step,
                "rows": rows,
            },
            fh,
            indent=1,
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
