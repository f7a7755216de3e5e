"""Matplotlib helpers shared by the commands (rank 1): figures outside pyplot, atomic PNG writes.

matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import io
import pathlib

from .files import writing

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


def write_text(path, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))
