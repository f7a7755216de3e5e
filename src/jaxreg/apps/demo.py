"""``jaxreg demo``: the two blog systems, reproduced on the engine.

``demo polynomial``: "Training a Neural Network with Jax" -- a 1-128-1 tanh MLP on
standardized cubic-polynomial data, Kaiming init with the tanh gain, full-batch gradient
descent; the blog's ten logged losses, the jit lesson measured three ways, the jaxpr of the
forward pass, the FLOPs of a step, and the blog's plots.

``demo linear``: "Experimenting with JAX" -- a linear model fitted by minibatch SGD with
bootstrap batches on the RMSE (``jaxreg.linear.LinearSGDRegressor``); coefficients,
intercept, R², the loss curve and predicted-versus-true plots.

The workflows are functions returning numbers (``polynomial_run``, ``jit_lesson``,
``step_flops``, ``forward_jaxpr``, ``linear_run``); ``run`` only prints and plots.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time
from typing import Any, NamedTuple

from jaxreg.apps.options import add_command

# The blog's log lines (epochs 0, 100, ..., 900), to compare against.
BLOG_LOSSES = (2.650, 0.100, 0.079, 0.070, 0.062, 0.057, 0.052, 0.047, 0.044, 0.040)
BLOG_SEED = 21
BLOG_COEFFICIENTS = (1.0, -2.0, 1.0, -2.0)


def add_parser(sub) -> None:
    p = add_command(sub, "demo", _run_no_subcommand)
    dsub = p.add_subparsers(dest="demo", metavar="DEMO")
    add_command(dsub, "demo-polynomial", run_polynomial)
    add_command(dsub, "demo-linear", run_linear)


def _run_no_subcommand(args: argparse.Namespace) -> int:
    from jaxreg.errors import UsageError

    raise UsageError("demo needs a sub-command: 'polynomial' or 'linear'. Got none.")


def _check_positive(option: str, value) -> None:
    from jaxreg.errors import UsageError

    if value is not None and value < 1:
        raise UsageError(f"{option} must be a positive integer. Got {value}.")


# ======================================================================= polynomial


class PolynomialRun(NamedTuple):
    """What ``polynomial_run`` returns (arrays are NumPy, in the original units unless
    named ``*_norm``)."""

    partitionable: bool  # jax_threefry_partitionable used for the data and the init
    x: Any  # (n, 1)
    y: Any  # (n, 1)
    x_norm: Any  # (n, 1) standardized (population std)
    y_norm: Any
    x_scaler: Any  # jaxreg.data.Standardizer
    y_scaler: Any
    spec: Any  # MLPSpec
    cfg: Any  # TrainConfig
    params0: Any  # untrained params
    result: Any  # TrainResult
    timings: Any  # jaxreg.runner.Timings
    losses: Any  # (epochs,) train MSE before each epoch's update
    logged: list  # [(epoch, loss)] every log_every epochs
    untrained_pred: Any  # (n, 1) original scale
    trained_pred: Any


def polynomial_setup(partitionable: bool = False, n: int = 1000):
    """The blog's data, standardized, and its initial weights.

    All random numbers are drawn with ``jax_threefry_partitionable`` set to
    ``partitionable`` (the blog predates JAX 0.5, whose default became True); the
    process's setting is restored afterwards.

    Returns:
      ``(x, y, x_norm, y_norm, x_scaler, y_scaler, spec, params0)``.
    """
    import jax
    import numpy as np

    from jaxreg.data import Standardizer, polynomial_data
    from jaxreg.model import MLPSpec, init

    spec = MLPSpec(
        (1, 128, 1),
        "tanh",
        init="kaiming_normal",
        gain=5 / 3,
        bias_init="zeros",
        key_scheme="split",
    )
    with jax.threefry_partitionable(partitionable):
        x, y, key = polynomial_data(jax.random.key(BLOG_SEED), coefficients=BLOG_COEFFICIENTS, n=n)
        params0 = init(key, spec)
    # Mean and population std reduced by jnp as the blog does (X.mean(), X.std()); the
    # elementwise (a - mean) / std is exactly rounded in NumPy as in JAX.
    x_scaler = Standardizer(np.asarray(x.mean(axis=0)), np.asarray(x.std(axis=0)))
    y_scaler = Standardizer(np.asarray(y.mean(axis=0)), np.asarray(y.std(axis=0)))
    x, y = np.asarray(x), np.asarray(y)
    params0 = jax.tree.map(np.asarray, params0)
    return (x, y, x_scaler.transform(x), y_scaler.transform(y), x_scaler, y_scaler, spec, params0)


def log_every(epochs: int) -> int:
    """The blog logs every 100 of 1000 epochs; shorter runs log ten times."""
    return 100 if epochs >= 1000 else max(1, epochs // 10)


def polynomial_run(
    epochs: int = 1000, partitionable: bool = False, learning_rate: float = 0.01
) -> PolynomialRun:
    """Train the blog's 1-128-1 tanh MLP by full-batch gradient descent on the engine.

    The untrained weights are made in ``polynomial_setup`` and passed to ``fit``; with
    full-batch training the compiled run draws no random numbers, so its result does not
    depend on the random-number mode.
    """
    import jax
    import numpy as np

    from jaxreg.data import Dataset
    from jaxreg.engine import TrainConfig
    from jaxreg.model import apply
    from jaxreg.optim import Hparams
    from jaxreg.runner import fit

    x, y, x_norm, y_norm, xs, ys, spec, params0 = polynomial_setup(partitionable)
    cfg = TrainConfig(epochs=epochs, optimizer="gd", record_every=1)
    data = Dataset(jax.numpy.asarray(x_norm), jax.numpy.asarray(y_norm))
    result, timings = fit(
        spec,
        cfg,
        data,
        Hparams(learning_rate=learning_rate),
        key=0,
        params=params0,
        return_timings=True,
    )
    losses = np.asarray(result.history.train_mse)[:, 0]
    every = log_every(epochs)
    logged = [(i, float(losses[i])) for i in range(0, epochs, every)]

    def predict(params):
        return ys.inverse(np.asarray(apply(params, x_norm, spec.activation)))

    return PolynomialRun(
        partitionable,
        x,
        y,
        x_norm,
        y_norm,
        xs,
        ys,
        spec,
        cfg,
        params0,
        result,
        timings,
        losses,
        logged,
        predict(params0),
        predict(result.params),
    )


def _blog_step(activation: str):
    """One epoch of the blog's ``train_loop`` from the library's pieces: ``value_and_grad``
    of ``jaxreg.loss.mse_loss`` and the ``gd`` update of ``jaxreg.optim``."""
    import jax

    from jaxreg.loss import mse_loss
    from jaxreg.optim import gd

    update = gd().step

    def loss_fn(params, x, y):
        return mse_loss(params, x, y, activation)

    def train_loop(params, x, y, lr):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        params, _ = update(params, grads, (), lr, None)
        return params, loss

    return train_loop


class JitTimings(NamedTuple):
    """Seconds per epoch of the three ways to run the same training, and compile times."""

    eager_epochs: int
    epochs: int
    repeats: int
    eager_per_epoch: float  # op by op, no jit
    step_per_epoch: float  # jitted step in a Python loop (the blog's version)
    engine_per_epoch: float  # whole loop compiled (jaxreg.train)
    step_compile: float
    engine_compile: float
    step_losses: Any  # (epochs,) losses of the jitted-step loop, to compare with the engine

    @property
    def speedup_step(self) -> float:
        return self.eager_per_epoch / self.step_per_epoch

    @property
    def speedup_engine(self) -> float:
        return self.eager_per_epoch / self.engine_per_epoch

    @property
    def speedup_engine_over_step(self) -> float:
        return self.step_per_epoch / self.engine_per_epoch


def jit_lesson(
    run: PolynomialRun, eager_epochs: int = 100, repeats: int = 3, learning_rate: float = 0.01
) -> JitTimings:
    """Time the same full-batch training three ways, after warm-up, compile time apart.

    Eager runs ``eager_epochs`` epochs op by op (each primitive dispatched on its own);
    the jitted step runs ``run.cfg.epochs`` epochs in a Python loop, as the blog does; the
    engine reruns ``run``'s compiled training. Jitted timings are medians of ``repeats``.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxreg.data import Dataset
    from jaxreg.optim import Hparams
    from jaxreg.runner import fit

    epochs = run.cfg.epochs
    x = jnp.asarray(run.x_norm)
    y = jnp.asarray(run.y_norm)
    lr = jnp.asarray(learning_rate, jnp.float32)
    params0 = jax.tree.map(jnp.asarray, run.params0)
    step = _blog_step(run.spec.activation)

    # Op by op: warm up once (each primitive compiles on first use), then time.
    jax.block_until_ready(step(params0, x, y, lr))
    params = params0
    t0 = time.perf_counter()
    for _ in range(eager_epochs):
        params, loss = step(params, x, y, lr)
    jax.block_until_ready(loss)
    eager = (time.perf_counter() - t0) / eager_epochs

    t0 = time.perf_counter()
    step_jit = jax.jit(step).lower(params0, x, y, lr).compile()
    step_compile = time.perf_counter() - t0
    jax.block_until_ready(step_jit(params0, x, y, lr))  # warm-up
    times = []
    for _ in range(repeats):
        params, losses = params0, []
        t0 = time.perf_counter()
        for _ in range(epochs):
            params, loss = step_jit(params, x, y, lr)
            losses.append(loss)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - t0)
    step_losses = np.asarray(jnp.stack(losses))

    data = Dataset(x, y)
    engine_times = []
    for _ in range(repeats):
        _, timings = fit(
            run.spec,
            run.cfg,
            data,
            Hparams(learning_rate=learning_rate),
            key=0,
            params=run.params0,
            return_timings=True,
        )
        engine_times.append(timings.run_seconds)
    return JitTimings(
        eager_epochs,
        epochs,
        repeats,
        eager,
        statistics.median(times) / epochs,
        statistics.median(engine_times) / epochs,
        step_compile,
        run.timings.compile_seconds,
        step_losses,
    )


def forward_jaxpr(run: PolynomialRun) -> str:
    """The jaxpr of ``jaxreg.model.apply`` on the untrained params and the raw ``X``
    (as the blog prints it)."""
    import jax

    from jaxreg.model import apply

    activation = run.spec.activation
    return str(jax.make_jaxpr(lambda p, x: apply(p, x, activation))(run.params0, run.x))


def step_flops(run: PolynomialRun, learning_rate: float = 0.01) -> float:
    """FLOPs of one full-batch training step (forward, backward, update) from XLA's cost
    analysis of the compiled step."""
    import jax
    import jax.numpy as jnp

    step = _blog_step(run.spec.activation)
    compiled = (
        jax.jit(step)
        .lower(
            run.params0,
            jnp.asarray(run.x_norm),
            jnp.asarray(run.y_norm),
            jnp.asarray(learning_rate, jnp.float32),
        )
        .compile()
    )
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def polynomial_plots(run: PolynomialRun, out: pathlib.Path) -> list[pathlib.Path]:
    """The blog's figures: training data, untrained and trained predictions with error bars,
    and the loss curve."""
    from jaxreg.plots import figure, save

    x, y = run.x[:, 0], run.y[:, 0]
    files = []
    fig, ax = figure()
    ax.scatter(x, y, s=6)
    ax.set(xlabel="X", ylabel="y", title="Training data")
    ax.grid(True)
    files.append(save(fig, out / "data.png"))
    for name, pred, color in (
        ("untrained", run.untrained_pred, "green"),
        ("trained", run.trained_pred, "orange"),
    ):
        fig, ax = figure(10, 6)
        ax.vlines(x, y, pred[:, 0], colors="red", linestyles="dashed", linewidth=0.5, label="error")
        ax.scatter(x, y, label="Ground Truth", color="blue", s=10)
        ax.scatter(x, pred[:, 0], label=f"{name.capitalize()} Predictions", color=color, s=10)
        ax.set(
            xlabel="X",
            ylabel="y",
            title=f"Ground Truth vs {name.capitalize()} Predictions with Error Bars",
        )
        ax.grid(True)
        ax.legend()
        files.append(save(fig, out / f"{name}.png"))
    fig, ax = figure()
    ax.plot(run.losses)
    ax.set(xlabel="Epoch", ylabel="Train MSE (standardized)", yscale="log", title="Training loss")
    ax.grid(True)
    files.append(save(fig, out / "loss.png"))
    return files


def run_polynomial(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    _check_positive("--epochs", args.epochs)
    _check_positive("--eager-epochs", args.eager_epochs)
    from jaxreg.files import check_output_folder

    check_output_folder(args.out, "--out")
    eager_epochs = args.eager_epochs or (10 if args.quick else 100)
    repeats = 1 if args.quick else 3
    flag = "jax_threefry_partitionable"  # a flag with a context manager: read as attribute
    before = bool(getattr(jax.config, flag))
    mode = bool(args.partitionable)
    print(
        f"Random numbers: jax_threefry_partitionable={mode} "
        + ("(JAX >= 0.5 default)" if mode else "(the blog's, before JAX 0.5)")
        + f"; the process setting stays {before}."
    )

    run = polynomial_run(args.epochs, partitionable=mode)
    print(f"X shape: {run.x.shape} - X dtype: {run.x.dtype}")
    print(f"y shape: {run.y.shape} - y dtype: {run.y.dtype}")
    for i, loss in run.logged:
        print(f"Epoch [{i}/{args.epochs}] | Train Loss: {loss:.3f}")
    res = run.timings
    print(
        f"Compile {res.compile_seconds:.2f} s, train {res.run_seconds:.3f} s (whole loop compiled)."
    )
    if args.epochs == 1000 and not mode:
        got = tuple(round(v, 3) for _, v in run.logged)
        same = got == BLOG_LOSSES
        print(
            "The ten losses "
            + ("match the blog's." if same else f"differ from the blog's {BLOG_LOSSES}.")
        )

    print("\nThe jit lesson (seconds per epoch, compile time apart):")
    t = jit_lesson(run, eager_epochs=eager_epochs, repeats=repeats)
    print(
        f"  op by op, no jit:           {t.eager_per_epoch * 1e3:9.3f} ms/epoch "
        f"(timed over {t.eager_epochs} epochs, scaled: {t.eager_per_epoch * t.epochs:.2f} s "
        f"for {t.epochs})"
    )
    print(
        f"  jitted step, Python loop:   {t.step_per_epoch * 1e3:9.3f} ms/epoch "
        f"({t.step_per_epoch * t.epochs:.3f} s for {t.epochs}; compile "
        f"{t.step_compile:.2f} s)  {t.speedup_step:6.1f}x faster than no jit"
    )
    print(
        f"  whole loop compiled:        {t.engine_per_epoch * 1e3:9.3f} ms/epoch "
        f"({t.engine_per_epoch * t.epochs:.3f} s for {t.epochs}; compile "
        f"{t.engine_compile:.2f} s)  {t.speedup_engine:6.1f}x faster than no jit, "
        f"{t.speedup_engine_over_step:.1f}x faster than the jitted step"
    )
    print(
        f"  (medians of {t.repeats} run(s) after warm-up; the engine also evaluates the "
        "train MSE every epoch)"
    )
    diff = float(np.max(np.abs(t.step_losses - run.losses)))
    print(f"  the jitted-step loop's losses agree with the engine's: max |diff| = {diff:.2e}")

    print("\nWhat JAX sees: the jaxpr of the forward pass (untrained params, raw X):")
    print(forward_jaxpr(run))
    flops = step_flops(run)
    print(
        f"FLOPs of one training step (XLA cost analysis): {flops:,.0f}"
        f" ({flops / 1e6:.2f} MFLOP; {flops / t.step_per_epoch / 1e9:.2f} GFLOP/s with the "
        "jitted step)"
    )

    out = pathlib.Path(args.out)
    files = polynomial_plots(run, out)
    print(f"\nWrote {', '.join(f.name for f in files)} into {out}/")
    return 0


# ======================================================================= linear


class LinearRun(NamedTuple):
    """What ``linear_run`` returns."""

    coef: Any  # (2,)
    intercept: float
    r2: float
    final_loss: float  # minibatch RMSE of the last step
    loss_curve: Any  # (steps,)
    y: Any  # (n,)
    pred: Any  # (n,)
    estimator: Any


def linear_run(
    steps: int = 5000, seed: int = 0, learning_rate: float = 0.01, batch_size: int = 100
) -> LinearRun:
    """Fit ``LinearSGDRegressor`` on the blog's data, as the blog does."""
    from jaxreg.data import linear_blog_data
    from jaxreg.linear import LinearSGDRegressor

    x, y = linear_blog_data(seed)
    # The blog: raw values, every step trained (no standardization, no stopping rule).
    est = LinearSGDRegressor(
        learning_rate,
        n_steps=steps,
        batch_size=batch_size,
        tol=None,
        standardize=False,
        random_state=seed,
    ).fit(x, y)
    pred = est.predict(x)
    return LinearRun(
        est.coef_,
        est.intercept_,
        float(est.score(x, y)),
        float(est.loss_curve_[-1]),
        est.loss_curve_,
        y,
        pred,
        est,
    )


def linear_plots(run: LinearRun, out: pathlib.Path) -> list[pathlib.Path]:
    from jaxreg.plots import figure, save

    fig, ax = figure()
    ax.plot(run.loss_curve, linewidth=0.8)
    ax.set(xlabel="Step", ylabel="Loss (minibatch RMSE)", title="Loss at each step")
    ax.grid(True)
    files = [save(fig, out / "loss.png")]
    fig, ax = figure()
    ax.scatter(run.y, run.pred, s=5)
    lo, hi = float(run.y.min()), float(run.y.max())
    ax.plot([lo, hi], [lo, hi], color="gray", linewidth=0.8, linestyle="--")
    ax.text(0.05, 0.92, f"$R^2$ = {run.r2:.4f}", transform=ax.transAxes)
    ax.set(xlabel="True y", ylabel="Predicted y", title="Predicted versus true")
    ax.grid(True)
    files.append(save(fig, out / "predicted.png"))
    return files


def run_linear(args: argparse.Namespace) -> int:
    from jaxreg.errors import UsageError

    _check_positive("--steps", args.steps)
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer. Got {args.seed}.")
    from jaxreg.files import check_output_folder

    check_output_folder(args.out, "--out")
    run = linear_run(args.steps, args.seed)
    every = max(1, args.steps // 10)
    for i in range(every, args.steps + 1, every):
        print(f"{i} step - Loss: {run.loss_curve[i - 1]:.2f}")
    coef = ", ".join(f"{c:.4f}" for c in run.coef)
    print(f"coef_ = [{coef}] (truth [3, 4])")
    print(f"intercept_ = {run.intercept:.4f} (truth 5 + mean of U(0,1) noise = 5.5)")
    print(f"R^2 = {run.r2:.4f}; final minibatch RMSE = {run.final_loss:.4f}")
    out = pathlib.Path(args.out)
    files = linear_plots(run, out)
    print(f"Wrote {', '.join(f.name for f in files)} into {out}/")
    return 0
