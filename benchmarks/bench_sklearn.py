"""jaxreg.MLPRegressor vs scikit-learn's MLPRegressor, side by side in one process.

(a) Lecture workload (``jaxreg.data.lecture_data()``, 1-10-10-10-1 tanh, lr 1e-3, 4000
    full-batch epochs, SGD and Adam, no standardization so both fit the raw data): warm
    ``fit`` time, medians of several runs after a warm-up; jaxreg's compile time apart.
    Both start from the same weights: jaxreg's He-normal weights and unit biases for
    ``random_state=1234`` are computed with ``jaxreg.model.init`` (the estimator's seeding:
    ``PRNGKey(RandomState(random_state).randint(2**31 - 1))``, one key per layer) and
    written into scikit-learn's
    ``coefs_``/``intercepts_`` with ``warm_start=True`` before every timed ``fit``.
    scikit-learn minimizes half the MSE, so its SGD learning rate is 2e-3 for the same
    steps (Adam is invariant to that scale). Equal validation MSE confirms the match.
(b) Diabetes (``sklearn.datasets.load_diabetes``): 5-fold CV R² of jaxreg's default
    MLPRegressor and scikit-learn's MLPRegressor with the same hidden sizes and epochs
    (``max_iter``), with ``Ridge`` beside them.

Run: ``python benchmarks/bench_sklearn.py [--repeats 5]``. Prints two tables; asserts
nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles jaxreg's loop once)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def lecture_table(repeats: int):
    import jax
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor as SkMLP

    from jaxreg.data import lecture_data
    from jaxreg.estimator import MLPRegressor
    from jaxreg.model import MLPSpec, init

    xt, yt, xv, yv = (np.asarray(a) for a in lecture_data())
    epochs, seed = 4000, 1234
    spec = MLPSpec((1, 10, 10, 10, 1), init="he_normal", bias_init="ones", key_scheme="split")
    key = jax.random.PRNGKey(int(np.random.RandomState(seed).randint(0, 2**31 - 1)))
    start = [
        (np.asarray(p.W, np.float64), np.asarray(p.b, np.float64).reshape(-1))
        for p in init(key, spec)
    ]
    rows = []
    for opt in ("sgd", "adam"):
        jx = MLPRegressor(
            hidden_layer_sizes=(10, 10, 10),
            activation="tanh",
            init="he_normal",
            bias_init="ones",
            optimizer=opt,
            learning_rate=1e-3,
            epochs=epochs,
            batch_size=None,
            standardize=False,
            random_state=seed,
        )
        t0 = time.perf_counter()
        jx.fit(xt, yt[:, 0])
        first = time.perf_counter() - t0
        compile_s = jx.compile_seconds_
        jt = _median_time(lambda jx=jx: jx.fit(xt, yt[:, 0]), repeats)
        j_mse = float(np.mean((jx.predict(xv) - yv[:, 0]) ** 2))
        sk = SkMLP(
            hidden_layer_sizes=(10, 10, 10),
            activation="tanh",
            solver=opt,
            batch_size=400,
            shuffle=False,
            max_iter=epochs,
            tol=0,
            n_iter_no_change=epochs,
            momentum=0,
            learning_rate_init=2e-3 if opt == "sgd" else 1e-3,
            alpha=0,
            warm_start=True,
            random_state=0,
        )

        def sk_fit(sk=sk):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                if not hasattr(sk, "coefs_"):  # builds scikit-learn's fitted attributes
                    sk.set_params(max_iter=1).fit(xt, yt[:, 0]).set_params(max_iter=epochs)
                sk.coefs_ = [w.copy() for w, _ in start]
                sk.intercepts_ = [b.copy() for _, b in start]
                sk.n_iter_, sk.t_, sk.loss_curve_ = 0, 0, []
                sk.best_loss_, sk._no_improvement_count = np.inf, 0
                return sk.fit(xt, yt[:, 0])

        st = _median_time(sk_fit, repeats)
        s_mse = float(np.mean((sk.predict(xv) - yv[:, 0]) ** 2))
        rows.append((opt, jt, compile_s, first, st, st / jt, j_mse, s_mse))
    return rows


def diabetes_table(epochs: int | None = None):
    from sklearn.datasets import load_diabetes
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPRegressor as SkMLP

    from jaxreg.estimator import MLPRegressor

    X, y = load_diabetes(return_X_y=True)
    cv = KFold(5, shuffle=True, random_state=0)
    jx = MLPRegressor(random_state=0)
    if epochs is not None:
        jx.set_params(epochs=epochs)
    hidden, n_epochs = jx.hidden_layer_sizes, jx.epochs
    sk = SkMLP(hidden_layer_sizes=hidden, max_iter=n_epochs, random_state=0)
    out = []
    for name, est in (
        ("jaxreg MLPRegressor (defaults)", jx),
        (f"sklearn MLPRegressor (hidden {hidden}, max_iter {n_epochs})", sk),
        ("sklearn Ridge(alpha=1.0)", Ridge()),
    ):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_val_score(est, X, y, cv=cv, scoring="r2")
        out.append((name, float(np.mean(scores)), float(np.std(scores)), time.perf_counter() - t0))
    return out


def main(argv=None) -> int:
    from rich.console import Console
    from rich.table import Table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    console = Console(width=140)

    t = Table(
        title=f"(a) lecture workload, 4000 full-batch epochs, warm fit (median of {args.repeats})"
    )
    for col in (
        "optimizer",
        "jaxreg fit s",
        "jaxreg compile s",
        "jaxreg first fit s",
        "sklearn fit s",
        "speed-up",
        "jaxreg val MSE",
        "sklearn val MSE",
    ):
        t.add_column(col, justify="right")
    for opt, jt, cs, first, st, ratio, jm, sm in lecture_table(args.repeats):
        t.add_row(
            opt,
            f"{jt:.4f}",
            f"{cs:.2f}",
            f"{first:.2f}",
            f"{st:.4f}",
            f"{ratio:.1f}x",
            f"{jm:.6f}",
            f"{sm:.6f}",
        )
    console.print(t)

    t = Table(title="(b) diabetes, 5-fold CV R² (KFold shuffle, random_state=0)")
    for col in ("model", "mean R²", "std", "CV seconds"):
        t.add_column(col, justify="right")
    for name, mean, std, secs in diabetes_table():
        t.add_row(name, f"{mean:.4f}", f"{std:.4f}", f"{secs:.1f}")
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
