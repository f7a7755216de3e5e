"""jaxreg: neural-network regression on JAX + Optax.

The public API is what ``__all__`` lists. Names are imported on first use (PEP 562), so
``import jaxreg`` (and ``jaxreg --help``) does not start JAX until something needs it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Dataset": "jaxreg.data",
    "Standardizer": "jaxreg.data",
    "lecture_data": "jaxreg.data",
    "Layer": "jaxreg.model",
    "MLPSpec": "jaxreg.model",
    "apply": "jaxreg.model",
    "init": "jaxreg.model",
    "n_params": "jaxreg.model",
    "Hparams": "jaxreg.optim",
    "LinearSGDRegressor": "jaxreg.linear",
    "sweep": "jaxreg.sweeps",
    "TrainConfig": "jaxreg.engine",
    "TrainResult": "jaxreg.engine",
    "make_train": "jaxreg.engine",
    "TrainingDivergedError": "jaxreg.errors",
    "Placement": "jaxreg.runner",
    "Timings": "jaxreg.runner",
    "fit": "jaxreg.runner",
    "fit_many": "jaxreg.runner",
    "run": "jaxreg.runner",
    "MLPRegressor": "jaxreg.estimator",
    "load": "jaxreg.estimator",
    "save": "jaxreg.estimator",
    "TablePreprocessor": "jaxreg.preprocess",
    "UnknownCategoryWarning": "jaxreg.preprocess",
    "predict_table": "jaxreg.tablepredict",
    "save_model": "jaxreg.store",
    "load_model": "jaxreg.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxreg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
