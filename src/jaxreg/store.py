"""Saved models: a folder with one manifest (``model.json``) and the files it names. Rank 3.

Layout of a model folder (format version 2)::

    MODEL_DIR/
      model.json                    the manifest: format, version, the files below, the
                                    ``model`` section and its checksum, config, metadata, run
      weights-<16 hex>.safetensors  layers.{i}.W (M, fan_in, fan_out), layers.{i}.b (M, 1, fan_out)
      report-<16 hex>/              the report written with the model (optional)
      report -> report-<16 hex>     a link with a stable name to it

The ``model`` section holds everything that determines predictions: the spec, dtype,
member count, scalers, feature and target names, the shape of ``y`` and the weights'
SHA-256; ``checksum`` is the SHA-256 of its canonical JSON, so an edit to any of them (or to
the weights) is refused at load. Nothing is pickled: loading never executes code.

A save never deletes what jaxreg did not create and is atomic: the weights are written under
a content-addressed name, then ``model.json`` is replaced in one rename (the commit point),
then the files nothing names any more are removed (``jaxreg.files.commit``). A folder counts
as a jaxreg model only when its ``model.json`` declares jaxreg's format and a version.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any, NamedTuple

import numpy as np

from jaxreg import __version__, files
from jaxreg.data import Standardizer
from jaxreg.model import ACTIVATIONS, INITIALIZERS, Layer, MLPSpec
from jaxreg.preprocess import SCHEMA as _PREPROCESSING

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_FILE",
    "ModelDocument",
    "ModelWriter",
    "SavedModel",
    "build_document",
    "check_target",
    "is_model_dir",
    "load_model",
    "read_document",
    "save_model",
    "save_model_document",
]

FORMAT = "jaxreg-model"
FORMAT_VERSION = 2  # 2: manifest naming content-addressed files, checksum over the model
META_FILE = "model.json"
REPORT_LINK = "report"
_OWNED = re.compile(r"(weights-[0-9a-f]{16}\.safetensors|report-[0-9a-f]{16})")
_LEGACY = ("weights.safetensors", "run.json")  # format 1 (the report/ folder is handled apart)
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
    y_ndim: int = 2
    run: dict | None = None
    preprocessing: dict | None = None
    preprocessor: Any = None  # the fitted TablePreprocessor rebuilt from ``preprocessing``


class ModelDocument(NamedTuple):
    """A model ready to commit: the manifest (``doc``) and the weights file's bytes."""

    doc: dict
    weights: bytes
    saved: SavedModel


# ---------------------------------------------------------------- schema

_NUMBERS = {"type": "array", "items": {"type": "number"}}
_SCALER = {
    "type": "object",
    "required": ["mean", "scale", "dtype"],
    "properties": {"mean": _NUMBERS, "scale": _NUMBERS, "dtype": {"enum": list(_DTYPES)}},
}
_NAMES = {"type": ["array", "null"], "items": {"type": "string"}}
_SPEC = {
    "type": "object",
    "required": ["layer_sizes", "activation", "init", "bias_init", "key_scheme"],
    "properties": {
        "layer_sizes": {"type": "array", "minItems": 2, "items": {"type": "integer", "minimum": 1}},
        "activation": {"enum": sorted(ACTIVATIONS)},
        "init": {"enum": list(INITIALIZERS)},
        "gain": {"type": ["number", "null"], "exclusiveMinimum": 0},
        "bias_init": {"type": "string"},
        "key_scheme": {"type": "string"},
    },
    "additionalProperties": False,
}
_MODEL: dict[str, Any] = {
    "type": "object",
    "required": [
        "spec",
        "dtype",
        "n_ensemble",
        "x_scaler",
        "y_scaler",
        "feature_names",
        "target_names",
        "y_ndim",
        "weights_sha256",
    ],
    "properties": {
        "spec": _SPEC,
        "dtype": {"enum": list(_DTYPES)},
        "n_ensemble": {"type": "integer", "minimum": 1},
        "x_scaler": _SCALER,
        "y_scaler": _SCALER,
        "feature_names": _NAMES,
        "target_names": _NAMES,
        "y_ndim": {"enum": [1, 2]},
        "weights_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "preprocessing": {"anyOf": [{"type": "null"}, _PREPROCESSING]},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "format",
        "format_version",
        "jaxreg_version",
        "files",
        "model",
        "checksum",
        "config",
        "metadata",
    ],
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"type": "integer", "minimum": 1},
        "jaxreg_version": {"type": "string"},
        "files": {
            "type": "object",
            "required": ["weights"],
            "properties": {
                "weights": {"type": "string", "pattern": r"^weights-[0-9a-f]{16}\.safetensors$"},
                "report": {"type": ["string", "null"], "pattern": "^report-[0-9a-f]{16}$"},
            },
        },
        "model": _MODEL,
        "checksum": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "config": {"type": "object"},
        "metadata": {
            "type": "object",
            "properties": {
                "n_iter": {"type": "integer", "minimum": 0},
                "loss_curve": _NUMBERS,
                "validation_loss_curve": {"type": ["array", "null"], "items": {"type": "number"}},
                "compile_seconds": {"type": "number"},
                "run_seconds": {"type": "number"},
            },
        },
        "run": {"type": ["object", "null"]},
    },
}
# Format 1 (jaxreg 0.1): a flat document; its checksum covered the weights only.
_SCHEMA_V1 = {
    "type": "object",
    "required": [
        "format",
        "format_version",
        "spec",
        "n_ensemble",
        "x_scaler",
        "y_scaler",
        "weights_sha256",
        "dtype",
    ],
    "properties": {
        **{k: v for k, v in _MODEL["properties"].items() if k not in ("y_ndim", "weights_sha256")},
        "weights_sha256": {"type": "string"},
        "config": {"type": "object"},
        "metadata": SCHEMA["properties"]["metadata"],
    },
}


# ---------------------------------------------------------------- building a document


def build_document(
    spec: MLPSpec,
    params,
    x_scaler: Standardizer,
    y_scaler: Standardizer,
    *,
    config: dict | None = None,
    feature_names=None,
    target_names=None,
    metadata: dict | None = None,
    y_ndim: int = 2,
    run: dict | None = None,
    preprocessing: dict | None = None,
) -> ModelDocument:
    """Everything a save writes, built and checked in memory (nothing touches the disk).

    Args:
      spec: the architecture.
      params: layers stacked on a leading member axis (``W`` ``(M, fan_in, fan_out)``),
        or one model's layers (``W`` ``(fan_in, fan_out)``), which is saved with ``M = 1``.
      x_scaler, y_scaler: the standardizers of inputs and targets.
      config: the training configuration (JSON values).
      feature_names, target_names: column names, or None.
      metadata: anything else JSON-serializable (e.g. the fitted loss curves).
      y_ndim: 1 when predictions are 1-D (one target given as a vector), else 2.
      run: how the model was made (data file, split, metrics), or None.
      preprocessing: ``TablePreprocessor.to_dict()`` when the network's inputs come from a
        raw table (its output columns are the network's features), or None.
    """
    from safetensors.numpy import save as st_save

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
    blob = st_save(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(blob).hexdigest()
    model = {
        "spec": _spec_to_json(spec),
        "dtype": dtype.name,
        "n_ensemble": m,
        "x_scaler": _scaler_to_json(x_scaler, spec.n_inputs, "x_scaler"),
        "y_scaler": _scaler_to_json(y_scaler, spec.n_outputs, "y_scaler"),
        "feature_names": _names(feature_names, spec.n_inputs, "feature_names"),
        "target_names": _names(target_names, spec.n_outputs, "target_names"),
        "y_ndim": 1 if (y_ndim == 1 and spec.n_outputs == 1) else 2,
        "weights_sha256": digest,
    }
    if preprocessing is not None:  # absent otherwise: older documents keep their checksum
        model["preprocessing"] = preprocessing
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxreg_version": __version__,
        "files": {"weights": f"weights-{digest[:16]}.safetensors", "report": None},
        "model": model,
        "checksum": files.checksum(model),
        "config": dict(config or {}),
        "metadata": dict(metadata or {}),
        "run": None if run is None else dict(run),
    }
    text = files.dumps(doc, "the model document")  # every value JSON and finite, or named
    return ModelDocument(doc, blob, _saved(json.loads(text), tensors, "the model"))


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
        raise ValueError(
            f"{name} must have {width} columns. Got mean {mean.shape} and scale {scale.shape}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(
            f"{name} must have finite means and finite positive scales. Got mean "
            f"{mean.tolist()} and scale {scale.tolist()}."
        )
    # float32 -> float64 -> repr -> float64 -> float32 is exact, so JSON keeps every bit.
    return {
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "dtype": mean.dtype.name if mean.dtype.name in _DTYPES else "float64",
    }


def _names(names, width: int, what: str):
    if names is None:
        return None
    names = [str(n) for n in names]
    if len(names) != width:
        raise ValueError(f"{what} must list {width} names. Got {len(names)}.")
    return names


# ---------------------------------------------------------------- the target folder


def _manifest_version(path: pathlib.Path) -> int | None:
    """The format version when ``path`` holds a jaxreg model document, else None."""
    try:
        doc = files.load_json(path / META_FILE, "model document")
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return None
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return None
    return version


def is_model_dir(path) -> bool:
    """True when ``path`` is a folder whose ``model.json`` declares jaxreg's model format."""
    p = pathlib.Path(path)
    return p.is_dir() and _manifest_version(p) is not None


def check_target(path, *, overwrite: bool) -> bool:
    """Refuse a model path that a save must not touch; True when a model is there already.

    A path is fine when it does not exist, is an empty folder, or (with ``overwrite``) holds
    a jaxreg model. A file, a folder with anything else, or a model without ``overwrite`` is
    a ``ValueError`` and nothing is touched.
    """
    p = pathlib.Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise ValueError(f"Cannot save a model to {str(p)!r}: it is a file, not a folder.")
    if not p.exists() or (not (p / META_FILE).exists() and files.only_leftovers(p, _OWNED)):
        return False
    if not is_model_dir(p):
        raise ValueError(
            f"Cannot save a model to {str(p)!r}: the folder is not empty and is "
            f"not a jaxreg model; refusing to touch it (it has no valid "
            f"{META_FILE})."
        )
    if not overwrite:
        raise FileExistsError(
            f"{str(p)!r} already holds a jaxreg model; refusing to replace it without overwrite."
        )
    return True


class ModelWriter:
    """Write one model folder: check the target first, stage extras, commit last.

    ``with ModelWriter(path, overwrite=...) as w:`` checks the target (nothing is created
    when it is refused), creates the folder if needed, lets the caller stage a report
    (``w.stage_folder()``) and ``w.commit(document, report=...)``. Leaving the block with an
    error removes what was staged, and the folder when this writer created it and it is
    still empty: a failed save changes nothing.
    """

    def __init__(self, path, *, overwrite: bool = True) -> None:
        self.path = pathlib.Path(path)
        self.overwrite = overwrite
        self.created = False
        self._staging: files.Staging | None = None

    def __enter__(self) -> ModelWriter:
        check_target(self.path, overwrite=self.overwrite)
        try:
            self.path.mkdir(parents=True)
            self.created = True
        except FileExistsError:  # it was there, or a concurrent save just made it
            pass
        self._staging = files.Staging(self.path)
        return self

    def stage_folder(self) -> pathlib.Path:
        assert self._staging is not None, "use ModelWriter as a context manager"
        return self._staging.folder()

    def commit(self, document: ModelDocument, *, report: pathlib.Path | None = None) -> None:
        """Make ``document`` the folder's model (with ``report``, a staged folder)."""
        check_target(self.path, overwrite=True)  # again: something may have moved in
        doc = dict(document.doc)
        folders = {}
        if report is not None:
            name = f"report-{os.urandom(8).hex()}"
            doc["files"] = {**doc["files"], "report": name}
            folders[name] = report
        weights_name = doc["files"]["weights"]
        self._clear_legacy_report()
        files.commit(
            self.path,
            META_FILE,
            files.dumps(doc, "the model document"),
            files={weights_name: document.weights},
            folders=folders,
            owned=_OWNED,
            link=(REPORT_LINK, next(iter(folders))) if folders else None,
            legacy=_LEGACY,
        )

    def _clear_legacy_report(self) -> None:
        """Format 1 wrote ``report/`` as a folder of plain files: make room for the link."""
        old = self.path / REPORT_LINK
        if old.is_dir() and not old.is_symlink() and _manifest_version(self.path) == 1:
            files.remove_entry(old)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._staging is not None:
            self._staging.close()
        if exc_type is not None and self.created:
            try:
                self.path.rmdir()
            except OSError:  # not empty: a concurrent save put something there
                pass


def save_model(
    path,
    spec: MLPSpec,
    params,
    x_scaler: Standardizer,
    y_scaler: Standardizer,
    *,
    overwrite: bool = True,
    **document: Any,
) -> pathlib.Path:
    """Write a model folder at ``path`` atomically and return its path.

    ``overwrite=True`` replaces a jaxreg model already there (atomically); any other file or
    non-empty folder is refused untouched. ``document`` takes ``build_document``'s keyword
    arguments (config, feature and target names, metadata, y_ndim, run).
    """
    built = build_document(spec, params, x_scaler, y_scaler, **document)
    return save_model_document(path, built, overwrite=overwrite)


def save_model_document(path, document: ModelDocument, *, overwrite: bool = True) -> pathlib.Path:
    """Commit a built ``ModelDocument`` to the folder ``path`` (see ``save_model``)."""
    with ModelWriter(path, overwrite=overwrite) as writer:
        writer.commit(document)
    return pathlib.Path(path)


# ---------------------------------------------------------------- load


def load_model(path) -> SavedModel:
    """Read and validate a model folder written by ``save_model``; see ``read_document``."""
    return read_document(path).saved


def read_document(path) -> ModelDocument:
    """Read and validate a model folder: its manifest, weights and the loaded model.

    Raises:
      FileNotFoundError: the folder or a file its manifest names is missing.
      ValueError: the folder is not a jaxreg model, was written by a newer format version,
        its document breaks the schema or was edited (checksum), or its weights are
        truncated, corrupted, non-finite or disagree with its spec.
    """
    path = files.existing(path, "Model folder", folder=True)
    # Shared with other readers, exclusive of commits: the manifest and the weights it
    # names are read as one consistent pair.
    with files.folder_lock(path, shared=True):
        return _read_document(path)


def _read_document(path: pathlib.Path) -> ModelDocument:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        if any(_OWNED.fullmatch(e.name) or e.name in _LEGACY for e in path.iterdir()):
            raise FileNotFoundError(f"Model folder {str(path)!r} is missing {META_FILE}.")
        raise ValueError(f"{str(path)!r} is not a jaxreg model: it has no {META_FILE}.")
    what = f"Model document {str(meta_path)!r}"
    doc = files.load_json(meta_path, "Model document")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a jaxreg model: {META_FILE} does not declare format {FORMAT!r}."
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{what} has an invalid format_version. Got {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"Model {str(path)!r} has format version {version}, newer than this "
            f"jaxreg ({__version__}) reads (up to {FORMAT_VERSION}); upgrade "
            "jaxreg to load it."
        )
    if version == 1:
        files.validate_document(doc, _SCHEMA_V1, what)
        doc = _upgrade_v1(doc)
    else:
        files.validate_document(doc, SCHEMA, what)
        if files.checksum(doc["model"]) != doc["checksum"]:
            raise ValueError(
                f"{what} was modified after it was saved: its checksum does not "
                "match its spec, scalers, names and weights; refusing to load a "
                "model that may predict differently."
            )
    weights_path = path / doc["files"]["weights"]
    if not weights_path.is_file():
        raise FileNotFoundError(
            f"Model folder {str(path)!r} is missing its weights file {weights_path.name}."
        )
    blob, tensors = files.load_tensors(weights_path, doc["model"]["weights_sha256"], "Weights file")
    saved = _saved(doc, tensors, f"Weights file {str(weights_path)!r}", what)
    if version == 1:  # rebuilt as a current document, so that a commit upgrades the folder
        run = None
        legacy_run = path / "run.json"
        if legacy_run.is_file():
            with contextlib.suppress(ValueError):
                found = files.load_json(legacy_run, "Run information")
                run = found if isinstance(found, dict) else None
        return build_document(
            saved.spec,
            saved.params,
            saved.x_scaler,
            saved.y_scaler,
            config=saved.config,
            feature_names=saved.feature_names,
            target_names=saved.target_names,
            metadata=saved.metadata,
            y_ndim=saved.y_ndim,
            run=run,
        )
    return ModelDocument(doc, blob, saved)


def _upgrade_v1(doc: dict) -> dict:
    model = {k: doc.get(k) for k in _MODEL["required"]}
    meta = dict(doc.get("metadata") or {})
    model["y_ndim"] = 1 if meta.get("y_ndim") == 1 else 2
    return {**doc, "model": model, "files": {"weights": _LEGACY[0], "report": None}, "run": None}


def _saved(doc: dict, tensors: dict, where: str, what: str = "the model") -> SavedModel:
    model = doc["model"]
    try:
        spec_d = dict(model["spec"])
        spec_d["layer_sizes"] = tuple(spec_d["layer_sizes"])
        spec = MLPSpec(**spec_d)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{what} holds an invalid spec: {exc}") from None
    m = model["n_ensemble"]
    n_layers = len(spec.layer_sizes) - 1
    expected = {f"layers.{i}.{p}" for i in range(n_layers) for p in "Wb"}
    if set(tensors) != expected:
        raise ValueError(
            f"{where} disagrees with the spec {spec.layer_sizes}: expected "
            f"tensors {sorted(expected)}, found {sorted(tensors)}."
        )
    dtype = model["dtype"]
    for name, arr in tensors.items():
        if arr.dtype.name != dtype:
            raise ValueError(
                f"{where}: {name} has dtype {arr.dtype}, but {META_FILE} says {dtype}."
            )
    layers = tuple(
        Layer(tensors[f"layers.{i}.W"], tensors[f"layers.{i}.b"]) for i in range(n_layers)
    )
    _check_params(spec, layers, where, m=m)
    for name in ("feature_names", "target_names"):
        names = model.get(name)
        width = spec.n_inputs if name == "feature_names" else spec.n_outputs
        if names is not None and len(names) != width:
            raise ValueError(
                f"{what}: {name} must list {width} names for the spec. Got {len(names)}."
            )
    return SavedModel(
        spec=spec,
        params=layers,
        x_scaler=_scaler_from_json(model["x_scaler"], spec.n_inputs, "x_scaler", what),
        y_scaler=_scaler_from_json(model["y_scaler"], spec.n_outputs, "y_scaler", what),
        config=dict(doc.get("config") or {}),
        feature_names=model.get("feature_names"),
        target_names=model.get("target_names"),
        n_ensemble=m,
        metadata=dict(doc.get("metadata") or {}),
        format_version=int(doc["format_version"]),
        jaxreg_version=str(doc.get("jaxreg_version", "unknown")),
        y_ndim=int(model.get("y_ndim", 2)),
        run=doc.get("run"),
        preprocessing=model.get("preprocessing"),
        preprocessor=_preprocessor(model.get("preprocessing"), spec, what),
    )


def _preprocessor(d: dict | None, spec: MLPSpec, what: str):
    """The stored preprocessing rebuilt (a fitted ``TablePreprocessor``), or None; it must
    give as many columns as the network has inputs."""
    if d is None:
        return None
    from jaxreg.preprocess import TablePreprocessor

    try:
        prep = TablePreprocessor.from_dict(d)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{what} holds invalid preprocessing: {exc}") from None
    if prep.n_features_out_ != spec.n_inputs:
        raise ValueError(
            f"{what}: its preprocessing gives {prep.n_features_out_} column(s), but the "
            f"network takes {spec.n_inputs}."
        )
    return prep


def _check_params(spec: MLPSpec, layers, what: str, m: int | None = None) -> None:
    sizes = spec.layer_sizes
    if len(layers) != len(sizes) - 1:
        raise ValueError(
            f"{what} has {len(layers)} layers, but the spec {sizes} has {len(sizes) - 1}."
        )
    if m is None:
        m = int(np.shape(layers[0].W)[0]) if np.ndim(layers[0].W) == 3 else -1
    for i, (layer, fan_in, fan_out) in enumerate(zip(layers, sizes[:-1], sizes[1:], strict=True)):
        for name, arr, shape in (
            ("W", layer.W, (m, fan_in, fan_out)),
            ("b", layer.b, (m, 1, fan_out)),
        ):
            if tuple(np.shape(arr)) != shape:
                raise ValueError(
                    f"{what}: layers.{i}.{name} has shape {tuple(np.shape(arr))},"
                    f" but the spec {sizes} with {m} member(s) needs {shape}."
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{what}: layers.{i}.{name} holds NaN or infinite values.")


def _scaler_from_json(d: Any, width: int, name: str, what: str) -> Standardizer:
    dtype = np.dtype(d["dtype"])
    mean = np.asarray(d["mean"], dtype=np.float64)
    scale = np.asarray(d["scale"], dtype=np.float64)
    if mean.shape != (width,) or scale.shape != (width,):
        raise ValueError(
            f"{what}: {name} must have {width} values for the spec. Got mean "
            f"{mean.shape} and scale {scale.shape}."
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError(f"{what}: {name} must be finite with positive scale.")
    with np.errstate(over="ignore"):
        cast_mean, cast_scale = mean.astype(dtype), scale.astype(dtype)
    if not (np.all(np.isfinite(cast_mean)) and np.all(np.isfinite(cast_scale))):
        raise ValueError(f"{what}: {name} does not fit in {dtype.name}.")
    return Standardizer(cast_mean, cast_scale)
