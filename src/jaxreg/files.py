"""Files jaxreg writes: owned temporaries, atomic commits, JSON documents, checksums. Rank 0.

Ownership: jaxreg removes only what it created. Its temporary entries are named
``.jaxreg-tmp-<random>`` and are locked (``flock``) by the process that writes them for as
long as it lives, so a later writer can tell a live temporary (locked) from one left by a
killed process (unlocked) and remove only the latter. Committed files carry names that only
jaxreg gives (``weights-<16 hex>.safetensors``) and a folder's manifest names the ones in
use, so everything else in a folder is left alone.

A commit (``commit``) under an exclusive lock on the folder: write the new content under
fresh names, fsync, atomically replace the manifest (the commit point), fsync the folder,
then remove the owned entries that the manifest no longer names. A kill at any instant
leaves the old manifest with its files or the new one with its files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import pathlib
import re
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

__all__ = [
    "TMP_PREFIX",
    "Staging",
    "check_output_folder",
    "checksum",
    "commit",
    "dumps",
    "folder_lock",
    "fsync_dir",
    "load_json",
    "load_tensors",
    "only_leftovers",
    "plain",
    "remove_entry",
    "remove_owned",
    "validate_document",
    "writing",
]

TMP_PREFIX = ".jaxreg-tmp-"


def _tmp_name() -> str:
    return f"{TMP_PREFIX}{uuid.uuid4().hex}"


def fsync_dir(path) -> None:
    """Flush a folder's entries to disk (a rename is durable only after this)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive (or shared) ``flock`` on ``folder``, released on exit or when the
    process dies. Commits hold it exclusively; readers of a manifest and the files it names
    hold it shared, so they never see a manifest whose files a commit just removed. With
    ``wait=False``, ``BlockingIOError`` when another holds it (this process included: a
    lock belongs to an open file description)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(
            fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        )
        yield
    finally:
        os.close(fd)


class Staging:
    """Temporary files and folders inside one folder, locked by this process until ``close``.

    ``file(data)`` and ``folder()`` return the path of a new temporary; publish it with
    ``os.replace``/``os.rename`` (the lock goes with it). ``close()`` removes the
    temporaries that were not published and releases the locks.
    """

    def __init__(self, folder, *, folder_locked: bool = False) -> None:
        self.parent = pathlib.Path(folder)
        self._held: list[tuple[pathlib.Path, int]] = []
        self._folder_locked = folder_locked

    def _locked_creation(self):
        # A temporary is created and locked under the folder lock, so that a concurrent
        # commit's clean-up (which holds that lock) never sees it unlocked.
        return contextlib.nullcontext() if self._folder_locked else folder_lock(self.parent)

    def file(self, data: bytes) -> pathlib.Path:
        path = self.parent / _tmp_name()
        with self._locked_creation():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            self._held.append((path, fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return path

    def folder(self) -> pathlib.Path:
        path = self.parent / _tmp_name()
        with self._locked_creation():
            path.mkdir()
            fd = os.open(path, os.O_RDONLY)
            self._held.append((path, fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        return path

    def close(self) -> None:
        for path, fd in reversed(self._held):
            try:
                if os.path.lexists(path):  # still under its temporary name: not published
                    remove_entry(path)
            finally:
                os.close(fd)
        self._held.clear()

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_entry(path: pathlib.Path) -> None:
    """Remove an entry jaxreg created: a file, a link, or a folder of plain files (jaxreg
    never nests deeper; a folder holding anything else is left in place)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for child in path.iterdir():
        if child.is_symlink() or not child.is_dir():
            child.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else inside: leave the folder
        path.rmdir()


def only_leftovers(folder, owned: re.Pattern[str]) -> bool:
    """True when ``folder`` holds nothing but jaxreg's temporaries and owned entries with no
    manifest: what a first commit killed before its commit point leaves."""
    return all(
        e.name.startswith(TMP_PREFIX) or owned.fullmatch(e.name)
        for e in pathlib.Path(folder).iterdir()
    )


def _remove_stale_temporaries(folder: pathlib.Path) -> None:
    """Remove temporaries of killed writers (unlocked); live ones stay (locked)."""
    for entry in folder.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        if entry.is_symlink():  # made and published under the folder lock we hold
            entry.unlink(missing_ok=True)
            continue
        try:
            fd = os.open(entry, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer holds it
        else:
            remove_entry(entry)
        finally:
            os.close(fd)


@contextlib.contextmanager
def writing(path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into, block by block: a temporary of
    jaxreg's own in the same folder (``.jaxreg-tmp-<random>``, locked while this process
    writes it), renamed over ``path`` when the block ends and removed when it raises, so
    ``path`` holds the old content or the whole new one. Temporaries that killed writers
    left in that folder (unlocked) are removed first, when the folder's lock is free."""
    path = pathlib.Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / _tmp_name()
    with contextlib.ExitStack() as held:
        # Cleaning is opportunistic: a folder held by a commit or a staging (this process's
        # own included, which waiting would deadlock), or that cannot be locked, is left.
        try:
            held.enter_context(folder_lock(folder, wait=False))
        except OSError:
            pass
        else:
            _remove_stale_temporaries(folder)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with contextlib.suppress(OSError):  # held until the rename: the temporary is live
            fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with os.fdopen(os.dup(fd), "wb") as fh:  # the lock belongs to fd, still open
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def commit(
    folder,
    manifest_name: str,
    manifest: bytes,
    *,
    files: dict[str, bytes] | None = None,
    folders: dict[str, pathlib.Path] | None = None,
    owned: re.Pattern[str],
    link: tuple[str, str] | None = None,
    legacy: tuple[str, ...] = (),
) -> None:
    """Atomically make ``manifest`` the folder's manifest, with the entries it names.

    Args:
      folder: an existing folder.
      manifest_name: the manifest's file name (the commit point is its replacement).
      manifest: its new bytes.
      files: new files by final name (names are content-addressed: an existing one is kept).
      folders: staged folders (``Staging.folder()``) to publish under final names.
      owned: names jaxreg gives its committed entries; those not named in ``files`` or
        ``folders`` are removed after the commit.
      link: ``(name, target)``: a symbolic link replaced atomically after the commit
        (skipped when ``name`` is something other than a link).
      legacy: names of an older layout to remove after the commit when present.
    """
    folder = pathlib.Path(folder)
    files, folders = dict(files or {}), dict(folders or {})
    keep = set(files) | set(folders) | {manifest_name}
    with folder_lock(folder), Staging(folder, folder_locked=True) as staging:
        _remove_stale_temporaries(folder)
        for name, data in files.items():
            if not (folder / name).is_file():
                os.replace(staging.file(data), folder / name)
        for name, staged in folders.items():
            os.rename(staged, folder / name)
        fsync_dir(folder)
        os.replace(staging.file(manifest), folder / manifest_name)  # the commit point
        fsync_dir(folder)
        if link is not None:
            name, target = link
            current = folder / name
            if current.is_symlink() or not os.path.lexists(current):
                tmp = folder / _tmp_name()
                os.symlink(target, tmp)
                os.replace(tmp, current)
        for entry in folder.iterdir():
            if (owned.fullmatch(entry.name) and entry.name not in keep) or entry.name in legacy:
                remove_entry(entry)
        fsync_dir(folder)


def remove_owned(
    folder,
    manifest_name: str,
    owned: re.Pattern[str],
    legacy: tuple[str, ...] = (),
    remove_folder: bool = False,
) -> None:
    """Remove a manifest and every entry jaxreg owns in ``folder`` (the manifest first, so a
    kill midway leaves no half-valid state); then the folder itself when asked and empty."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return
    with folder_lock(folder):
        (folder / manifest_name).unlink(missing_ok=True)
        fsync_dir(folder)
        _remove_stale_temporaries(folder)
        for entry in folder.iterdir():
            if owned.fullmatch(entry.name) or entry.name in legacy:
                remove_entry(entry)
    if remove_folder:
        with contextlib.suppress(OSError):  # not empty: something else lives there
            folder.rmdir()


def existing(path, what: str, *, folder: bool) -> pathlib.Path:
    """``path`` as a ``Path`` if it exists and is a folder (``folder=True``) or a regular
    file; otherwise ``FileNotFoundError`` or ``ValueError`` naming ``what`` and the path."""
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    if folder and not p.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a file, not a folder.")
    if not folder and not p.is_file():
        raise ValueError(f"{what} {str(path)!r} is not a file (it is a folder or a special file).")
    return p


def check_output_folder(path, option: str) -> pathlib.Path:
    """Refuse, before any work, an output folder that cannot be written.

    ``path`` must be a folder or not exist; the folder (or, when it does not exist yet, its
    nearest existing parent) must accept a new file. Returns ``path`` as a ``Path``.
    """
    p = pathlib.Path(path)
    if os.path.lexists(p) and not p.is_dir():
        raise ValueError(f"{option} must be a folder. Got {str(path)!r}, which is a file.")
    probe_in = p
    while not probe_in.exists():
        parent = probe_in.parent
        if parent == probe_in:
            break
        probe_in = parent
    if not probe_in.is_dir():
        raise ValueError(
            f"{option} {str(path)!r} cannot be created: {str(probe_in)!r} is a file, not a folder."
        )
    try:
        fd, tmp = None, probe_in / _tmp_name()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OSError(
            exc.errno, f"{option} is not writable ({exc.strerror})", str(probe_in)
        ) from None
    finally:
        if fd is not None:
            os.close(fd)
            tmp.unlink(missing_ok=True)  # a concurrent commit may have cleaned it already
    return p


# ---------------------------------------------------------------- JSON documents


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_json(path, what: str) -> Any:
    """Parse the JSON file ``path`` strictly (no NaN/Infinity; bounded nesting), with a
    one-line ``ValueError`` naming ``what`` and the problem."""
    p = pathlib.Path(path)
    raw = p.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start}).") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid JSON ({exc}).") from None
    except ValueError as exc:
        raise ValueError(f"{what} {str(p)!r} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise ValueError(f"{what} {str(p)!r} is not valid: it nests too deeply.") from None


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray | tuple):
        return np.asarray(obj).tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def plain(obj: Any) -> Any:
    """``obj`` as plain JSON values (NumPy scalars and arrays, tuples to lists)."""
    return json.loads(json.dumps(obj, default=_json_default))


def load_tensors(path, sha256: str, what: str) -> tuple[bytes, dict]:
    """Read a safetensors file whose SHA-256 a manifest recorded: ``(bytes, tensors)``, or a
    ``ValueError`` saying it is truncated or corrupted."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    p = pathlib.Path(path)
    blob = p.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError(
            f"{what} {str(p)!r} is truncated or corrupted: its SHA-256 does not "
            f"match the one its manifest records ({len(blob)} bytes on disk)."
        )
    try:
        return blob, st_load(blob)
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise ValueError(f"{what} {str(p)!r} is truncated or corrupted: {exc}") from None


def _first_non_finite(obj, where: str = "") -> str | None:
    if isinstance(obj, float):
        return None if math.isfinite(obj) else f"{where or 'value'} = {obj}"
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, list | tuple):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for w, v in items:
        found = _first_non_finite(v, w)
        if found:
            return found
    return None


def dumps(doc: dict, what: str) -> bytes:
    """``doc`` as JSON bytes; a non-finite number is a ``ValueError`` naming its field."""
    values = plain(doc)
    bad = _first_non_finite(values)
    if bad is not None:
        raise ValueError(f"Cannot write {what}: {bad} is not a finite number.")
    return json.dumps(values, indent=1, allow_nan=False).encode()


def checksum(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default
    )
    return hashlib.sha256(text.encode()).hexdigest()


def validate_document(doc: Any, schema: dict, what: str) -> None:
    """Check ``doc`` against a JSON schema; the first problem is a ``ValueError`` naming the
    field, the rule and the value."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    field = field.lstrip(".") or "the document"
    value = json.dumps(error.instance)
    if len(value) > 60:
        value = value[:57] + "..."
    rule = error.message
    if error.validator in (
        "type",
        "minimum",
        "maximum",
        "enum",
        "const",
        "pattern",
        "minItems",
        "maxItems",
        "minLength",
        "exclusiveMinimum",
    ):
        rule = f"{error.validator} {json.dumps(error.validator_value)}"
    raise ValueError(
        f"{what} is invalid: field {field!r} must satisfy {rule}. Got {value} instead."
    )
