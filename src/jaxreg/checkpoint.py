"""Checkpoints of chunked training runs, and a resumable run built on them. Rank 4.

A checkpoint is a folder::

    CKPT_DIR/
      checkpoint.json            format, format_version, jaxreg_version, the layout of every
                                 tensor (tree, key path, shape, dtype), the tensors' SHA-256,
                                 the name of the tensor file, and free-form ``meta``
      state-<tag>.safetensors    every pytree leaf, named ``<tree>/<key path>``

Pytrees (a ``TrainState`` with its Optax state, a ``History``, PRNG keys) are flattened
into their leaves, each named by its key path (``state/.params[0].W``), so the file does
not depend on a pickled treedef: loading rebuilds each tree from a template of the same
structure (e.g. ``jax.eval_shape`` of ``Engine.init``) and checks every name, shape and
dtype. Nothing is pickled.

Writes are atomic: the tensor file gets a fresh name and is fsynced first; then
``checkpoint.json`` is replaced in one ``os.replace`` (the commit point); older tensor files
are removed afterwards. A kill at any moment leaves either the previous checkpoint or the
new one, never a mixture.

``fit_resumable`` trains the members of an ensemble together (``jaxreg.train.fit_many``)
in equal compiled chunks and writes a checkpoint
every ``every`` epochs; after a crash, the same call with ``resume=True`` continues from the
checkpoint and ends with exactly the parameters of an uninterrupted run (the engine draws
epoch ``e``'s minibatches from ``fold_in(key, e)``, so any cut gives the same result).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import __version__, files
from jaxreg.data import Dataset
from jaxreg.model import MLPSpec
from jaxreg.optim import Hparams
from jaxreg.train import (
    History,
    Progress,
    TrainConfig,
    TrainResult,
    fit_many,
    make_engine,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "META_FILE", "CheckpointError", "RunOutcome",
           "check_checkpoint_folder", "clear_checkpoint", "fit_resumable", "load_checkpoint",
           "read_checkpoint_meta", "save_checkpoint", "state_template"]

FORMAT = "jaxreg-checkpoint"
FORMAT_VERSION = 2  # 2: one state for all members (member axis first)
META_FILE = "checkpoint.json"
_PREFIX = "state-"
_SUFFIX = ".safetensors"
_OWNED = re.compile(r"state-[0-9a-f]{16}\.safetensors")
_LAYOUT = {"type": "object", "additionalProperties": {
    "type": "array", "items": {"type": "object", "required": ["path", "shape", "dtype"],
                               "properties": {"path": {"type": "string"},
                                              "shape": {"type": "array",
                                                        "items": {"type": "integer",
                                                                  "minimum": 0}},
                                              "dtype": {"type": "string"}}}}}
_SCHEMA_V1 = {"type": "object", "required": ["format", "format_version"]}
_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "tensors_file", "tensors_sha256", "layout", "meta"],
    "properties": {"tensors_file": {"type": "string",
                                    "pattern": r"^state-[0-9a-f]{16}\.safetensors$"},
                   "tensors_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                   "layout": _LAYOUT, "meta": {"type": "object"},
                   "created_folder": {"type": "boolean"}},
}


class CheckpointError(ValueError):
    """A checkpoint is missing pieces, corrupted, or belongs to another run."""


# ---------------------------------------------------------------- low level: save / load


def _leaves(tree) -> list[tuple[str, Any]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def save_checkpoint(path, trees: dict[str, Any], meta: dict | None = None) -> pathlib.Path:
    """Write the pytrees ``trees`` (name -> pytree of arrays) and ``meta`` atomically.

    Args:
      path: the checkpoint folder (created if needed; a previous checkpoint there is
        replaced).
      trees: e.g. ``{"state": train_state, "history": history, "key": key}``.
      meta: JSON-serializable values stored next to the layout (epoch, a fingerprint of
        the run, ...).
    """
    from safetensors.numpy import save as st_save

    path = pathlib.Path(path)
    previous = check_checkpoint_folder(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    layout: dict[str, list] = {}
    for tree_name, tree in trees.items():
        if "/" in tree_name:
            raise ValueError(f"Checkpoint tree names must not contain '/'. Got {tree_name!r}.")
        entries = []
        for key, leaf in _leaves(tree):
            arr = np.array(leaf, order="C")  # ascontiguousarray would make 0-d arrays 1-d
            tensors[f"{tree_name}/{key}"] = arr
            entries.append({"path": key, "shape": list(arr.shape), "dtype": arr.dtype.name})
        layout[tree_name] = entries
    blob = st_save(tensors, metadata={"format": FORMAT})
    digest = hashlib.sha256(blob).hexdigest()
    name = f"{_PREFIX}{digest[:16]}{_SUFFIX}"
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jaxreg_version": __version__,
        "tensors_file": name,
        "tensors_sha256": digest,
        "layout": layout,
        "meta": dict(meta or {}),
        # Whether jaxreg made the folder (then clear_checkpoint removes it when empty).
        "created_folder": created if previous is None else bool(
            previous.get("created_folder", False)),
    }
    files.commit(path, META_FILE, files.dumps(doc, "the checkpoint document"),
                 files={name: blob}, owned=_OWNED)
    return path


def check_checkpoint_folder(path) -> dict | None:
    """Refuse a checkpoint folder jaxreg must not write into; return its checkpoint document
    (None when there is none). A fine folder does not exist, is empty, or holds a jaxreg
    checkpoint."""
    path = pathlib.Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise CheckpointError(f"Cannot write a checkpoint to {str(path)!r}: it is a file, not "
                              "a folder.")
    if not path.is_dir():
        return None
    doc = read_checkpoint_meta(path)
    if doc is None and not files.only_leftovers(path, _OWNED):
        raise CheckpointError(f"Cannot write a checkpoint to {str(path)!r}: the folder is not "
                              "empty and holds no checkpoint; refusing to touch it.")
    return doc


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | tuple):
        return np.asarray(obj).tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def read_checkpoint_meta(path) -> dict | None:
    """The whole ``checkpoint.json`` document, or None when ``path`` holds no checkpoint."""
    doc_path = pathlib.Path(path) / META_FILE
    if not doc_path.is_file():
        return None
    try:
        doc = files.load_json(doc_path, "Checkpoint")
    except ValueError as exc:
        raise CheckpointError(f"{exc} The checkpoint is corrupted.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a jaxreg checkpoint: {META_FILE} does not "
                              f"declare format {FORMAT!r}.")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"Checkpoint {str(doc_path)!r} has an invalid format_version. "
                              f"Got {version!r}.")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"Checkpoint {str(path)!r} has format version {version}, newer "
                              f"than this jaxreg ({__version__}) reads (up to "
                              f"{FORMAT_VERSION}).")
    try:
        files.validate_document(doc, _SCHEMA if version >= 2 else _SCHEMA_V1,
                                f"Checkpoint {str(doc_path)!r}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return doc


def load_checkpoint(path, templates: dict[str, Any], *,
                    flexible: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict]:
    """Read a checkpoint back into pytrees shaped like ``templates``.

    Args:
      path: the checkpoint folder.
      templates: tree name -> a pytree of the expected structure whose leaves have
        ``shape`` and ``dtype`` (arrays or ``jax.ShapeDtypeStruct``); every key path,
        shape and dtype must match.
      flexible: tree names whose leaf shapes may differ from the template's (e.g. a
        ``History`` whose length grows); names and dtypes are still checked.

    Returns:
      ``(trees, meta)`` with NumPy leaves.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint in {str(path)!r} (no {META_FILE}).")
    with files.folder_lock(path, shared=True):  # the document and its tensors as one pair
        doc = read_checkpoint_meta(path)
        if doc is None:
            raise FileNotFoundError(f"No checkpoint in {str(path)!r} (no {META_FILE}).")
        name = doc.get("tensors_file")
        if not isinstance(name, str) or "/" in name or not (path / name).is_file():
            raise CheckpointError(f"Checkpoint {str(path)!r} is missing its tensor file "
                                  f"{name!r}.")
        blob = (path / name).read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc.get("tensors_sha256"):
        raise CheckpointError(f"Checkpoint tensor file {str(path / name)!r} is truncated or "
                              f"corrupted: its SHA-256 does not match {META_FILE}.")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"Checkpoint tensor file {str(path / name)!r} is corrupted: "
                              f"{exc}") from None
    out = {}
    for tree_name, template in templates.items():
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for key_path, like in flat:
            key = f"{tree_name}/{jax.tree_util.keystr(key_path)}"
            if key not in tensors:
                raise CheckpointError(f"Checkpoint {str(path)!r} does not match this run: it "
                                      f"has no tensor {key!r}.")
            arr = tensors[key]
            want_dtype = np.dtype(like.dtype)
            if arr.dtype != want_dtype or (tree_name not in flexible
                                           and tuple(arr.shape) != tuple(like.shape)):
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} does not match this run: {key} has shape "
                    f"{tuple(arr.shape)} and dtype {arr.dtype}, expected "
                    f"{tuple(like.shape)} and {want_dtype}.")
            leaves.append(arr)
        out[tree_name] = jax.tree_util.tree_unflatten(treedef, leaves)
    return out, dict(doc.get("meta") or {})


def clear_checkpoint(path) -> None:
    """Remove the files ``save_checkpoint`` wrote in ``path`` (no-op when absent); the folder
    goes too when jaxreg created it and nothing else is in it."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return
    doc = check_checkpoint_folder(path)
    created = bool(doc and doc.get("created_folder"))
    files.remove_owned(path, META_FILE, _OWNED, remove_folder=created)


# ---------------------------------------------------------------- resumable training


def state_template(spec: MLPSpec, cfg: TrainConfig, data: Dataset, hparams: Hparams):
    """The ``TrainState`` structure (``ShapeDtypeStruct`` leaves) of a run, without
    computing anything."""
    engine = make_engine(spec, cfg)
    hp = Hparams(*(jnp.asarray(v, data.x.dtype) for v in hparams))
    return jax.eval_shape(engine.init, jax.random.PRNGKey(0), data, hp)


def _history_template(data: Dataset) -> History:
    k, dt = data.y.shape[1], np.dtype(data.x.dtype)
    return History(jax.ShapeDtypeStruct((0,), np.int32), jax.ShapeDtypeStruct((0, k), dt),
                   jax.ShapeDtypeStruct((0, k), dt), jax.ShapeDtypeStruct((0,), dt))


class RunOutcome(NamedTuple):
    """What ``fit_resumable`` returns: a ``TrainResult`` with a leading member axis, the
    epoch it resumed from (None for a fresh start) and the timings of this call."""

    result: TrainResult
    resumed_from: int | None
    compile_seconds: float
    run_seconds: float


def _finished(state, cfg: TrainConfig) -> bool:
    done = np.asarray(state.epoch) >= cfg.epochs
    if cfg.patience is not None:
        done = done | np.asarray(state.stopped)
    return bool(np.all(done))


def fit_resumable(spec: MLPSpec, cfg: TrainConfig, data: Dataset, hparams: Hparams, keys,
                  *, chunk_epochs: int, path=None, every: int | None = None,
                  resume: bool = False, fingerprint: dict | None = None,
                  callback: Callable[[Progress], None] | None = None) -> RunOutcome:
    """Train the ``len(keys)`` members of an ensemble together in equal compiled chunks,
    with checkpoints.

    Args:
      spec, cfg, data, hparams: as for ``jaxreg.train.fit``.
      keys: one PRNG key per ensemble member.
      chunk_epochs: epochs per compiled chunk (divides ``cfg.epochs`` and ``every``).
      path: checkpoint folder; None writes no checkpoint.
      every: write a checkpoint when the run's epoch count is a multiple of this, and when
        every member has finished.
      resume: continue from the checkpoint in ``path`` if there is one.
      fingerprint: JSON values identifying the run (data, options); resuming from a
        checkpoint whose fingerprint differs raises ``CheckpointError``.
      callback: ``callback(progress)`` after every chunk, the member axis first in
        ``progress.state`` and ``progress.history`` (also for one member).
    """
    keys = jnp.stack([jnp.asarray(k) for k in keys])
    m = int(keys.shape[0])
    fingerprint = json.loads(json.dumps(fingerprint or {}, default=_json_default))
    if every is not None and (every < 1 or every % chunk_epochs):
        raise ValueError(f"every must be a positive multiple of chunk_epochs ({chunk_epochs})."
                         f" Got {every!r}.")
    start, resumed_from = None, None
    if resume and path is not None and read_checkpoint_meta(path) is not None:
        start, resumed_from = _restore(path, spec, cfg, data, hparams, keys, fingerprint)
        if resumed_from % chunk_epochs:
            raise ValueError(f"chunk_epochs must divide the epoch the checkpoint was written "
                             f"at ({resumed_from}). Got {chunk_epochs}.")

    def on_chunk(progress: Progress):  # the member axis first, also for one member
        if path is not None and every is not None and (
                progress.epoch % every == 0 or _finished(progress.state, cfg)):
            save_checkpoint(path, {"keys": keys,
                                   "state": jax.tree.map(np.asarray, progress.state),
                                   "history": progress.history},
                            {"fingerprint": fingerprint, "n_members": m,
                             "epoch": progress.epoch, "epochs": cfg.epochs})
        if callback is not None:
            callback(progress)

    result = fit_many(spec, cfg, data, hparams, keys=keys, chunk_epochs=chunk_epochs,
                      callback=on_chunk, resume=start)
    return RunOutcome(result, resumed_from, result.compile_seconds, result.run_seconds)


def _restore(path, spec, cfg, data, hparams, keys, fingerprint):
    doc = read_checkpoint_meta(path)
    if doc["format_version"] < 2:
        raise CheckpointError(f"The checkpoint in {str(path)!r} was written by an older "
                              f"jaxreg (format version {doc['format_version']}); delete it "
                              "or run without --resume.")
    meta = dict(doc.get("meta") or {})
    saved = meta.get("fingerprint")
    if saved != fingerprint:
        diff = sorted(k for k in set(saved or {}) | set(fingerprint)
                      if (saved or {}).get(k) != fingerprint.get(k))
        raise CheckpointError(f"The checkpoint in {str(path)!r} was written by a different "
                              f"run (differs in: {', '.join(diff) or 'everything'}); delete it "
                              "or run without --resume.")
    m = int(keys.shape[0])
    epoch = meta.get("epoch")
    if meta.get("n_members") != m or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"The checkpoint in {str(path)!r} is inconsistent: "
                              f"{meta.get('n_members')!r} member(s) at epoch {epoch!r}, "
                              f"expected {m} member(s).")

    def members(t):
        return jax.ShapeDtypeStruct((m, *t.shape), t.dtype)

    templates = {"keys": members(jax.ShapeDtypeStruct(keys.shape[1:], keys.dtype)),
                 "state": jax.tree.map(members, state_template(spec, cfg, data, hparams)),
                 "history": jax.tree.map(members, _history_template(data))}
    trees, _ = load_checkpoint(path, templates, flexible=("history",))
    if not np.array_equal(trees["keys"], np.asarray(keys)):
        raise CheckpointError(f"The checkpoint in {str(path)!r} was written with other random "
                              "keys (another --seed); delete it or run without --resume.")
    return (trees["state"], History(*trees["history"])), epoch
