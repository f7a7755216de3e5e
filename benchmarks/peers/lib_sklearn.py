"""scikit-learn's ``MLPRegressor``, started from the given weights.

scikit-learn has no parameter for initial weights, so the estimator is fitted once on a
few rows (which builds its fitted attributes), then every run writes ``coefs_`` and
``intercepts_``, resets the counters that ``warm_start`` would carry over, and fits with
``warm_start=True`` (a fresh optimizer every fit).

scikit-learn's loss is half the mean squared error, so its gradient is half of the
others': gradient descent at learning rate ``lr`` is ``solver="sgd"`` (no momentum) at
``learning_rate_init = 2 lr``, and Adam on half the loss equals Adam on the whole loss with
half the epsilon (``epsilon = 5e-9``). The stopping rule is disabled (``n_iter_no_change``
beyond ``max_iter``); the ``ConvergenceWarning`` that follows is expected and silenced.
BLAS threads: the default (all cores).
"""

from __future__ import annotations

import warnings

import numpy as np
from common import ADAM_EPS


def versions() -> str:
    import sklearn

    return f"scikit-learn {sklearn.__version__}"


def _estimator(opt: str, lr: float, epochs: int, batch: int, sizes, shuffle: bool, seed: int):
    from sklearn.neural_network import MLPRegressor

    common = dict(
        hidden_layer_sizes=tuple(sizes[1:-1]),
        activation="tanh",
        alpha=0.0,
        batch_size=batch,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        shuffle=shuffle,
        warm_start=True,
        random_state=seed,
    )
    if opt == "gd":
        return MLPRegressor(
            solver="sgd",
            learning_rate="constant",
            learning_rate_init=2 * lr,
            momentum=0.0,
            nesterovs_momentum=False,
            **common,
        )
    return MLPRegressor(solver="adam", learning_rate_init=lr, epsilon=ADAM_EPS / 2, **common)


class _Trainer:
    def __init__(self, est, x, y):
        self.est, self.x = est, np.asarray(x, np.float32)
        y = np.asarray(y, np.float32)
        self.y = y[:, 0] if y.shape[1] == 1 else y

    def __call__(self, params, run_index: int = 0):
        from sklearn.exceptions import ConvergenceWarning

        est = self.est
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if not hasattr(est, "coefs_"):  # builds the fitted attributes, then overwritten
                est.set_params(max_iter=1)
                est.fit(self.x[:8], self.y[:8])
                est.set_params(max_iter=self.max_iter)
            est.coefs_ = [np.array(w, np.float32) for w, _ in params]
            est.intercepts_ = [np.array(b, np.float32).reshape(-1) for _, b in params]
            est.n_iter_, est.t_, est.loss_curve_ = 0, 0, []
            est._no_improvement_count, est.best_loss_ = 0, np.inf
            est.fit(self.x, self.y)
        if est.n_iter_ != self.max_iter:
            raise RuntimeError(f"scikit-learn ran {est.n_iter_} of {self.max_iter} epochs")
        return list(zip(est.coefs_, est.intercepts_, strict=True))

    @property
    def max_iter(self) -> int:
        return self.epochs

    def info(self) -> dict:
        return {"compile_s": None, "note": self.note}


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    t = _Trainer(_estimator(opt, lr, epochs, len(x), sizes, shuffle=False, seed=0), x, y)
    t.epochs = epochs
    t.note = "lr x 2 (half-MSE loss)" if opt == "gd" else "epsilon 5e-9 (half-MSE loss)"
    return t


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    t = _Trainer(_estimator("adam", lr, epochs, batch, sizes, shuffle=True, seed=seed), x, y)
    t.epochs = epochs
    t.note = "its own shuffle (random_state)"
    return t
