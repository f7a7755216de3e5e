"""A linear model fitted by minibatch SGD on the RMSE: the linear blog as an estimator.

``LinearSGDRegressor`` follows scikit-learn's conventions and trains on the engine of
``jaxreg.engine``: a single affine layer (``MLPSpec((d, k), "identity")``) with standard
normal initial weights and bias (the blog's ``randn``), plain gradient descent
(``optimizer="gd"``) on the root mean squared error of ``batch_size`` rows drawn with
replacement at every step (``sampling="bootstrap"``). The whole loop is one compiled call;
refits on data of the same shape reuse the compiled executable.

Rank 5: imports validate, data, model, optim, engine, runner.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxreg import validate
from jaxreg.data import check_not_text

__all__ = ["LinearSGDRegressor"]

logger = logging.getLogger("jaxreg.linear")

_NAME = "LinearSGDRegressor"


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

    Each of ``n_steps`` steps draws ``batch_size`` rows with replacement (bootstrap),
    computes the root mean squared error of ``X @ coef + intercept`` on them and its
    gradient, and takes a gradient step ``p - learning_rate * g``. Training runs in
    float32 on the compiled engine of ``jaxreg.engine``.

    Parameters:
      learning_rate: step size, a float in (0, inf).
      n_steps: number of minibatch steps, an int >= 1.
      batch_size: rows per step, an int >= 1 and at most ``n_samples`` (a larger value is
        an error, as in the blog); None means ``min(100, n_samples)``.
      random_state: None, an int or a ``numpy.random.RandomState``. An int seeds the JAX
        key directly (``PRNGKey(random_state)``), which draws the initial weights and the
        minibatches; None draws a seed from NumPy's global generator.
      verbose: 0 for silence; otherwise the minibatch loss at every tenth of the run is
        logged at INFO level on the ``jaxreg.linear`` logger after training.

    Attributes:
      coef_: ``(n_features,)`` for 1-D ``y``, ``(n_targets, n_features)`` for 2-D ``y``.
      intercept_: a float for 1-D ``y``, ``(n_targets,)`` for 2-D ``y``.
      loss_curve_: ``(n_steps,)`` minibatch RMSE before each step's update.
      n_iter_: steps run.
      n_features_in_, feature_names_in_: as in scikit-learn.

    Example:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> X = 10 * rng.random((1000, 2))
      >>> y = X @ [3.0, 4.0] + rng.random(1000) + 5
      >>> est = LinearSGDRegressor(n_steps=5000, random_state=0).fit(X, y)
      >>> bool(est.score(X, y) > 0.99)
      True
    """

    def __init__(
        self, learning_rate=0.01, n_steps=1000, batch_size=None, random_state=None, verbose=0
    ):
        self.learning_rate = learning_rate
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _check_params(self) -> None:
        validate.real(_NAME, "learning_rate", self.learning_rate, low=0, low_open=True)
        validate.integer(_NAME, "n_steps", self.n_steps, low=1)
        validate.integer(_NAME, "batch_size", self.batch_size, low=1, allow_none=True)
        validate.random_state(_NAME, self.random_state)
        if not isinstance(self.verbose, bool):
            validate.integer(_NAME, "verbose", self.verbose, low=0)

    def _seed(self) -> int:
        if validate.is_int(self.random_state):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def fit(self, X, y):
        """Fit on ``X`` ``(n_samples, n_features)`` and ``y`` ``(n_samples,)`` or
        ``(n_samples, n_targets)``; returns ``self``."""
        import jax.numpy as jnp

        from jaxreg.data import Dataset
        from jaxreg.engine import TrainConfig
        from jaxreg.model import MLPSpec
        from jaxreg.optim import Hparams
        from jaxreg.runner import check_finite, fit

        self._check_params()
        _check_2d(X)
        check_not_text("X", X)
        check_not_text("y", y)
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32]
        )
        n, d = X.shape
        y_2d = y.reshape(n, -1)
        batch = min(100, n) if self.batch_size is None else self.batch_size
        if batch > n:
            raise validate.bad(
                _NAME,
                "batch_size",
                f"at most the number of samples ({n}): "
                "bootstrap batches are drawn from the training rows",
                batch,
            )
        spec = MLPSpec((d, y_2d.shape[1]), activation="identity", init="normal", bias_init="normal")
        cfg = TrainConfig(
            epochs=self.n_steps,
            optimizer="gd",
            sampling="bootstrap",
            batch_size=batch,
            steps_per_epoch=1,
            objective="rmse",
            record_every=1,
        )
        data = Dataset(jnp.asarray(X, jnp.float32), jnp.asarray(y_2d, jnp.float32))
        hp = Hparams(learning_rate=float(self.learning_rate))
        every = self.n_steps // 10
        if self.verbose and every and self.n_steps % 10 == 0:
            # Live progress: ten equal compiled chunks (one compilation; the same result).
            result = fit(
                spec,
                cfg,
                data,
                hp,
                key=self._seed(),
                check=False,
                chunk_epochs=every,
                callback=self._log_chunk,
            )
        else:
            result = fit(spec, cfg, data, hp, key=self._seed(), check=False)
            if self.verbose:
                self._log_progress(np.asarray(result.history.objective))
        check_finite(result, hp, unit="step")
        layer = result.params[0]
        coef = np.asarray(layer.W, dtype=np.float64).T  # (k, d)
        intercept = np.asarray(layer.b, dtype=np.float64).reshape(-1)  # (k,)
        if y.ndim == 1:
            self.coef_, self.intercept_ = coef[0], float(intercept[0])
        else:
            self.coef_, self.intercept_ = coef, intercept
        self.loss_curve_ = np.asarray(result.history.objective, dtype=np.float64)
        self.n_iter_ = self.n_steps
        return self

    def _log_chunk(self, progress) -> None:
        logger.info(
            "%i step - Loss: %.4f",
            progress.epoch,
            float(np.asarray(progress.history.objective)[0, -1]),
        )

    def _log_progress(self, losses) -> None:
        every = max(1, self.n_steps // 10)
        for step in range(every, self.n_steps + 1, every):
            logger.info("%i step - Loss: %.4f", step, losses[step - 1])

    def predict(self, X):
        """Predictions ``(n_samples,)`` for a 1-D fitted ``y``, else ``(n_samples, n_targets)``."""
        check_is_fitted(self)
        _check_2d(X)
        check_not_text("X", X)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
