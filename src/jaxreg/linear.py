"""A linear model fitted by minibatch SGD on the RMSE: the linear blog as an estimator.

``LinearSGDRegressor`` follows scikit-learn's conventions and trains on the engine of
``jaxreg.engine``: a single affine layer (``MLPSpec((d, k), "identity")``) with standard
normal initial weights and bias (the blog's ``randn``), plain gradient descent
(``optimizer="gd"``) on the root mean squared error of ``batch_size`` rows drawn with
replacement at every step (``sampling="bootstrap"``, one step an engine epoch). Training
goes through ``jaxreg.runner.run`` in compiled chunks whose final state is kept, so
``partial_fit`` continues the weights, the step counter and the minibatch stream. Refits on
data of the same shape reuse the compiled executables.

Rank 5: imports validate, data, model, optim, engine, runner.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxreg import validate
from jaxreg.data import Standardizer, check_not_text

__all__ = ["LinearSGDRegressor"]

logger = logging.getLogger("jaxreg.linear")

_NAME = "LinearSGDRegressor"
# partial_fit's configuration: a step limit no run reaches (the engine's counters are int32),
# the same for every call on batches of one size, so its executables are compiled once.
_ENDLESS = 2**30


def _check_2d(X) -> None:
    """The blog's check (``X must have 2 dimension``), with the shape received."""
    try:
        ndim = np.ndim(X)
    except Exception:  # ragged input: let validate_data report it
        return
    if ndim != 2:
        hint = (
            " Reshape your data with X.reshape(-1, 1) if it has a single feature."
            if ndim < 2
            else ""
        )
        raise ValueError(
            f"X must be a 2-D array of shape (n_samples, n_features). "
            f"Got an array with {ndim} dimension(s) and shape {np.shape(X)}." + hint
        )


class LinearSGDRegressor(RegressorMixin, BaseEstimator):
    """Linear regression by minibatch stochastic gradient descent on the RMSE.

    Each step draws ``batch_size`` rows with replacement (bootstrap), computes the root
    mean squared error of ``X @ coef + intercept`` on them and its gradient, and takes a
    gradient step ``p - learning_rate * g``. Training runs in float32 on the compiled
    engine of ``jaxreg.engine``, by default on standardized X and y. A pass is
    ``ceil(n_samples / batch_size)`` steps (as many rows as the data has).

    Parameters:
      learning_rate: step size, a float in (0, inf).
      n_steps: the most minibatch steps, an int >= 1. With ``tol`` the run is checked
        after whole passes, so the limit is rounded up to a multiple of the pass.
      batch_size: rows per step, an int >= 1 and at most ``n_samples`` (a larger value is
        an error, as in the blog); None means ``min(100, n_samples)``.
      tol: the stopping rule of scikit-learn's ``SGDRegressor``: stop once the mean squared
        error of all training rows, checked after every pass, has not fallen more than
        ``tol`` below its best for ``n_iter_no_change`` passes in a row (on the device; a
        pass's mean minibatch loss is too noisy to tell progress from luck). A run that
        reaches ``n_steps`` first warns ``ConvergenceWarning``. Default ``1e-3``, as
        scikit-learn's (in units of the standardized y with ``standardize``: about
        ``1 - R^2``). None turns the rule and the warning off: every step is trained.
      n_iter_no_change: passes without improvement that stop the run, an int >= 1;
        default 5.
      standardize: train on X and y standardized with their mean and standard deviation
        (``jaxreg.data.Standardizer``, fitted by ``fit`` or the first ``partial_fit``);
        ``coef_`` and ``intercept_`` are mapped back to the original scale. Default True;
        False trains on the raw values, as the blog does.
      random_state: None, an int or a ``numpy.random.RandomState``. An int seeds the JAX
        key directly (``PRNGKey(random_state)``), which draws the initial weights and the
        minibatches; None draws a seed from NumPy's global generator.
      verbose: 0 for silence; otherwise the loss at every tenth of the run is logged at
        INFO level on the ``jaxreg.linear`` logger (as training goes when the run splits
        into ten equal chunks, else after it), and one line per ``partial_fit``.

    Attributes:
      coef_: ``(n_features,)`` for 1-D ``y``, ``(n_targets, n_features)`` for 2-D ``y``, on
        the original scale: ``predict(X)`` is ``X @ coef_.T + intercept_``.
      intercept_: a float for 1-D ``y``, ``(n_targets,)`` for 2-D ``y``.
      loss_curve_: the minibatch RMSE before each step's update with ``tol=None``, else
        the mean over each pass (standardized units with ``standardize``); every
        ``partial_fit`` adds the mean over its pass.
      n_iter_: steps run since the model was initialized (by ``fit`` or the first
        ``partial_fit``).
      x_scaler_, y_scaler_: the ``Standardizer`` of X and y (the identity without
        ``standardize``).
      n_features_in_, feature_names_in_: as in scikit-learn.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> X = 10 * rng.random((1000, 2))
      >>> y = X @ [3.0, 4.0] + rng.random(1000) + 5
      >>> est = LinearSGDRegressor(random_state=0).fit(X, y)
      >>> bool(est.score(X, y) > 0.99)
      True
    """

    def __init__(
        self,
        learning_rate=0.01,
        *,
        n_steps=1000,
        batch_size=None,
        tol=1e-3,
        n_iter_no_change=5,
        standardize=True,
        random_state=None,
        verbose=0,
    ):
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.standardize = standardize
        self.random_state = random_state
        self.verbose = verbose

    # Fitted attributes (set by _fit), and the private state: the JAX seed, the engine's
    # final (state, history) with no record points, and whether y was 1-D.
    coef_: np.ndarray
    intercept_: Any
    loss_curve_: np.ndarray
    n_iter_: int
    x_scaler_: Standardizer
    y_scaler_: Standardizer
    _seed: int
    _state: tuple[Any, Any]
    _y_1d: bool

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _check_params(self) -> None:
        validate.real(_NAME, "learning_rate", self.learning_rate, low=0, low_open=True)
        validate.integer(_NAME, "n_steps", self.n_steps, low=1)
        validate.integer(_NAME, "batch_size", self.batch_size, low=1, allow_none=True)
        validate.real(_NAME, "tol", self.tol, low=0, allow_none=True)
        validate.integer(_NAME, "n_iter_no_change", self.n_iter_no_change, low=1)
        validate.boolean(_NAME, "standardize", self.standardize)
        validate.random_state(_NAME, self.random_state)
        if not isinstance(self.verbose, bool):
            validate.integer(_NAME, "verbose", self.verbose, low=0)

    def _new_seed(self) -> int:
        if validate.is_int(self.random_state):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and ``y`` ``(n_samples,)`` or
        ``(n_samples, n_targets)`` from fresh weights; returns ``self``."""
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """Train one pass, ``ceil(n_samples / batch_size)`` steps, on ``(X, y)``; returns
        ``self``.

        As scikit-learn's ``SGDRegressor.partial_fit`` runs one epoch. The first call
        initializes the model as ``fit`` does and fits the scalers on this batch; later
        calls, and calls after ``fit``, keep the weights, the scalers and the step counter
        (so the minibatch draws move on: ``k`` calls on the same data train exactly as a
        ``fit`` of ``k`` passes with ``tol=None``). The stopping rule does not apply here.
        """
        return self._fit(X, y, incremental=True)

    def _fit(self, X, y, *, incremental: bool):
        import jax
        import jax.numpy as jnp

        from jaxreg.data import Dataset
        from jaxreg.model import MLPSpec
        from jaxreg.optim import Hparams
        from jaxreg.runner import check_finite, run

        self._check_params()
        continuing = incremental and hasattr(self, "coef_")
        _check_2d(X)
        check_not_text("X", X)
        check_not_text("y", y)
        X, y = validate_data(
            self, X, y, reset=not continuing, multi_output=True, y_numeric=True, dtype=np.float64
        )
        X = np.ascontiguousarray(X)  # a DataFrame's column order would change the statistics
        n, d = X.shape
        y_2d = np.asarray(y, np.float64).reshape(n, -1)
        batch = min(100, n) if self.batch_size is None else self.batch_size
        if batch > n:
            raise validate.bad(
                _NAME,
                "batch_size",
                f"at most the number of samples ({n}): "
                "bootstrap batches are drawn from the training rows",
                batch,
            )
        if continuing:
            k = np.atleast_2d(self.coef_).shape[0]
            if y_2d.shape[1] != k:
                raise ValueError(
                    f"y has {y_2d.shape[1]} outputs, but {_NAME} is expecting {k} outputs as input."
                )
            seed, x_sc, y_sc = self._seed, self.x_scaler_, self.y_scaler_
        else:
            seed = self._new_seed()
            names = getattr(self, "feature_names_in_", None)
            x_sc = Standardizer.fit(X, enabled=self.standardize, what="X", names=names)
            y_sc = Standardizer.fit(y_2d, enabled=self.standardize, what="y")
        names = getattr(self, "feature_names_in_", None)
        x = jnp.asarray(x_sc.transform_checked(X, np.float32, what="X", names=names))
        t = jnp.asarray(y_sc.transform_checked(y_2d, np.float32, what="y"))
        steps, cfg, chunk = self._config(n, batch, incremental)
        # The stopping rule watches the training rows' MSE: the engine's "val" monitor on them.
        data = Dataset(x, t, x, t) if cfg.patience is not None else Dataset(x, t)
        callbacks: tuple[Callable, ...] = ()
        if self.verbose and not incremental and chunk < cfg.epochs:
            callbacks = (self._log_chunk,)
        hp = Hparams(learning_rate=float(self.learning_rate))
        out = run(
            MLPSpec((d, y_2d.shape[1]), activation="identity", init="normal", bias_init="normal"),
            cfg,
            data,
            hp,
            jax.random.PRNGKey(seed)[None],
            resume=self._state if continuing else None,
            chunk_epochs=chunk,
            n_epochs=steps if incremental else None,
            callbacks=callbacks,
            check=False,
        )
        result = jax.tree.map(lambda a: np.asarray(a)[0], out.result)
        n_run = int(result.epochs_run)
        # A stopped run records NaN for the blocks it skipped: keep the trained ones.
        hist = result.history
        trained = np.asarray(hist.epoch) < n_run
        curve = np.asarray(hist.objective, np.float64)[trained]
        # With the rule, result.train_mse is the best check's: the losses on the way tell
        # whether the run diverged (a float32 overflow can leave the weights finite).
        losses = np.concatenate([np.ravel(result.train_mse), np.ravel(hist.train_mse), curve])
        check_finite(result._replace(train_mse=losses), hp, unit="step")
        assert out.resume is not None  # a chunked run hands its final state back
        state, history = out.resume
        # The next partial_fit resumes from here; the history is this run's alone.
        self._state = (jax.device_get(state), jax.tree.map(lambda a: np.asarray(a)[:, :0], history))
        self._seed = seed
        self.x_scaler_, self.y_scaler_ = x_sc, y_sc
        self._set_coef(result.params[0], y.ndim == 1 if not continuing else self._y_1d)
        if continuing:
            curve = np.concatenate([self.loss_curve_, curve])
        self.loss_curve_ = curve
        self.n_iter_ = n_run
        if incremental:
            if self.verbose:
                logger.info("%i step - Loss: %.4f", n_run, curve[-1])
        else:
            if self.verbose and not callbacks:
                self._log_progress(curve, cfg.record_every)
            if self.tol is not None and not bool(result.converged):
                warnings.warn(
                    "Maximum number of iteration reached before convergence. Consider "
                    "increasing n_steps to improve the fit.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        return self

    def _config(self, n: int, batch: int, incremental: bool):
        """``(pass, cfg, chunk_epochs)``: the steps of a pass over ``n`` rows, the engine's
        configuration (one step an epoch) and the runner's chunk length.

        ``fit`` records every step with ``tol=None``; with ``tol`` it records each pass,
        and the engine's rule counts the passes without an improvement of ``tol`` in the
        MSE of the training rows (given as the "validation" rows it monitors; the final
        parameters are kept): ``patience`` is ``n_iter_no_change`` passes, in steps, as
        scikit-learn's ``SGDRegressor`` stops after ``n_iter_no_change`` epochs (its
        ``MLPRegressor`` waits one more). ``partial_fit`` runs and records one pass of an
        endless run without the rule.
        """
        from jaxreg.engine import TrainConfig

        steps = -(-n // batch)
        block = steps if incremental or self.tol is not None else 1
        if incremental:
            epochs = steps * (_ENDLESS // steps)
        else:
            epochs = -(-self.n_steps // block) * block
        rule = self.tol is not None and not incremental
        cfg = TrainConfig(
            epochs=epochs,
            optimizer="gd",
            sampling="bootstrap",
            batch_size=batch,
            steps_per_epoch=1,
            objective="rmse",
            record_every=block,
            patience=self.n_iter_no_change * block if rule else None,
            monitor="val",
            tol=self.tol if rule else 0.0,
        )
        if incremental:
            chunk = steps
        elif self.verbose and (epochs // block) % 10 == 0:
            chunk = epochs // 10  # live progress: ten equal chunks (one compilation)
        else:
            chunk = epochs
        return steps, cfg, chunk

    def _set_coef(self, layer, y_1d: bool) -> None:
        """``coef_`` and ``intercept_`` on the original scale from the trained layer on the
        standardized one (exactly the layer's values without ``standardize``)."""
        x_sc, y_sc = self.x_scaler_, self.y_scaler_
        w = np.asarray(layer.W, np.float64).T  # (k, d)
        b = np.asarray(layer.b, np.float64).reshape(-1)  # (k,)
        coef = w / x_sc.scale * y_sc.scale[:, None]
        intercept = y_sc.mean + y_sc.scale * b - coef @ x_sc.mean
        self._y_1d = y_1d
        if y_1d:
            self.coef_, self.intercept_ = coef[0], float(intercept[0])
        else:
            self.coef_, self.intercept_ = coef, intercept

    def _log_chunk(self, progress) -> None:
        objective = np.asarray(progress.history.objective)[0]
        logger.info(
            "%i step - Loss: %.4f", progress.epoch, float(objective[np.isfinite(objective)][-1])
        )

    def _log_progress(self, curve, block: int) -> None:
        every = max(1, len(curve) // 10)
        for i in range(every, len(curve) + 1, every):
            logger.info("%i step - Loss: %.4f", i * block, curve[i - 1])

    def predict(self, X):
        """Predictions ``(n_samples,)`` for a 1-D fitted ``y``, else ``(n_samples, n_targets)``."""
        check_is_fitted(self)
        _check_2d(X)
        check_not_text("X", X)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
