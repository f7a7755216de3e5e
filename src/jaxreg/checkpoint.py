"""Checkpoints of chunked training runs, and the ``Checkpointer`` that writes and resumes them.
Rank 4.

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

A ``Checkpointer`` is a callback of the one runner (``jaxreg.runner.run``): it writes a
checkpoint every ``every`` epochs; after a crash, the same run with ``resume=True`` continues
from it and ends with exactly the parameters of an uninterrupted run (the engine draws epoch
``e``'s minibatches from ``fold_in(key, e)``, so any cut gives the same result).
``MLPRegressor.fit(..., checkpoint=Checkpointer(...))`` is how the estimator and the CLI use
it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
from typing import Any

import jax
import numpy as np

from jaxreg import __version__, files
from jaxreg.engine import History

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_FILE",
    "CheckpointError",
    "Checkpointer",
    "check_checkpoint_folder",
    "clear_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
]

FORMAT = "jaxreg-checkpoint"
FORMAT_VERSION = 2  # 2: one state for all members (member axis first)
META_FILE = "checkpoint.json"
_PREFIX = "state-"
_SUFFIX = ".safetensors"
_OWNED = re.compile(r"state-[0-9a-f]{16}\.safetensors")
_LAYOUT = {
    "type": "object",
    "additionalProperties": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["path", "shape", "dtype"],
            "properties": {
                "path": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "dtype": {"type": "string"},
            },
        },
    },
}
_SCHEMA_V1 = {"type": "object", "required": ["format", "format_version"]}
_SCHEMA = {
    "type": "object",
    "required": ["format", "format_version", "tensors_file", "tensors_sha256", "layout", "meta"],
    "properties": {
        "tensors_file": {"type": "string", "pattern": r"^state-[0-9a-f]{16}\.safetensors$"},
        "tensors_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "layout": _LAYOUT,
        "meta": {"type": "object"},
        "created_folder": {"type": "boolean"},
    },
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
        "created_folder": created
        if previous is None
        else bool(previous.get("created_folder", False)),
    }
    files.commit(
        path,
        META_FILE,
        files.dumps(doc, "the checkpoint document"),
        files={name: blob},
        owned=_OWNED,
    )
    return path


def check_checkpoint_folder(path) -> dict | None:
    """Refuse a checkpoint folder jaxreg must not write into; return its checkpoint document
    (None when there is none). A fine folder does not exist, is empty, or holds a jaxreg
    checkpoint."""
    path = pathlib.Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise CheckpointError(
            f"Cannot write a checkpoint to {str(path)!r}: it is a file, not a folder."
        )
    if not path.is_dir():
        return None
    doc = read_checkpoint_meta(path)
    if doc is None and not files.only_leftovers(path, _OWNED):
        raise CheckpointError(
            f"Cannot write a checkpoint to {str(path)!r}: the folder is not "
            "empty and holds no checkpoint; refusing to touch it."
        )
    return doc


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
        raise CheckpointError(
            f"{str(path)!r} is not a jaxreg checkpoint: {META_FILE} does not "
            f"declare format {FORMAT!r}."
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"Checkpoint {str(doc_path)!r} has an invalid format_version. Got {version!r}."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has format version {version}, newer "
            f"than this jaxreg ({__version__}) reads (up to "
            f"{FORMAT_VERSION})."
        )
    try:
        files.validate_document(
            doc, _SCHEMA if version >= 2 else _SCHEMA_V1, f"Checkpoint {str(doc_path)!r}"
        )
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return doc


def load_checkpoint(
    path, templates: dict[str, Any], *, flexible: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict]:
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

    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint in {str(path)!r} (no {META_FILE}).")
    with files.folder_lock(path, shared=True):  # the document and its tensors as one pair
        doc = read_checkpoint_meta(path)
        if doc is None:
            raise FileNotFoundError(f"No checkpoint in {str(path)!r} (no {META_FILE}).")
        name = doc.get("tensors_file")
        if not isinstance(name, str) or "/" in name or not (path / name).is_file():
            raise CheckpointError(f"Checkpoint {str(path)!r} is missing its tensor file {name!r}.")
        try:
            _, tensors = files.load_tensors(
                path / name, doc["tensors_sha256"], "Checkpoint tensor file"
            )
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
    out = {}
    for tree_name, template in templates.items():
        flat, treedef = jax.tree_util.tree_flatten_with_path(template)
        leaves = []
        for key_path, like in flat:
            key = f"{tree_name}/{jax.tree_util.keystr(key_path)}"
            if key not in tensors:
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} does not match this run: it has no tensor {key!r}."
                )
            arr = tensors[key]
            want_dtype = np.dtype(like.dtype)
            if arr.dtype != want_dtype or (
                tree_name not in flexible and tuple(arr.shape) != tuple(like.shape)
            ):
                raise CheckpointError(
                    f"Checkpoint {str(path)!r} does not match this run: {key} has shape "
                    f"{tuple(arr.shape)} and dtype {arr.dtype}, expected "
                    f"{tuple(like.shape)} and {want_dtype}."
                )
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


class Checkpointer:
    """Checkpoints of a chunked run: a callback of ``jaxreg.runner.run`` that writes one every
    ``every`` epochs (and when every model has finished), and the state to resume from.

    Args:
      path: the checkpoint folder: new, empty, or holding a jaxreg checkpoint.
      every: write when the run's epoch count is a multiple of this (a multiple of the
        run's ``chunk_epochs``); None writes nothing (resume only).
      resume: continue from the checkpoint in ``path`` when there is one.

    The trainer calls ``start(keys, template, fingerprint)`` before the run: it records the
    run's identity and returns ``(state, history)`` to resume from, or None. ``resumed_from``
    is then the epoch the run continues from.
    """

    def __init__(self, path, *, every: int | None = None, resume: bool = False) -> None:
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"every must be a positive int or None. Got {every!r}.")
        self.path = pathlib.Path(path)
        self.every = every
        self.resume = bool(resume)
        self.resumed_from: int | None = None
        self._keys: Any = None
        self._fingerprint: dict = {}

    def start(self, keys, template, fingerprint: dict):
        """Record the run (its PRNG keys, a ``(state, history)`` template with the model
        axis first, and a JSON fingerprint of its data and settings); return the saved
        ``(state, history)`` when resuming from a checkpoint of the same run, else None."""
        self._keys = np.asarray(keys)
        self._fingerprint = files.plain(fingerprint)
        doc = check_checkpoint_folder(self.path)
        if not self.resume or doc is None:
            return None
        if doc["format_version"] < 2:
            raise CheckpointError(
                f"The checkpoint in {str(self.path)!r} was written by an "
                f"older jaxreg (format version {doc['format_version']}); "
                "delete it or run without resuming."
            )
        meta = dict(doc.get("meta") or {})
        saved = meta.get("fingerprint")
        if saved != self._fingerprint:
            diff = sorted(
                k
                for k in set(saved or {}) | set(self._fingerprint)
                if (saved or {}).get(k) != self._fingerprint.get(k)
            )
            raise CheckpointError(
                f"The checkpoint in {str(self.path)!r} was written by a "
                f"different run (differs in: {', '.join(diff) or 'all'}); "
                "delete it or run without resuming."
            )
        m = int(self._keys.shape[0])
        epoch = meta.get("epoch")
        if meta.get("n_members") != m or not isinstance(epoch, int) or epoch < 0:
            raise CheckpointError(
                f"The checkpoint in {str(self.path)!r} is inconsistent: "
                f"{meta.get('n_members')!r} member(s) at epoch {epoch!r}, "
                f"expected {m} member(s)."
            )
        state, history = template
        keys_like = jax.ShapeDtypeStruct(self._keys.shape, self._keys.dtype)
        trees, _ = load_checkpoint(
            self.path,
            {"keys": keys_like, "state": state, "history": history},
            flexible=("history",),
        )
        if not np.array_equal(trees["keys"], self._keys):
            raise CheckpointError(
                f"The checkpoint in {str(self.path)!r} was written with "
                "other random keys (another seed); delete it or run "
                "without resuming."
            )
        self.resumed_from = epoch
        return trees["state"], History(*trees["history"])

    def __call__(self, progress) -> None:
        """After a chunk: write a checkpoint when it is time (a ``runner.Progress``)."""
        if self.every is None or self._keys is None:
            return
        state = progress.state
        finished = bool(
            np.all((np.asarray(state.epoch) >= progress.epochs) | np.asarray(state.stopped))
        )
        if progress.epoch % self.every == 0 or finished:
            save_checkpoint(
                self.path,
                {
                    "keys": self._keys,
                    "state": jax.tree.map(np.asarray, state),
                    "history": progress.history,
                },
                {
                    "fingerprint": self._fingerprint,
                    "n_members": int(self._keys.shape[0]),
                    "epoch": progress.epoch,
                    "epochs": progress.epochs,
                },
            )

    def clear(self) -> None:
        """Remove this checkpoint's files (see ``clear_checkpoint``)."""
        clear_checkpoint(self.path)
