"""Command-line options declared as data: ``options.toml`` beside this file holds every
option of every command, one table an option; ``add_options`` adds one section's options.

A table holds ``argparse.add_argument``'s keywords, with ``type`` spelled ``"int"`` or
``"float"``, ``flag = true`` for a switch and ``values`` for the names a command accepts
(listed in the help; the command checks them, and a test keeps them equal to the code's).
A help text gets ``(default: …)`` appended unless it names its default itself or the
option has none worth naming.
"""

from __future__ import annotations

import functools
import pathlib
import tomllib
from typing import Any

_TYPES = {"int": int, "float": float}


@functools.cache
def option_tables() -> dict[str, dict[str, dict[str, Any]]]:
    """Every section of ``options.toml``: ``{section: {flag: keywords}}``."""
    text = (pathlib.Path(__file__).parent / "options.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def add_command(sub, key: str, run, *sections: str):
    """Add the command ``key`` of ``[commands]`` to the sub-parsers ``sub``: its help,
    description and positional arguments, the options of ``sections`` (default: the
    section named ``key``, if there is one), and ``run`` as what it runs. Returns the new parser."""
    info = option_tables()["commands"][key]
    parser = sub.add_parser(
        info.get("name", key), help=info["help"], description=info["description"]
    )
    for name, metavar, text in info.get("arguments", ()):
        parser.add_argument(name, metavar=metavar, help=text or None)
    for section in sections or ([key] if key in option_tables() else []):
        add_options(parser, section)
    parser.set_defaults(run=run)
    return parser


def add_options(parser, section: str) -> None:
    """Add the options of ``section`` to ``parser`` (a parser or an argument group)."""
    for flag, keywords in option_tables()[section].items():
        kw = dict(keywords)
        if kw.pop("flag", False):
            kw["action"] = "store_true"
        if "type" in kw:
            kw["type"] = _TYPES[kw["type"]]
        if "choices" in kw:
            kw["choices"] = tuple(kw["choices"])
        values = kw.pop("values", None)  # listed in the help; checked by the command
        if values:
            kw["help"] = f"{kw['help']}: one of {', '.join(values)}"
        text = kw.get("help")
        if text and kw.get("default") not in (None, False) and "default" not in text:
            kw["help"] = f"{text} (default: %(default)s)"
        parser.add_argument(flag, **kw)
