"""PyTorch (``nn.Sequential`` of ``nn.Linear`` and ``nn.Tanh``, ``torch.optim``) and skorch
(``NeuralNetRegressor`` around the same module).

Variants:

- ``torch-eager``: the usual loop (``zero_grad``, ``backward``, ``step``), eager.
- ``torch-compile``: the same loop with the model wrapped in ``torch.compile`` (the first
  run includes compilation; backward and optimizer step stay eager).
- ``skorch``: ``NeuralNetRegressor(module, criterion=MSELoss, optimizer=SGD or Adam,
  train_split=None)``; each run re-``initialize()``-s the net (a fresh optimizer), copies
  the initial weights into ``module_`` and calls ``partial_fit``.

Threads: PyTorch's default (``torch.get_num_threads()``, all cores).
"""

from __future__ import annotations

import numpy as np
from common import ADAM_EPS, batches, epoch_orders


def versions() -> str:
    import torch

    out = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    try:
        import skorch

        out += f", skorch {skorch.__version__}"
    except ImportError:
        pass
    return out


def _module(sizes):
    from torch import nn

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _linears(module):
    from torch import nn

    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _set(module, params) -> None:
    """Copy ``(W (in, out), b)`` pairs into the module's ``nn.Linear`` layers, in place."""
    import torch

    with torch.no_grad():
        for lin, (w, b) in zip(_linears(module), params, strict=True):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(np.asarray(w).T)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b).reshape(-1)))


def _get(module):
    return [
        (lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy())
        for lin in _linears(module)
    ]


def _optimizer(opt: str, params, lr: float):
    import torch

    if opt == "gd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, eps=ADAM_EPS)


class _Trainer:
    def __init__(self, fn, note=""):
        self.fn, self.note = fn, note

    def __call__(self, params, run_index: int = 0):
        return self.fn(params, run_index)

    def info(self) -> dict:
        return {"compile_s": None, "note": self.note}


def full_batch(variant: str, opt: str, lr: float, epochs: int, x, y, sizes):
    import torch

    if variant == "skorch":
        return _skorch(opt, lr, epochs, len(x), x, y, sizes, seed=0, shuffle=False)
    module = _module(sizes)
    model = torch.compile(module) if variant == "torch-compile" else module
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y))

    def train(params, run_index=0):
        _set(module, params)
        optimizer = _optimizer(opt, module.parameters(), lr)
        for _ in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.mean((model(xt) - yt) ** 2)
            loss.backward()
            optimizer.step()
        return _get(module)

    return _Trainer(train, f"{torch.get_num_threads()} threads")


def minibatch(variant: str, lr: float, epochs: int, batch: int, x, y, sizes, seed: int):
    import torch

    if variant == "skorch":
        return _skorch("adam", lr, epochs, batch, x, y, sizes, seed=seed, shuffle=True)
    module = _module(sizes)
    model = torch.compile(module) if variant == "torch-compile" else module
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(x)

    def train(params, run_index=0):
        _set(module, params)
        optimizer = _optimizer("adam", module.parameters(), lr)
        for order in epoch_orders(seed, run_index, n, epochs):
            for idx in batches(torch.from_numpy(order), batch):
                optimizer.zero_grad(set_to_none=True)
                loss = torch.mean((model(xt[idx]) - yt[idx]) ** 2)
                loss.backward()
                optimizer.step()
        return _get(module)

    return _Trainer(train, f"{torch.get_num_threads()} threads; orders as Flax/Equinox")


def _skorch(opt, lr, epochs, batch, x, y, sizes, seed: int, shuffle: bool):
    import torch
    from skorch import NeuralNetRegressor

    net = NeuralNetRegressor(
        _module(sizes),
        criterion=torch.nn.MSELoss,
        optimizer=torch.optim.SGD if opt == "gd" else torch.optim.Adam,
        lr=lr,
        max_epochs=epochs,
        batch_size=batch,
        train_split=None,
        iterator_train__shuffle=shuffle,
        verbose=0,
        device="cpu",
    )
    if opt != "gd":
        net.set_params(optimizer__eps=ADAM_EPS)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)

    def train(params, run_index=0):
        torch.manual_seed(seed * 1000 + run_index)  # the DataLoader's shuffle
        net.initialize()  # a fresh optimizer (the module instance is kept)
        _set(net.module_, params)
        net.partial_fit(x, y)
        return _get(net.module_)

    return _Trainer(train, "train_split=None, verbose=0")
