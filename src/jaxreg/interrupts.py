"""Ctrl-C in the CLI: an interrupt ends the command with nothing replaced. Rank 0.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and where that is
a callback whose exceptions are swallowed (a garbage-collection callback of JAX, say) the
interrupt is lost and the command goes on. So the handler also remembers that an interrupt
came: ``check()`` raises it again at the points that matter (between training chunks, just
before a commit), and ``deferred()`` protects a commit: inside it an interrupt is only
remembered, and once the commit has begun it completes. An interrupt during an import is
remembered too and raised by the next ``check()``.
"""

from __future__ import annotations

import contextlib
import gc
import signal
from collections.abc import Iterator

__all__ = ["check", "deferred", "install", "seen"]

_seen = False
_depth = 0


def _swallowing(frame) -> bool:
    """Whether the interrupted code is an import or a garbage-collection callback (JAX
    registers one): an exception raised there would be turned into another error or printed
    as "Exception ignored" and lost."""
    callbacks = {getattr(cb, "__code__", None) for cb in gc.callbacks}
    while frame is not None:
        code = frame.f_code
        if code in callbacks or code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame) -> None:
    global _seen
    _seen = True
    # Inside a commit, an import or a GC callback it is only remembered: check() raises it.
    if not _depth and not _swallowing(frame):
        raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through this module (call it first, before JAX is imported)."""
    global _seen
    _seen = False
    signal.signal(signal.SIGINT, _handler)


def seen() -> bool:
    """Whether an interrupt came since ``install()``."""
    return _seen


def check() -> None:
    """Raise ``KeyboardInterrupt`` when an interrupt came, even one that was swallowed."""
    if _seen:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block to its end: an interrupt that came before it is raised on entry, one
    that comes during it is ignored (the work it protects has already begun to commit)."""
    global _depth
    check()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
