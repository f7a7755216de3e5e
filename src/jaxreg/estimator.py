"""A scikit-learn regressor on the jaxreg engine. Rank 5: imports ranks 0 to 4.

``MLPRegressor`` follows scikit-learn's contract (``__init__`` stores arguments, ``fit``
validates them, fitted attributes end in ``_``) and trains with ``jaxreg.train``: the whole
epoch loop, early stopping included, runs in one compiled call; an ensemble is one vmapped
compiled call. Compiled training functions are cached by architecture, configuration and
array shapes, and ``learning_rate``/``l2`` are traced, so refitting the same shapes, or a
``GridSearchCV`` over ``learning_rate`` and ``l2``, compiles once.

Shapes: ``X`` is ``(n_samples, n_features)``; ``y`` is ``(n_samples,)`` or
``(n_samples, n_outputs)`` and predictions mirror it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from jaxreg import runner, store, validate
from jaxreg.data import (
    Dataset,
    Standardizer,
    bucket_rows,
    check_not_text,
    pad_rows,
    training_split,
)
from jaxreg.engine import SAMPLINGS, TrainConfig
from jaxreg.model import ACTIVATIONS, INITIALIZERS, PREDICT_BLOCK, Layer, MLPSpec, apply_members
from jaxreg.optim import OPTIMIZERS, SCHEDULES, Hparams

__all__ = ["MLPRegressor", "load"]

_BIAS_INITS = ("zeros", "ones", "normal", "glorot_uniform")
_DTYPES = ("float32", "float64")
_OWNER = "MLPRegressor"
_AUTO_BATCH = 200  # batch_size="auto": min(200, n_samples), as scikit-learn's
# hidden_layer_sizes="auto": the narrow network, unless the table has AUTO_WIDE_ROWS samples
# or more, or more features than the narrow first layer has units (then that layer would
# squeeze the inputs). Measured in benchmarks/README.md ("hidden_layer_sizes='auto'"): the
# narrow network does as well or better on the small tables with few features; the wide
# one wins the 20,190- and 53,940-row tables and the tables of 43 and 51 features, where
# (32, 32) lost to or barely beat scikit-learn's MLPRegressor.
AUTO_WIDE_ROWS = 10_000
AUTO_NARROW, AUTO_WIDE = (32, 32), (64, 32)


def auto_hidden(n_samples: int, n_features: int) -> tuple[int, ...]:
    """The widths ``hidden_layer_sizes="auto"`` gives a fit on ``n_samples`` rows of
    ``n_features`` features."""
    if n_samples >= AUTO_WIDE_ROWS or n_features > AUTO_NARROW[0]:
        return AUTO_WIDE
    return AUTO_NARROW


_SPARSE = ("csr", "csc")  # scipy.sparse inputs (OneHotEncoder's default output)
# predict: the most rows in one forward pass (a multiple of the pass's own blocks)
PREDICT_CHUNK = 1 << 18
assert PREDICT_CHUNK % PREDICT_BLOCK == 0


def _dense(X):
    """A ``scipy.sparse`` matrix as a dense array (the network's first layer is dense)."""
    return X.toarray() if hasattr(X, "toarray") else X


def _member_keys(seed: int, n: int):
    """PRNG keys of the ensemble members (one per member; ``PRNGKey(seed)`` when n == 1)."""
    if n == 1:
        return jax.random.PRNGKey(seed)[None]
    return jax.random.split(jax.random.PRNGKey(seed), n)


def _fingerprint(X, y, w, p: dict, spec: MLPSpec, cfg: TrainConfig) -> dict:
    """What identifies a run for its checkpoint: the data's digest and every setting."""
    import hashlib

    digest = hashlib.sha256()
    for a in (X, y) if w is None else (X, y, w):
        digest.update(np.ascontiguousarray(a, np.float64).tobytes())
    return {
        "data_sha256": digest.hexdigest(),
        "spec": repr(spec),
        "config": repr(cfg),
        "params": {k: v for k, v in p.items() if k not in ("verbose",)},
    }


def _to_host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _x64(dtype: str):
    return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


# ---------------------------------------------------------------- the estimator


class MLPRegressor(RegressorMixin, BaseEstimator):
    """Multilayer-perceptron regressor trained in one compiled JAX call.

    Parameters:
      hidden_layer_sizes: widths of the hidden layers; ``()`` is a linear model. Default
        ``"auto"``: ``(64, 32)`` from 10,000 samples or for more than 32 features, else
        ``(32, 32)`` (``auto_hidden``; chosen on the real tables of
        benchmarks/bench_realdata.py), decided by the first fit (``warm_start`` and
        ``partial_fit`` keep the fitted widths). The lecture's network is ``(10, 10, 10)``.
      activation: hidden activation, one of ``jaxreg.model.ACTIVATIONS``; default ``tanh``.
      init: weight initializer, one of ``jaxreg.model.INITIALIZERS``; default
        ``glorot_uniform`` (``he_normal`` is the lecture's).
      bias_init: ``zeros`` (default), ``ones`` (the lecture's) or ``normal``.
      optimizer: one of ``jaxreg.optim.OPTIMIZERS``; default ``adam``. ``lbfgs`` is
        full-batch L-BFGS with Optax's zoom line search (scikit-learn's ``solver="lbfgs"``):
        one iteration an epoch, ``learning_rate``, ``schedule`` and ``batch_size`` unused.
      learning_rate: initial learning rate (traced: changing it never recompiles);
        default ``1e-3``.
      schedule: None (constant) or one of ``jaxreg.optim.SCHEDULES``, over all
        ``epochs``.
      l2: L2 penalty on the weights (not biases) of the standardized-space network, added
        to the mean squared error (traced); default 0.
      epochs: the most training epochs (scikit-learn's ``max_iter``); default 200.
      batch_size: rows per minibatch; ``"auto"`` (default) is ``min(200, n_samples)`` as in
        scikit-learn (with ``shuffle``, a size of at least the training rows is one batch an
        epoch, and fits of any row count of one padding bucket share an executable); None
        trains full-batch (one step per epoch on all rows) and ignores ``sampling``.
      sampling: with a ``batch_size``: ``shuffle`` (default; a permutation per epoch) or
        ``bootstrap`` (rows drawn with replacement).
      validation_fraction: fraction of rows held out (chosen by ``random_state``) to
        record ``validation_loss_curve_``; default 0. ``early_stopping=True`` with 0 holds
        out 0.1.
      early_stopping: apply the stopping rule to the validation MSE and restore the best
        parameters; default False (the rule then watches the training loss and the final
        parameters are kept). All on the device.
      tol: the stopping rule: stop once the loss has not improved by more than ``tol``
        for more than ``n_iter_no_change`` consecutive epochs, as scikit-learn does; for
        ``lbfgs``, the gradient max-norm at which it has converged. Default ``1e-4``; None
        turns the rule off (every epoch is trained; early stopping uses ``tol=0``). A run
        that reaches ``epochs`` (or ``max_fun``) first warns ``ConvergenceWarning``.
      n_iter_no_change: default 10 (Keras's ``EarlyStopping(patience=k)`` is ``k - 1``).
      max_fun: ``lbfgs`` only: the most loss evaluations; default 15000.
      standardize: standardize X and y with the (weighted) training mean and standard
        deviation, stored in the model and inverted on predict; default True.
      n_ensemble: members of a deep ensemble (different initial keys and minibatch
        orders), trained in one vmapped call; ``predict`` returns their mean and
        ``return_std=True`` their standard deviation. Default 1.
      dtype: training dtype, ``float32`` (default) or ``float64``; float64 enables JAX's
        x64 mode only inside this estimator's ``fit`` (a context manager), never globally.
        ``predict`` always evaluates the network in float64 (x64 scoped the same way), so
        a row's prediction does not depend on the batch it is predicted in.
      random_state: None, an int or a ``numpy.random.RandomState``: seeds the weights,
        minibatch order and the validation split.
      verbose: 0 silent; 1 prints one summary line per fit (compile and run seconds).
      warm_start: when True and already fitted with the same architecture, ``fit``
        starts from ``params_`` (keeping the fitted scalers) with a fresh optimizer state
        and trains ``epochs`` more epochs; ``loss_curve_`` and ``n_iter_`` accumulate.
      data_parallel: split every minibatch (or the full batch, or L-BFGS's evaluations) by
        rows over all devices of all processes (``jax.devices()``): the parameters are
        replicated and XLA sums the gradients across devices. An ensemble's members each
        train that way, one after another on CPU (vmapped on accelerators). The result
        equals one device's to float tolerance. Default False: one device (an ensemble's
        members spread over the local devices).

    Fitted attributes:
      params_: tuple of ``Layer(W, b)`` in the standardized space (NumPy); with
        ``n_ensemble > 1`` each array has a leading member axis.
      loss_curve_: training MSE on the original scale of y (per-output standardized MSE
        times the squared scale, averaged over outputs) at the start of every epoch; the
        member mean for ensembles.
      validation_loss_curve_: the same metric on the held-out rows, or None.
      best_epoch_: epochs trained by the returned parameters (the restored best epoch
        when early stopping); an array per member for ensembles.
      n_iter_: epochs trained (the maximum over members).
      hidden_layer_sizes_: the hidden widths trained (``"auto"`` resolved).
      n_features_in_, feature_names_in_ (DataFrames only), n_outputs_.
      x_scaler_, y_scaler_: ``jaxreg.data.Standardizer`` of inputs and targets.
      compile_seconds_, run_seconds_: timings of the last fit.

    ``X`` may be a ``scipy.sparse`` CSR/CSC matrix (densified: the first layer is dense).
    Rows are padded to a few bucket sizes with zero-weight rows that are never sampled, so
    fits on similar row counts share one compiled executable.

    Example:
      >>> import numpy as np
      >>> X = np.linspace(0, 5, 50)[:, None]; y = np.sin(X[:, 0])
      >>> model = MLPRegressor(epochs=200, random_state=0).fit(X, y)
      >>> model.predict(X).shape
      (50,)
    """

    def __init__(
        self,
        hidden_layer_sizes="auto",
        activation="tanh",
        *,
        init="glorot_uniform",
        bias_init="zeros",
        optimizer="adam",
        learning_rate=1e-3,
        schedule=None,
        l2=0.0,
        epochs=200,
        batch_size="auto",
        sampling="shuffle",
        validation_fraction=0.0,
        early_stopping=False,
        tol=1e-4,
        n_iter_no_change=10,
        max_fun=15000,
        standardize=True,
        n_ensemble=1,
        dtype="float32",
        random_state=None,
        verbose=0,
        warm_start=False,
        data_parallel=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.init = init
        self.bias_init = bias_init
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.l2 = l2
        self.epochs = epochs
        self.batch_size = batch_size
        self.sampling = sampling
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.standardize = standardize
        self.n_ensemble = n_ensemble
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.data_parallel = data_parallel

    # Private fitted state (set by _fit/_store_result and load; never by __init__).
    _seed: int
    _state: tuple[Any, Any] | None
    _state_cfg: TrainConfig | None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------ validation

    def _checked(self) -> dict:
        """Validate the constructor arguments; returns them normalized."""
        v = validate
        h = self.hidden_layer_sizes
        if isinstance(h, str) and h == "auto":
            h = ("auto",)  # resolved in fit, from the number of samples
        elif v.is_int(h):
            h = (h,)
        try:
            hidden = tuple(h)
        except TypeError:
            hidden = None
        if hidden == ("auto",):
            p: dict[str, Any] = {"hidden": "auto"}
        elif hidden is None or any(not v.is_int(s) or s < 1 for s in hidden):
            raise v.bad(
                _OWNER,
                "hidden_layer_sizes",
                "'auto', a positive int or a sequence of positive ints",
                self.hidden_layer_sizes,
            )
        else:
            p = {"hidden": tuple(int(s) for s in hidden)}
        p["activation"] = v.choice(_OWNER, "activation", self.activation, ACTIVATIONS)
        p["init"] = v.choice(_OWNER, "init", self.init, INITIALIZERS)
        p["bias_init"] = v.choice(_OWNER, "bias_init", self.bias_init, _BIAS_INITS)
        p["optimizer"] = v.choice(_OWNER, "optimizer", self.optimizer, OPTIMIZERS)
        p["learning_rate"] = v.real(
            _OWNER, "learning_rate", self.learning_rate, low=0, low_open=True
        )
        p["schedule"] = v.choice(_OWNER, "schedule", self.schedule, SCHEDULES, allow_none=True)
        p["l2"] = v.real(_OWNER, "l2", self.l2, low=0)
        p["epochs"] = v.integer(_OWNER, "epochs", self.epochs, low=1)
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            p["batch_size"] = "auto"
        else:
            p["batch_size"] = v.integer(
                _OWNER, "batch_size", self.batch_size, low=1, allow_none=True, extra="'auto'"
            )
        p["sampling"] = v.choice(_OWNER, "sampling", self.sampling, SAMPLINGS)
        p["validation_fraction"] = v.real(
            _OWNER, "validation_fraction", self.validation_fraction, low=0, high=1, high_open=True
        )
        p["early_stopping"] = v.boolean(_OWNER, "early_stopping", self.early_stopping)
        p["tol"] = v.real(_OWNER, "tol", self.tol, low=0, allow_none=True)
        p["n_iter_no_change"] = v.integer(_OWNER, "n_iter_no_change", self.n_iter_no_change, low=0)
        p["max_fun"] = v.integer(_OWNER, "max_fun", self.max_fun, low=1)
        p["standardize"] = v.boolean(_OWNER, "standardize", self.standardize)
        p["n_ensemble"] = v.integer(_OWNER, "n_ensemble", self.n_ensemble, low=1)
        try:
            dt = np.dtype(self.dtype).name
        except TypeError:
            dt = None
        if dt not in _DTYPES:
            raise v.bad(_OWNER, "dtype", "a str among {'float32', 'float64'}", self.dtype)
        p["dtype"] = dt
        v.random_state(_OWNER, self.random_state)
        p["verbose"] = (
            int(self.verbose)
            if isinstance(self.verbose, bool)
            else v.integer(_OWNER, "verbose", self.verbose, low=0)
        )
        p["warm_start"] = v.boolean(_OWNER, "warm_start", self.warm_start)
        p["data_parallel"] = v.boolean(_OWNER, "data_parallel", self.data_parallel)
        if p["batch_size"] is not None and p["sampling"] == "full":
            raise v.bad(
                _OWNER,
                "sampling",
                "'shuffle' or 'bootstrap' when batch_size is set "
                "(batch_size=None trains full-batch)",
                self.sampling,
            )
        if p["early_stopping"] and p["validation_fraction"] == 0:
            p["validation_fraction"] = 0.1
        return p

    def _spec_cfg(self, p, n_in, n_out, n_train, *, early=True, n_real=None):
        spec = MLPSpec(
            (n_in, *p["hidden"], n_out),
            activation=p["activation"],
            init=p["init"],
            bias_init=p["bias_init"],
            key_scheme="split",
        )
        lbfgs = p["optimizer"] == "lbfgs"
        if p["batch_size"] is None or lbfgs:
            sampling, batch = "full", None
        else:
            size = _AUTO_BATCH if p["batch_size"] == "auto" else p["batch_size"]
            if p["sampling"] == "shuffle" and n_real is not None and size >= n_real:
                # One batch an epoch holds every row, the padding too (zero weight): the
                # same step for any row count of the bucket, so folds share an executable.
                size = n_train
            sampling, batch = p["sampling"], min(size, n_train)
        # scikit-learn's rule: stop after n_iter_no_change epochs without an improvement
        # of tol, on the validation loss with early stopping, else on the training loss
        # (L-BFGS has its own rule on the gradient and the objective's reduction).
        monitor, patience = "train", None
        if early and p["early_stopping"]:
            monitor, patience = "val", p["n_iter_no_change"] + 1
        elif early and p["tol"] is not None and not lbfgs:
            patience = p["n_iter_no_change"] + 1
        cfg = TrainConfig(
            epochs=p["epochs"],
            optimizer=p["optimizer"],
            schedule=p["schedule"] or "constant",
            batch_size=batch,
            sampling=sampling,
            record_every=1,
            patience=patience,
            monitor=monitor,
            tol=p["tol"] or 0.0,
            max_fun=p["max_fun"] if lbfgs else None,
        )
        return spec, cfg

    def _validate_xy(self, X, y, sample_weight, reset: bool):
        check_not_text("X", X)
        check_not_text("y", y)
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: checked below
            X, y = validate_data(
                self,
                X,
                y,
                reset=reset,
                multi_output=True,
                y_numeric=True,
                dtype=np.float64,
                accept_sparse=_SPARSE,
            )
        X = _dense(X)
        y = np.asarray(y, dtype=np.float64)  # y_numeric leaves integer targets as ints
        y_1d = y.ndim == 1
        y2 = y.reshape(-1, 1) if y_1d else y
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.ndim == 0:
                w = np.full(X.shape[0], float(w))
            owner = f"{_OWNER}.fit"
            if w.shape != (X.shape[0],):
                raise validate.bad(
                    owner,
                    "sample_weight",
                    f"a scalar or an array of shape {(X.shape[0],)}",
                    got=f"an array of shape {w.shape}",
                )
            if not np.all(np.isfinite(w)):
                raise validate.bad(owner, "sample_weight", "finite", got="NaN or infinite weights")
            if np.any(w < 0):
                raise validate.bad(
                    owner,
                    "sample_weight",
                    "non-negative",
                    got=f"the negative weight {float(w[w < 0][0])!r}",
                )
            if not np.any(w > 0):
                raise validate.bad(
                    owner, "sample_weight", "weights with a positive sum", got="all-zero weights"
                )
            # Zero-weight rows contribute nothing: drop them (exactly like removing them).
            keep = w > 0
            if not keep.all():
                X, y2, w = X[keep], y2[keep], w[keep]
            # Equal weights are the unweighted fit; keep its arithmetic identical.
            if np.all(w == w[0]):
                w = None
            else:
                # Only ratios matter (the loss divides by the weights' sum): rescale weights
                # whose sum would overflow, or that float32 would flush to zero.
                with np.errstate(over="ignore"):
                    total = np.float32(np.sum(w))
                if not np.isfinite(total) or w.min() < 1e-30:
                    w = w / w.max()
        return X, y2, w, y_1d

    # ------------------------------------------------------------ fitting

    def fit(
        self, X, y=None, sample_weight=None, *, callbacks=(), chunk_epochs=None, checkpoint=None
    ):
        """Fit the network (or ensemble) to ``X`` ``(n, d)`` and ``y`` ``(n,)``/``(n, k)``.

        ``X`` may instead be a ``jaxreg.stream.TableStream`` (with ``y`` None): a Parquet or
        CSV file larger than memory, streamed from disk every epoch (minibatches only; its
        held-out rows are the validation rows; callbacks and checkpoints come after every
        record point). A stream with text columns or missing values trains on its
        preprocessing's output: predict raw rows through
        ``sklearn.pipeline.make_pipeline(stream.preprocessor, model)``.

        Args:
          sample_weight: ``(n,)`` non-negative weights: each row's squared error counts in
            proportion to its weight (zero-weight rows are dropped); also weights the
            standardization statistics.
          callbacks: with ``chunk_epochs``, functions called with a
            ``jaxreg.runner.Progress`` (epoch, epochs, state, history, timings) after
            every chunk: a progress bar, a logger. With ``n_ensemble > 1`` the members
            advance together; ``progress.state`` and ``progress.history`` always carry the
            member axis first.
          chunk_epochs: run training in equal compiled chunks of this many epochs (it must
            divide ``epochs``); one compilation, and the result equals the unchunked run
            exactly.
          checkpoint: a ``jaxreg.checkpoint.Checkpointer`` (needs ``chunk_epochs``): writes
            checkpoints as training goes and, with ``resume=True``, continues the run it
            holds; the result equals an uninterrupted run exactly.

        Returns:
          self.
        """
        return self._fit(
            X,
            y,
            sample_weight,
            incremental=False,
            callbacks=callbacks,
            chunk_epochs=chunk_epochs,
            checkpoint=checkpoint,
        )

    def partial_fit(self, X, y, sample_weight=None):
        """Train one more epoch on ``(X, y)``, keeping the optimizer state between calls.

        The first call (or the first after ``fit``) starts from ``params_`` when fitted,
        else from fresh weights, and fits the scalers on this batch when the model is new.
        Later calls continue with the same scalers, optimizer state (e.g. Adam's moments)
        and epoch counter, so minibatch orders and the schedule (over ``epochs``) move on.
        No validation split or early stopping is done here. ``loss_curve_`` gains one
        value per call and ``n_iter_`` counts the epochs.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(
        self,
        X,
        y,
        sample_weight,
        *,
        incremental: bool,
        callbacks=(),
        chunk_epochs=None,
        checkpoint=None,
    ):
        """``fit`` (``incremental=False``; from ``params_`` with ``warm_start``) and
        ``partial_fit`` (``incremental=True``: one epoch resumed from the saved state)."""
        p = self._checked()
        from jaxreg.stream import TableStream

        if isinstance(X, TableStream):
            if incremental or y is not None or sample_weight is not None:
                raise validate.bad(
                    f"{_OWNER}.fit",
                    "y",
                    "None when X is a TableStream (its targets are columns of the file; "
                    "streaming has no partial_fit or sample weights)",
                    "an array" if y is not None else sample_weight,
                )
            return self._fit_stream(X, p, callbacks, checkpoint)
        fitted = hasattr(self, "params_")
        continuing = fitted and (incremental or p["warm_start"])
        targets = _target_names(y)
        X, y2, w, y_1d = self._validate_xy(X, y, sample_weight, reset=not continuing)
        if p["hidden"] == "auto":
            p["hidden"] = self._spec.layer_sizes[1:-1] if continuing else auto_hidden(*X.shape)
        callbacks = tuple(callbacks)
        if chunk_epochs is not None:
            if (
                not validate.is_int(chunk_epochs)
                or chunk_epochs < 1
                or (p["epochs"] % chunk_epochs)
            ):
                raise validate.bad(
                    f"{_OWNER}.fit",
                    "chunk_epochs",
                    f"a positive int that divides epochs={p['epochs']}",
                    chunk_epochs,
                )
            chunk_epochs = int(chunk_epochs)
        if (callbacks or checkpoint is not None) and chunk_epochs is None:
            raise validate.bad(
                f"{_OWNER}.fit",
                "chunk_epochs",
                "an int when callbacks or a checkpoint are given",
                chunk_epochs,
            )
        if continuing:
            y_1d = self._y_1d
            m = self._params_stack[0].W.shape[0]
            if y2.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"y has {y2.shape[1]} outputs, but MLPRegressor is expecting "
                    f"{self.n_outputs_} outputs as input."
                )
            if not incremental and (
                self._spec.layer_sizes[1:-1] != p["hidden"]
                or self._spec.activation != p["activation"]
                or m != p["n_ensemble"]
                or self._dtype != p["dtype"]
            ):
                raise validate.bad(
                    _OWNER,
                    "warm_start",
                    "False to fit a network whose "
                    "outputs, hidden_layer_sizes, activation, n_ensemble or "
                    "dtype differ from the fitted one's (warm_start=True "
                    "continues the fitted network)",
                    self.warm_start,
                )
        else:
            m = p["n_ensemble"]
        n = X.shape[0]
        if incremental:
            seed = self._seed if fitted else training_split(0, 0.0, self.random_state)[0]
            tr_idx, val_idx = np.arange(n), np.zeros(0, dtype=int)
        else:
            frac = p["validation_fraction"]
            if frac > 0 and n - int(np.ceil(frac * n)) < 1:
                raise validate.bad(
                    _OWNER,
                    "validation_fraction",
                    f"small enough to leave training rows of the {n} samples (or pass more rows)",
                    frac,
                )
            seed, tr_idx, val_idx = training_split(n, frac, self.random_state)
        x_tr, y_tr = X[tr_idx], y2[tr_idx]
        w_tr = None if w is None else w[tr_idx]
        if w_tr is not None and np.all(w_tr == w_tr[0]):
            w_tr = None
        if continuing:
            x_sc, y_sc, dtype = self.x_scaler_, self.y_scaler_, self._dtype
        else:
            x_sc, y_sc = self._scalers(x_tr, y_tr, w_tr, p["standardize"], targets)
            dtype = p["dtype"]
        # Rows are padded to a bucket size (zero weight, never sampled): fits on row counts
        # of one bucket (cross-validation folds, partial_fit batches) share executables.
        placement = runner.placement_for(m, data_axis=0) if p["data_parallel"] else None
        k = 1 if placement is None else placement.data
        # Data-parallel: buckets are multiples of the data axis, so the runner adds no rows.
        n_pad = _round_up(bucket_rows(len(tr_idx)), k)
        spec, cfg = self._spec_cfg(
            p, X.shape[1], y2.shape[1], n_pad, early=not incremental, n_real=len(tr_idx)
        )
        if continuing:
            spec = self._spec
        hp = Hparams(learning_rate=p["learning_rate"], l2=p["l2"])
        has_val = len(val_idx) > 0
        with _x64(dtype):
            jdt = jnp.dtype(dtype)
            fx, fy = self._standardizers(x_sc, y_sc, dtype, targets)
            data = _padded_dataset(
                fx(x_tr),
                fy(y_tr),
                w_tr,
                fx(X[val_idx]) if has_val else None,
                fy(y2[val_idx]) if has_val else None,
                n_pad,
                jdt,
                multiple=k,
            )
            keys = _member_keys(seed, m)
            params = resume = None
            state = getattr(self, "_state", None) if incremental else None
            if state is not None and self._state_cfg == cfg:
                resume = state
            elif continuing:
                params = tuple(
                    Layer(
                        jax.device_put(np.asarray(layer.W, jdt)),
                        jax.device_put(np.asarray(layer.b, jdt)),
                    )
                    for layer in self._params_stack
                )
            if checkpoint is not None:
                template = runner.state_template(spec, cfg, data, hp, m)
                resume = (
                    checkpoint.start(keys, template, _fingerprint(X, y2, w, p, spec, cfg)) or resume
                )
                callbacks = (*callbacks, checkpoint)
            out = runner.run(
                spec,
                cfg,
                data,
                hp,
                keys,
                params=params,
                resume=resume,
                chunk_epochs=1 if incremental else chunk_epochs,
                n_epochs=1 if incremental else None,
                callbacks=callbacks,
                placement=placement,
            )
            result = _to_host(out.result)
        if incremental:
            # The state stays on the device for the next call; the history is host data.
            assert out.resume is not None  # a chunked run hands its final state back
            state, history = out.resume
            self._state = (state, jax.tree.map(lambda a: np.asarray(a)[:, :0], history))
            self._state_cfg = cfg
            result = result._replace(
                history=jax.tree.map(lambda a: a[:, -1:], history),
                epochs_run=np.ones_like(result.epochs_run),
            )
        else:
            self._state = None  # partial_fit restarts its optimizer state after a fit
        self._store_result(
            result,
            out.timings,
            spec,
            cfg,
            x_sc,
            y_sc,
            y_1d,
            dtype,
            continuing,
            has_val,
            incremental,
        )
        self._seed = seed
        if not incremental:
            _warn_unconverged(result, cfg)
        if not continuing:
            if targets is not None and len(targets) == self.n_outputs_:
                self.target_names_in_ = targets
            elif hasattr(self, "target_names_in_"):
                del self.target_names_in_
        if p["verbose"]:
            print(
                f"MLPRegressor: {self.n_iter_} epochs, final training MSE "
                f"{self.loss_curve_[-1]:.6g}, compile {self.compile_seconds_:.3f} s, "
                f"run {self.run_seconds_:.3f} s"
            )
        return self

    def _fit_stream(self, stream, p, callbacks, checkpoint):
        """``fit`` on a table streamed from disk (``jaxreg.stream.TableStream``): one pass
        for the scalers, then minibatch epochs read from the file (``runner.run_stream``);
        its held-out rows (by a hash of the row index) are the validation rows."""
        if p["batch_size"] is None or p["optimizer"] == "lbfgs" or p["sampling"] != "shuffle":
            raise validate.bad(
                _OWNER,
                "batch_size",
                "an int or 'auto' with sampling='shuffle' and a first-order optimizer when "
                "fitting a TableStream (a streamed table trains by minibatches)",
                self.batch_size,
            )
        multi = jax.process_count() > 1  # then always data-parallel, each its share
        for name, off in (
            ("dtype", p["dtype"] == "float32"),
            ("warm_start", not p["warm_start"]),
            ("data_parallel", multi or not p["data_parallel"]),
        ):
            if not off:
                raise validate.bad(
                    _OWNER,
                    name,
                    ("'float32'" if name == "dtype" else "False")
                    + " when fitting a TableStream (not supported when streaming yet)",
                    getattr(self, name),
                )
        if multi:
            stream.process_index, stream.process_count = jax.process_index(), jax.process_count()
        stats = stream.scan(runner.gather_processes)
        if p["hidden"] == "auto":
            p["hidden"] = auto_hidden(stats.n_rows, len(stream.feature_names))
        x_sc, y_sc = stream.scalers(p["standardize"])
        d, k = len(stream.feature_names), len(stream.targets)
        spec, cfg = self._spec_cfg(p, d, k, stats.n_train, early=True)
        if cfg.patience is not None and cfg.monitor == "val" and stats.n_val == 0:
            cfg = dataclasses.replace(cfg, patience=None)  # nothing held out to watch
        hp = Hparams(learning_rate=p["learning_rate"], l2=p["l2"])
        seed = training_split(0, 0.0, self.random_state)[0]
        keys = _member_keys(seed, p["n_ensemble"])
        callbacks = tuple(callbacks)
        resume = None
        mean = np.concatenate([x_sc.mean, y_sc.mean])
        scale = np.concatenate([x_sc.scale, y_sc.scale])

        def transform(values):
            z = (values - mean) / scale
            return z[:, :d].astype(np.float32), z[:, d:].astype(np.float32)

        if checkpoint is not None:
            fingerprint = {
                "stream": str(stream.path),
                "rows": stats.n_rows,
                "val_fraction": stream.val_fraction,
                "test_fraction": stream.test_fraction,
                "split_seed": stream.seed,
                "params": {key: repr(v) for key, v in sorted(p.items())},
                "spec": repr(spec),
                "cfg": repr(cfg),
            }
            xs, ys = transform(np.concatenate([stats.x_sample, stats.y_sample], axis=1)[:1])
            template = runner.state_template(spec, cfg, Dataset(xs, ys), hp, p["n_ensemble"])
            resume = checkpoint.start(keys, template, fingerprint)
            callbacks = (*callbacks, checkpoint)
        out = runner.run_stream(
            spec, cfg, stream, hp, keys, transform, resume=resume, callbacks=callbacks
        )
        result = _to_host(out.result)
        targets = list(stream.targets)
        self.n_features_in_ = d
        self.feature_names_in_ = np.asarray(stream.feature_names, dtype=object)
        self._store_result(
            result,
            out.timings,
            spec,
            cfg,
            x_sc,
            y_sc,
            k == 1,
            "float32",
            False,
            stats.n_val > 0,
            False,
        )
        self._seed = seed
        self._state = None
        _warn_unconverged(result, cfg)
        self.target_names_in_ = targets
        self.n_rows_streamed_ = stats.n_rows
        if p["verbose"]:
            print(
                f"MLPRegressor: {self.n_iter_} epochs streamed from {stream.path.name}, "
                f"compile {self.compile_seconds_:.3f} s, run {self.run_seconds_:.3f} s"
            )
        return self

    def _scalers(self, x, y, w, enabled, targets):
        names = getattr(self, "feature_names_in_", None)
        return (
            Standardizer.fit(x, weights=w, enabled=enabled, what="X", names=names),
            Standardizer.fit(
                y,
                weights=w,
                enabled=enabled,
                what="y",
                names=targets if targets and len(targets) == y.shape[1] else None,
            ),
        )

    def _standardizers(self, x_sc, y_sc, dtype, targets):
        """Functions standardizing X and y into the training dtype, refusing (naming the
        column) values that the dtype cannot represent."""
        names = getattr(self, "feature_names_in_", None)
        t_names = targets if targets and len(targets) == np.size(y_sc.mean) else None

        def fx(a):
            return x_sc.transform_checked(a, dtype, what="X", names=names)

        def fy(a):
            return y_sc.transform_checked(a, dtype, what="y", names=t_names)

        return fx, fy

    def _store_result(
        self, result, timings, spec, cfg, x_sc, y_sc, y_1d, dtype, continuing, has_val, incremental
    ):
        """The fitted attributes from a run's result (model axis first); a continued run
        (warm start, partial_fit) adds its epochs and loss curves to the earlier ones."""
        sq = np.asarray(y_sc.scale, np.float64) ** 2
        n_run = int(np.asarray(result.epochs_run).max())
        hist = result.history
        train = np.mean(np.asarray(hist.train_mse, np.float64) * sq, axis=-1).mean(axis=0)
        val = None
        if has_val:
            val = np.mean(np.asarray(hist.val_mse, np.float64) * sq, axis=-1).mean(axis=0)
        # Early stopping: members that stopped record NaN afterwards; keep trained epochs.
        keep = np.asarray(hist.epoch)[0] < n_run if not incremental else slice(None)
        train = train[keep]
        val = None if val is None else val[keep]
        best = np.asarray(result.best_epoch).reshape(-1).astype(int)
        params = tuple(
            Layer(np.asarray(layer.W), np.asarray(layer.b)) for layer in result.best_params
        )
        if continuing:
            train = np.concatenate([self.loss_curve_, train])
            if incremental:
                val = self.validation_loss_curve_
            elif val is not None and self.validation_loss_curve_ is not None:
                val = np.concatenate([self.validation_loss_curve_, val])
            n_run += self.n_iter_
            best = np.full_like(best, n_run) if incremental else best + self.n_iter_
        self._spec = spec
        self.hidden_layer_sizes_ = tuple(int(w) for w in spec.layer_sizes[1:-1])
        self._cfg = cfg
        self._dtype = dtype
        self._y_1d = y_1d
        self._params_stack = params
        self.x_scaler_ = x_sc
        self.y_scaler_ = y_sc
        self.n_outputs_ = spec.n_outputs
        self.params_ = (
            params
            if params[0].W.shape[0] > 1
            else tuple(Layer(layer.W[0], layer.b[0]) for layer in params)
        )
        self.loss_curve_ = [float(v) for v in train]
        self.validation_loss_curve_ = None if val is None else [float(v) for v in val]
        self.best_epoch_ = int(best[0]) if best.size == 1 else best
        self.n_iter_ = int(n_run)
        self.compile_seconds_ = float(timings.compile_seconds)
        self.run_seconds_ = float(timings.run_seconds)

    # ------------------------------------------------------------ prediction

    def _predict_members(self, X) -> np.ndarray:
        """Member predictions in the standardized space, ``(M, n, k)`` float64."""
        check_is_fitted(self, "params_")
        check_not_text("X", X)
        X = _dense(validate_data(self, X, reset=False, dtype=np.float64, accept_sparse=_SPARSE))
        # Evaluated in float64 (x64 only inside this block) whatever the training dtype:
        # a float32 matrix product rounds differently for different numbers of rows, and
        # a row's prediction must not depend on the other rows it is predicted with.
        # Rows are padded to a power of two (at least 16) so that predictions on batches
        # of different sizes share a compiled forward pass; the padding is sliced off.
        # Beyond PREDICT_CHUNK rows they go in chunks of that many (a multiple of the
        # forward pass's own blocks, so each row meets the same computation): padding
        # 10M rows to 2**24 cost 68% more work and a copy of the whole table.
        n = X.shape[0]
        if n > PREDICT_CHUNK:
            return np.concatenate(
                [self._members_of(X[i : i + PREDICT_CHUNK]) for i in range(0, n, PREDICT_CHUNK)],
                axis=1,
            )
        return self._members_of(X)

    def _members_of(self, X) -> np.ndarray:
        """``_predict_members`` of at most ``PREDICT_CHUNK`` validated rows."""
        n = X.shape[0]
        size = max(16, 1 << (n - 1).bit_length())
        with jax.enable_x64(True):
            x = jax.device_put(pad_rows(np.asarray(self.x_scaler_.transform(X), np.float64), size))
            params = tuple(
                Layer(
                    jax.device_put(np.asarray(a.W, np.float64)),
                    jax.device_put(np.asarray(a.b, np.float64)),
                )
                for a in self._params_stack
            )
            z = apply_members(params, x, self._spec.activation)
            return np.asarray(z, np.float64)[:, :n]

    def predict(self, X, return_std: bool = False):
        """Predict ``(n,)`` (1-D y at fit) or ``(n, k)``; the ensemble mean.

        With ``return_std=True`` also returns the members' standard deviation (zeros for a
        single model or identical members), same shape.
        """
        z = self._predict_members(X)
        mean = self.y_scaler_.inverse(z.mean(axis=0))
        if self._y_1d:
            mean = mean[:, 0]
        if not return_std:
            return mean
        # Spread from deviations to the first member (the shifted-data variance), so
        # identical members give exactly 0 however the mean rounds.
        d = z - z[0]
        var = np.maximum(np.mean(d**2, axis=0) - np.mean(d, axis=0) ** 2, 0.0)
        std = self.y_scaler_.inverse_scale(np.sqrt(var))
        return mean, (std[:, 0] if self._y_1d else std)

    # ------------------------------------------------------------ persistence

    def save(self, path, *, overwrite: bool = True):
        """Write the fitted model to the folder ``path`` (safetensors + JSON, atomic).

        With ``overwrite=True`` (as Keras's ``Model.save``) a jaxreg model already at ``path``
        is replaced atomically; anything else there is refused untouched.
        """
        store.save_model_document(path, self.document(), overwrite=overwrite)
        return path

    def document(self, run: dict | None = None, *, preprocessor=None) -> store.ModelDocument:
        """The fitted model as a ``jaxreg.store.ModelDocument`` (in memory, checked), with
        ``run`` (how it was made: data, split, metrics) recorded beside it, and the fitted
        ``TablePreprocessor`` in front of it, if any (stored as plain data)."""
        check_is_fitted(self, "params_")
        features = getattr(self, "feature_names_in_", None)
        prep = None
        if preprocessor is not None:
            check_is_fitted(preprocessor, "transformer_")
            if preprocessor.n_features_out_ != self.n_features_in_:
                raise ValueError(
                    f"The preprocessor gives {preprocessor.n_features_out_} column(s), but "
                    f"the network was fitted on {self.n_features_in_}."
                )
            prep = preprocessor.to_dict()
            features = preprocessor.get_feature_names_out() if features is None else features
        params = self.get_params()
        if not isinstance(params["random_state"], numbers.Integral | type(None)):
            params["random_state"] = None
        params["hidden_layer_sizes"] = list(self._spec.layer_sizes[1:-1])
        n_out = self.n_outputs_
        targets = getattr(self, "target_names_in_", None)
        metadata = {
            "estimator": "MLPRegressor",
            "y_ndim": 1 if self._y_1d else 2,
            "loss_curve": self.loss_curve_,
            "validation_loss_curve": self.validation_loss_curve_,
            "best_epoch": np.asarray(self.best_epoch_).tolist(),
            "n_iter": self.n_iter_,
            "compile_seconds": self.compile_seconds_,
            "run_seconds": self.run_seconds_,
            "train_config": {
                "epochs": self._cfg.epochs,
                "optimizer": self._cfg.optimizer,
                "schedule": self._cfg.schedule,
                "batch_size": self._cfg.batch_size,
                "sampling": self._cfg.sampling,
                "patience": self._cfg.patience,
                "monitor": self._cfg.monitor,
                "tol": self._cfg.tol,
                "max_fun": self._cfg.max_fun,
            },
        }
        return store.build_document(
            self._spec,
            self._params_stack,
            self.x_scaler_,
            self.y_scaler_,
            config=params,
            feature_names=features,
            target_names=targets if targets is not None and len(targets) == n_out else None,
            metadata=metadata,
            y_ndim=1 if self._y_1d else 2,
            run=run,
            preprocessing=prep,
        )


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _padded_dataset(x, y, w, x_val, y_val, n_pad: int, dtype, multiple: int = 1) -> Dataset:
    """Training rows padded to ``n_pad`` with zero weight (``Dataset.n`` real rows) and
    validation rows padded to their own bucket, weighted 1 (real) and 0 (padding).

    Arrays are cast on the host and only copied to the device: a device-side cast would
    compile a small program for every new shape."""
    dt = np.dtype(dtype)

    def put(a, size):
        return jax.device_put(pad_rows(np.asarray(a, dt), size))

    n = x.shape[0]
    x_v = y_v = w_v = None
    if x_val is not None:
        size = _round_up(bucket_rows(x_val.shape[0]), multiple)
        x_v, y_v, w_v = put(x_val, size), put(y_val, size), put(np.ones(x_val.shape[0]), size)
    weights = np.ones(n) if w is None else w
    return Dataset(
        put(x, n_pad),
        put(y, n_pad),
        x_v,
        y_v,
        put(weights, n_pad),
        jax.device_put(np.int32(n)),
        w_v,
    )


def _warn_unconverged(result, cfg: TrainConfig) -> None:
    """scikit-learn's ``ConvergenceWarning`` when a stopping rule was set and a member
    reached the epoch (or L-BFGS's evaluation) limit before meeting it."""
    if cfg.patience is None and cfg.optimizer != "lbfgs":
        return
    converged = np.asarray(result.converged).reshape(-1)
    if converged.all():
        return
    members = (
        f" ({int((~converged).sum())} of {converged.size} members)" if converged.size > 1 else ""
    )
    if cfg.optimizer == "lbfgs":
        msg = (
            f"lbfgs failed to converge{members}: it reached epochs={cfg.epochs} iterations "
            f"or max_fun={cfg.max_fun} function evaluations before the gradient fell to "
            f"tol={cfg.tol} or the loss stopped decreasing. Increase epochs or max_fun."
        )
    else:
        msg = (
            f"Stochastic Optimizer: Maximum iterations ({cfg.epochs}) reached and the "
            f"optimization hasn't converged yet{members}."
        )
    warnings.warn(msg, ConvergenceWarning, stacklevel=4)


def _target_names(y):
    cols = getattr(y, "columns", None)
    if cols is not None:
        return [str(c) for c in cols]
    name = getattr(y, "name", None)
    return None if name is None or not hasattr(y, "to_numpy") else [str(name)]


def _parts(model):
    """``(preprocessor or None, MLPRegressor)`` of a model ``save`` accepts."""
    from sklearn.pipeline import Pipeline

    from jaxreg.preprocess import TablePreprocessor

    if isinstance(model, MLPRegressor):
        return None, model
    steps = model.steps if isinstance(model, Pipeline) else None
    if (
        steps is not None
        and len(steps) == 2
        and isinstance(steps[0][1], TablePreprocessor)
        and isinstance(steps[1][1], MLPRegressor)
    ):
        return steps[0][1], steps[1][1]
    raise ValueError(
        "jaxreg.save takes a fitted MLPRegressor or a Pipeline of a TablePreprocessor and an "
        f"MLPRegressor. Got {type(model).__name__}."
    )


def document(model, run: dict | None = None) -> store.ModelDocument:
    """The ``ModelDocument`` of an ``MLPRegressor`` or of a ``Pipeline`` of a
    ``TablePreprocessor`` and an ``MLPRegressor`` (the preprocessing stored as plain data)."""
    prep, net = _parts(model)
    return net.document(run, preprocessor=prep)


def save(model, path, *, overwrite: bool = True):
    """Save an ``MLPRegressor``, or a ``Pipeline`` of a ``TablePreprocessor`` and an
    ``MLPRegressor`` (``make_pipeline(TablePreprocessor(), MLPRegressor())``), to the folder
    ``path``: atomic, no pickle; ``jaxreg.load`` gives the same kind of object back."""
    store.save_model_document(path, document(model), overwrite=overwrite)
    return path


def load(path):
    """Load a model folder written by ``jaxreg.save`` (or ``MLPRegressor.save``, or
    ``jaxreg fit``).

    Returns a fitted ``MLPRegressor``; when the model was saved with its preprocessing (a
    pipeline, or ``jaxreg fit`` on a table), a fitted ``Pipeline`` of the rebuilt
    ``TablePreprocessor`` and the ``MLPRegressor``, which predicts from a raw
    ``DataFrame`` (``predict(X, return_std=True)`` passes through). Predictions equal the
    saved model's bit for bit. Raises ``FileNotFoundError`` or ``ValueError`` naming the
    problem (see ``jaxreg.store.load_model``).
    """
    saved = store.load_model(path)
    model = _network(saved)
    if saved.preprocessor is None:
        return model
    from sklearn.pipeline import Pipeline

    return Pipeline([("tablepreprocessor", saved.preprocessor), ("mlpregressor", model)])


def _network(saved: store.SavedModel) -> MLPRegressor:
    cfg = dict(saved.config)
    valid = MLPRegressor().get_params()
    params = {k: v for k, v in cfg.items() if k in valid}
    if "hidden_layer_sizes" in params:
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    params["hidden_layer_sizes"] = saved.spec.layer_sizes[1:-1]
    params["activation"] = saved.spec.activation
    params["n_ensemble"] = saved.n_ensemble
    params["dtype"] = np.asarray(saved.params[0].W).dtype.name
    model = MLPRegressor(**params)
    meta = saved.metadata
    spec = saved.spec
    model._spec = spec
    model.hidden_layer_sizes_ = tuple(int(w) for w in spec.layer_sizes[1:-1])
    t = meta.get("train_config") or {}
    try:
        model._cfg = TrainConfig(
            epochs=int(t.get("epochs", model.epochs)),
            optimizer=t.get("optimizer", "adam"),
            schedule=t.get("schedule", "constant"),
            batch_size=t.get("batch_size"),
            sampling=t.get("sampling", "full"),
            patience=t.get("patience"),
            monitor=t.get("monitor", "val"),
            tol=float(t.get("tol", 0.0)),
            max_fun=t.get("max_fun"),
        )
    except (TypeError, ValueError):
        model._cfg = TrainConfig()
    model._dtype = params["dtype"]
    model._y_1d = saved.y_ndim == 1
    model._params_stack = tuple(Layer(np.asarray(a.W), np.asarray(a.b)) for a in saved.params)
    model._seed = 0
    model._state = None
    model.x_scaler_ = Standardizer(
        np.asarray(saved.x_scaler.mean, np.float64), np.asarray(saved.x_scaler.scale, np.float64)
    )
    model.y_scaler_ = Standardizer(
        np.asarray(saved.y_scaler.mean, np.float64), np.asarray(saved.y_scaler.scale, np.float64)
    )
    model.n_features_in_ = spec.n_inputs
    model.n_outputs_ = spec.n_outputs
    if saved.feature_names is not None:
        model.feature_names_in_ = np.asarray(saved.feature_names, dtype=object)
    if saved.target_names is not None:
        model.target_names_in_ = list(saved.target_names)
    stack = model._params_stack
    model.params_ = stack if saved.n_ensemble > 1 else tuple(Layer(a.W[0], a.b[0]) for a in stack)
    model.loss_curve_ = list(meta.get("loss_curve") or [])
    vc = meta.get("validation_loss_curve")
    model.validation_loss_curve_ = None if vc is None else list(vc)
    best = meta.get("best_epoch", 0)
    model.best_epoch_ = best if not isinstance(best, list) else np.asarray(best)
    model.n_iter_ = int(meta.get("n_iter", 0))
    model.compile_seconds_ = float(meta.get("compile_seconds", 0.0))
    model.run_seconds_ = float(meta.get("run_seconds", 0.0))
    return model
