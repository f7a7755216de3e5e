"""Keras 3 on its JAX backend: ``Sequential`` of ``Dense`` layers, ``model.fit``.

Variants: ``keras-jit`` (``compile(jit_compile=True)``, the JAX backend's default: the
train step is one XLA computation) and ``keras-nojit`` (``jit_compile=False``: the step's
operations run one by one). The loss is ``"mse"``; GD is ``SGD(learning_rate)`` without
momentum; Adam is ``Adam(learning_rate, epsilon=1e-8)`` (Keras adds epsilon to the
uncorrected ``sqrt(v)``, Optax to the corrected one: a difference in the last digits).
Each run writes the initial weights (``set_weights``) and zeroes the optimizer's state
(its step counter and moments, the learning rate kept) before ``fit``.
"""

from __future__ import annotations

import os

import numpy as np
from common import ADAM_EPS

os.environ.setdefault("KERAS_BACKEND", "jax")


def versions() -> str:
    import keras

    return f"keras {keras.__version__} (backend {keras.backend.backend()})"


def _model(variant: str, opt: str, lr: float, sizes):
    import keras

    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(h, activation="tanh") for h in sizes[1:-1]]
    layers += [keras.layers.Dense(sizes[-1])]
    model = keras.Sequential(layers)
    if opt == "gd":
        optimizer = keras.optimizers.SGD(learning_rate=lr)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr, epsilon=ADAM_EPS)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=variant == "keras-jit")
    return model


def _reset(model, params) -> None:
    model.set_weights([a for w, b in params for a in (np.asarray(w), np.asarray(b))])
    for v in model.optimizer.variables:
        if not v.path.endswith("learning_rate"):
            v.assign(np.zeros(v.shape, v.dtype))


def _get(model):
    w = model.get_weights()
    return list(zip(w[0::2], w[1::2], strict=True))


class _Trainer:
    def __init__(self, fn, note=""):
        self.fn, self.note = fn, note

    def __call__(self, params, run_index: int = 0):
        return self.fn(params, run_index)

    def info(self) -> dict:
        return {"compile_s": None, "note": self.note}


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    model = _model(variant, opt, lr, sizes)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)

    def train(params, run_index=0):
        _reset(model, params)
        model.fit(x, y, batch_size=len(x), epochs=epochs, shuffle=False, verbose=0)
        return _get(model)

    return _Trainer(train, "fit(batch_size=n, epochs=E, verbose=0)")


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    import keras

    model = _model(variant, "adam", lr, sizes)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)

    def train(params, run_index=0):
        keras.utils.set_random_seed(seed * 1000 + run_index)  # fit's shuffle
        _reset(model, params)
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
        return _get(model)

    return _Trainer(train, "fit(shuffle=True, verbose=0)")
