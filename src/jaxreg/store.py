"""Saved models: a folder with ``weights.safetensors`` and ``model.json``. Rank 3.

Layout of a model folder::

    MODEL_DIR/
      weights.safetensors   layers.{i}.W (M, fan_in, fan_out), layers.{i}.b (M, 1, fan_out)
      model.json            format, format_version, jaxreg_version, spec, scalers,
                            config, feature/target names, n_ensemble, metadata, checksum

Ensemble members are stacked on the leading axis ``M`` (``M = 1`` for a single model).
Nothing is pickled: weights are safetensors (read with ``safetensors.numpy``) and the rest
is JSON, so loading a model never executes code. ``save_model`` writes a temporary sibling
folder, fsyncs it and renames it into place, so a crash never leaves a half-written model.
``load_model`` refuses, naming the problem, a missing folder or file, a folder that is not
a jaxreg model, a newer format version, a truncated or corrupted weights file (the JSON
holds the weights' SHA-256), shapes that disagree with the spec, and non-finite values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import uuid
from typing import Any, NamedTuple

import numpy as np

from jaxreg import __version__
from jaxreg.data import Standardizer
from jaxreg.model import Layer, MLPSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "META_FILE", "WEIGHTS_FILE", "SavedModel",
           "is_model_dir", "load_model", "save_model"]

FORMAT = "jaxreg-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"
_DTYPES = ("float32", "float64")


class SavedModel(NamedTuple):
    """A loaded model (host NumPy arrays).

    ``params`` is a tuple of ``Layer`` whose arrays have a leading member axis of length
    ``n_ensemble``: ``W`` ``(M, fan_in, fan_out)``, ``b`` ``(M, 1, fan_out)``.
    """

    spec: MLPSpec
    params: tuple[Layer, ...]
    x_scaler: Standardizer
    y_scaler: Standardizer
    config: dict
    feature_names: list[str] | None
    target_names: list[str] | None
    n_ensemble: int
    metadata: dict
    format_version: int
    jaxreg_version: str


def is_model_dir(path) -> bool:
    """True when ``path`` is a folder holding a ``model.json`` (cheap; no validation)."""
    p = pathlib.Path(path)
    return p.is_dir() and (p / META_FILE).is_file()


# ---------------------------------------------------------------- save


def save_model(path, spec: MLPSpec, params, x_scaler: Standardizer, y_scaler: Standardizer,
               *, config: dict | None = None, feature_names=None, target_names=None,
               metadata: dict | None = None) -> pathlib.Path:
    """Write a model folder at ``path`` atomically and return its path.

    Args:
      path: the model folder. An existing jaxreg model there is replaced (atomically:
        the new folder is complete before it takes the name); any other existing file or
        non-empty folder is refused.
      spec: the architecture.
      params: layers stacked on a leading member axis (``W`` ``(M, fan_in, fan_out)``),
        or one model's layers (``W`` ``(fan_in, fan_out)``), which is saved with ``M = 1``.
      x_scaler, y_scaler: the standardizers of inputs and targets.
      config: the training configuration (JSON-serializable values).
      feature_names, target_names: column names, or None.
      metadata: anything else JSON-serializable (e.g. the fitted loss curves).
    """
    from safetensors.numpy import save as st_save

    path = pathlib.Path(path)
    layers = _stack(params)
    _check_params(spec, layers, "params")
    dtype = np.asarray(layers[0].W).dtype
    if dtype.name not in _DTYPES:
        raise ValueError(f"params must be float32 or float64. Got dtype {dtype}.")
    m = int(layers[0].W.shape[0])
    tensors = {}
    for i, layer in enumerate(layers):
        tensors[f"layers.{i}.W"] = np.ascontiguousarray(layer.W, dtype=dtype)
        tensors[f"layers.{i}.b"] = np.ascontiguousarray(layer.b, dtype=dtype)
    for name, arr in tensors.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"Refusing to save non-finite weights: {name} holds NaN or inf.")
    blob = st_save(tensors, metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxreg_version": __version__,
        "dtype": dtype.name,
        "spec": _spec_to_json(spec),
        "n_ensemble": m,
        "x_scaler": _scaler_to_json(x_scaler, spec.n_inputs, "x_scaler"),
        "y_scaler": _scaler_to_json(y_scaler, spec.n_outputs, "y_scaler"),
        "config": dict(config or {}),
        "feature_names": _names(feature_names, spec.n_inputs, "feature_names"),
        "target_names": _names(target_names, spec.n_outputs, "target_names"),
        "metadata": dict(metadata or {}),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = json.dumps(meta, indent=2, allow_nan=False, default=_json_default)
    _atomic_write_dir(path, {WEIGHTS_FILE: blob, META_FILE: text.encode()})
    return path


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _stack(params) -> tuple[Layer, ...]:
    layers = tuple(Layer(np.asarray(p.W), np.asarray(p.b)) for p in params)
    if layers and layers[0].W.ndim == 2:
        layers = tuple(Layer(p.W[None], p.b[None]) for p in layers)
    return layers


def _spec_to_json(spec: MLPSpec) -> dict:
    d = dataclasses.asdict(spec)
    d["layer_sizes"] = list(spec.layer_sizes)
    return d


def _scaler_to_json(scaler: Standardizer, width: int, name: str) -> dict:
    mean = np.asarray(scaler.mean).reshape(-1)
    scale = np.asarray(scaler.scale).reshape(-1)
    if mean.shape != (width,) or scale.shape != (width,):
        raise ValueError(f"{name} must have {width} columns. Got mean {mean.shape} and "
                         f"scale {scale.shape}.")
    # float32 -> float64 -> repr -> float64 -> float32 is exact, so JSON keeps every bit.
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale],
            "dtype": mean.dtype.name}


def _names(names, width: int, what: str):
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != width:
        raise ValueError(f"{what} must list {width} names. Got {len(names)}.")
    return names


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_dir(path: pathlib.Path, files: dict[str, bytes]) -> None:
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"Cannot save a model to {str(path)!r}: it exists and is not a "
                             "folder.")
        if any(path.iterdir()) and not is_model_dir(path):
            raise ValueError(f"Cannot save a model to {str(path)!r}: the folder is not empty "
                             "and is not a jaxreg model; refusing to overwrite it.")
    tag = uuid.uuid4().hex[:12]
    tmp = parent / f".{path.name}.tmp-{tag}"
    old = parent / f".{path.name}.old-{tag}"
    tmp.mkdir()
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists():
            # A folder cannot be os.replace'd over a non-empty one: move the old model
            # aside first; the new one is complete on disk before it takes the name.
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise


# ---------------------------------------------------------------- load


def load_model(path) -> SavedModel:
    """Read and validate a model folder written by ``save_model``.

    Raises:
      FileNotFoundError: the folder, ``model.json`` or ``weights.safetensors`` is missing.
      ValueError: the folder is not a jaxreg model, was written by a newer format version,
        or its weights are truncated, corrupted, non-finite or disagree with its spec.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Model folder {str(path)!r} does not exist.")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a jaxreg model: a model is a folder with "
                         f"{META_FILE} and {WEIGHTS_FILE}, and this is a file.")
    meta_path, weights_path = path / META_FILE, path / WEIGHTS_FILE
    if not meta_path.is_file():
        if not weights_path.is_file():
            raise ValueError(f"{str(path)!r} is not a jaxreg model: it has no {META_FILE} "
                             f"and no {WEIGHTS_FILE}.")
        raise FileNotFoundError(f"Model folder {str(path)!r} is missing {META_FILE}.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(meta_path)!r} is not valid JSON ({exc}); the model is "
                         "corrupted.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a jaxreg model: {META_FILE} does not declare "
                         f"format {FORMAT!r}.")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{str(meta_path)!r} has an invalid format_version. Got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(f"Model {str(path)!r} has format version {version}, newer than this "
                         f"jaxreg ({__version__}) reads (up to {FORMAT_VERSION}); upgrade "
                         "jaxreg to load it.")
    missing = [k for k in ("spec", "n_ensemble", "x_scaler", "y_scaler", "weights_sha256",
                           "dtype") if k not in meta]
    if missing:
        raise ValueError(f"{str(meta_path)!r} is missing the field(s) {missing}; the model is "
                         "corrupted.")
    try:
        spec_d = dict(meta["spec"])
        spec_d["layer_sizes"] = tuple(spec_d["layer_sizes"])
        spec = MLPSpec(**spec_d)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{str(meta_path)!r} holds an invalid spec: {exc}") from None
    if not weights_path.is_file():
        raise FileNotFoundError(f"Model folder {str(path)!r} is missing {WEIGHTS_FILE}.")
    blob = weights_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["weights_sha256"]:
        raise ValueError(f"Weights file {str(weights_path)!r} is truncated or corrupted: its "
                         f"SHA-256 does not match the one recorded in {META_FILE} "
                         f"({len(blob)} bytes on disk).")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise ValueError(f"Weights file {str(weights_path)!r} is truncated or corrupted: "
                         f"{exc}") from None
    m = meta["n_ensemble"]
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"{str(meta_path)!r}: n_ensemble must be a positive integer. "
                         f"Got {m!r}.")
    n_layers = len(spec.layer_sizes) - 1
    expected = {f"layers.{i}.{p}" for i in range(n_layers) for p in "Wb"}
    if set(tensors) != expected:
        raise ValueError(f"Weights file {str(weights_path)!r} disagrees with the spec "
                         f"{spec.layer_sizes}: expected tensors {sorted(expected)}, found "
                         f"{sorted(tensors)}.")
    dtype = meta["dtype"]
    if dtype not in _DTYPES:
        raise ValueError(f"{str(meta_path)!r}: dtype must be one of {list(_DTYPES)}. "
                         f"Got {dtype!r}.")
    layers = tuple(Layer(tensors[f"layers.{i}.W"], tensors[f"layers.{i}.b"])
                   for i in range(n_layers))
    for name, arr in tensors.items():
        if arr.dtype.name != dtype:
            raise ValueError(f"Weights file {str(weights_path)!r}: {name} has dtype "
                             f"{arr.dtype}, but {META_FILE} says {dtype}.")
    _check_params(spec, layers, f"Weights file {str(weights_path)!r}", m=m)
    x_scaler = _scaler_from_json(meta["x_scaler"], spec.n_inputs, "x_scaler", meta_path)
    y_scaler = _scaler_from_json(meta["y_scaler"], spec.n_outputs, "y_scaler", meta_path)
    return SavedModel(
        spec=spec,
        params=layers,
        x_scaler=x_scaler,
        y_scaler=y_scaler,
        config=dict(meta.get("config") or {}),
        feature_names=meta.get("feature_names"),
        target_names=meta.get("target_names"),
        n_ensemble=m,
        metadata=dict(meta.get("metadata") or {}),
        format_version=version,
        jaxreg_version=str(meta.get("jaxreg_version", "unknown")),
    )


def _check_params(spec: MLPSpec, layers, what: str, m: int | None = None) -> None:
    sizes = spec.layer_sizes
    if len(layers) != len(sizes) - 1:
        raise ValueError(f"{what} has {len(layers)} layers, but the spec {sizes} has "
                         f"{len(sizes) - 1}.")
    if m is None:
        m = int(np.shape(layers[0].W)[0]) if np.ndim(layers[0].W) == 3 else -1
    for i, (layer, fan_in, fan_out) in enumerate(zip(layers, sizes[:-1], sizes[1:],
                                                     strict=True)):
        for name, arr, shape in (("W", layer.W, (m, fan_in, fan_out)),
                                 ("b", layer.b, (m, 1, fan_out))):
            if tuple(np.shape(arr)) != shape:
                raise ValueError(f"{what}: layers.{i}.{name} has shape {tuple(np.shape(arr))},"
                                 f" but the spec {sizes} with {m} member(s) needs {shape}.")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{what}: layers.{i}.{name} holds NaN or infinite values.")


def _scaler_from_json(d: Any, width: int, name: str, meta_path) -> Standardizer:
    try:
        dtype = np.dtype(d.get("dtype", "float32"))
        mean = np.asarray(d["mean"], dtype=np.float64)
        scale = np.asarray(d["scale"], dtype=np.float64)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{str(meta_path)!r} holds an invalid {name}: {exc}") from None
    if mean.shape != (width,) or scale.shape != (width,):
        raise ValueError(f"{str(meta_path)!r}: {name} must have {width} values for the spec. "
                         f"Got mean {mean.shape} and scale {scale.shape}.")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"{str(meta_path)!r}: {name} must be finite with positive scale.")
    if dtype.name not in _DTYPES:
        raise ValueError(f"{str(meta_path)!r}: {name} dtype must be one of {list(_DTYPES)}. "
                         f"Got {dtype.name!r}.")
    return Standardizer(mean.astype(dtype), scale.astype(dtype))

