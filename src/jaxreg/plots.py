"""Matplotlib helpers shared by the commands (rank 0): headless backend, atomic PNG writes.

matplotlib is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import pathlib
import tempfile


def _publish(tmp: str, path: pathlib.Path) -> None:
    """Give ``tmp`` the permissions a plain ``open`` would (mkstemp makes it 0600), then
    rename it over ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def figure(width: float = 6.4, height: float = 4.2):
    """A new ``(fig, ax)`` drawn with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def save(fig, path) -> pathlib.Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        _publish(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def write_text(path, text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
