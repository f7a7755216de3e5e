"""Matplotlib helpers shared by the commands (rank 0): figures outside pyplot, atomic PNG writes.

matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import BinaryIO


def _publish(tmp: str, path: pathlib.Path) -> None:
    """Give ``tmp`` the permissions a plain ``open`` would (mkstemp makes it 0600), then
    rename it over ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


DPI = 110


def figure(width: float = 6.4, height: float = 4.2):
    """A new ``(fig, ax)``: a matplotlib ``Figure`` made without pyplot, so no global state
    holds it (nothing to close) and figures can be drawn on several threads; saving it
    draws it with the Agg backend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def png(fig) -> bytes:
    """``fig`` drawn as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save(fig, path) -> pathlib.Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file, then rename)."""
    return write_bytes(path, png(fig))


def write_bytes(path, data: bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    with writing(path) as fh:
        fh.write(data)
    return pathlib.Path(path)


@contextlib.contextmanager
def writing(path) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into, block by block: a temporary file
    of jaxreg's own in the same folder, renamed over ``path`` when the block ends and
    removed when it raises, so ``path`` holds the old content or the whole new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        _publish(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))
