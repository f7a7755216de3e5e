"""Tabular files (CSV, TSV, Parquet) into numeric feature and target arrays. Rank 0.

Every problem with a user's file is a one-line ``ValueError`` (``FileNotFoundError`` for a
missing path) that names the file, the column, the rule and what was found, so the CLI can
print it as is. Rows are counted from 1 as data rows (the header is not a row); for text
files the message also gives the line of the file.

pandas is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from jaxreg import files

__all__ = [
    "FORMATS",
    "Frame",
    "Labels",
    "Table",
    "detect_format",
    "features_of",
    "frame_of",
    "header_names",
    "load_features",
    "load_frame",
    "load_xy",
    "read_blocks",
    "read_table",
    "estimate_rows",
    "row_namer",
]

# suffix -> format; compressed text files (.csv.gz, ...) are recognised by their inner suffix
FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".zip")


class Table(NamedTuple):
    """Numeric arrays read from a file.

    ``x``: ``(n, d)`` features; ``y``: ``(n, k)`` targets, or None when none were asked for;
    ``rows``: ``(n,)`` 0-based positions of the kept rows in the file's data rows;
    ``n_dropped``: rows dropped for missing values (with ``drop_na``).
    """

    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    target_names: list[str]
    rows: np.ndarray
    n_dropped: int
    path: str


def detect_format(path) -> str:
    """``csv``, ``tsv`` or ``parquet`` from the file name, or a ValueError listing them."""
    p = pathlib.Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION:
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None or (fmt == "parquet" and len(suffixes) < len(p.suffixes)):
        raise ValueError(
            f"Unknown data format for {str(path)!r}: the file name must end in "
            f"one of {sorted(FORMATS)} (optionally compressed as "
            f"{', '.join(_COMPRESSION)} for text). Got "
            f"{''.join(p.suffixes) or 'no suffix'!r}."
        )
    return fmt


def read_table(path, *, encoding: str = "utf-8"):
    """Read a CSV/TSV/Parquet file into a ``pandas.DataFrame`` with one-line errors."""
    import pandas as pd

    p, fmt, _ = _opened(path, encoding)
    with _read_errors(p, path, fmt, encoding):
        if fmt == "parquet":
            df = pd.read_parquet(p)
        else:
            df = pd.read_csv(p, sep=_SEP[fmt], encoding=encoding, skipinitialspace=True)
    return _checked(df, path)


_SEP = {"csv": ",", "tsv": "\t"}


def _opened(path, encoding: str) -> tuple[pathlib.Path, str, list[str]]:
    """The file, its format and its column names, after the checks every read makes first:
    it exists, is not empty, and its header (or schema) names each column once."""
    import pandas as pd

    p = files.existing(path, "Data file", folder=False)
    fmt = detect_format(p)
    if p.stat().st_size == 0:
        raise ValueError(f"Data file {str(path)!r} is empty (0 bytes).")
    if fmt == "parquet":
        names = _parquet_names(p)
        _check_unique(names, path, "schema")
        return p, fmt, names
    with _read_errors(p, path, fmt, encoding):
        # pandas renames a repeated header name 'a' to 'a.1': read the header as written.
        header = pd.read_csv(
            p,
            sep=_SEP[fmt],
            encoding=encoding,
            skipinitialspace=True,
            header=None,
            nrows=1,
            dtype=str,
            keep_default_na=False,
        )
    names = [str(n) for n in header.iloc[0].tolist()] if len(header) else []
    _check_unique(names, path, "header")
    return p, fmt, names


def header_names(path, *, encoding: str = "utf-8") -> list[str]:
    """The file's column names as it writes them (a Parquet schema, a text file's header,
    compressed or not), after the checks every read makes first; one-line errors."""
    return _opened(path, encoding)[2]


@contextlib.contextmanager
def _read_errors(p: pathlib.Path, path, fmt: str, encoding: str) -> Iterator[None]:
    """The readers' exceptions as one-line ``ValueError``s naming the file."""
    import pandas as pd

    if fmt == "parquet":
        try:
            yield
        except ImportError as exc:
            raise ValueError(f"Reading Parquet needs pyarrow: {exc}") from None
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ValueError(
                f"Data file {str(path)!r} is not a readable Parquet file: {_first_line(exc)}"
            ) from None
        return
    try:
        yield
    except UnicodeDecodeError as exc:
        raise ValueError(_decode_message(p, path, encoding, exc)) from None
    except UnicodeError as exc:  # e.g. a UTF-16 file without a byte order mark
        raise ValueError(
            f"Data file {str(path)!r} cannot be read as {encoding} text: {_first_line(exc)}."
        ) from None
    except LookupError:
        raise ValueError(f"Unknown text encoding {encoding!r} for {str(path)!r}.") from None
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"Data file {str(path)!r} is empty: it has no header and no rows."
        ) from None
    except pd.errors.ParserError as exc:
        raise ValueError(
            f"Data file {str(path)!r} is not valid {fmt.upper()}: {_first_line(exc)}"
        ) from None


def _checked(df, path):
    """``df`` with string column names, or a ValueError when it has no columns or rows."""
    df.columns = [str(c) for c in df.columns]
    if df.shape[1] == 0:
        raise ValueError(f"Data file {str(path)!r} has no columns.")
    if df.shape[0] == 0:
        raise ValueError(
            f"Data file {str(path)!r} has a header but no data rows (columns: {_list(df.columns)})."
        )
    return df


def read_blocks(path, columns, block_rows: int, *, encoding: str = "utf-8") -> Iterator[Any]:
    """The file's ``columns`` as ``pandas.DataFrame`` blocks of at most ``block_rows`` rows,
    in file order, each indexed by its rows' 0-based position among the file's data rows:
    what ``read_table(path)[columns]`` holds, without the whole table in memory. Parquet
    through pyarrow's batches, text through pandas' chunked reader (the same parser as
    ``read_table``; each block infers its own column types). One-line errors as
    ``read_table``'s; a column not in the file is one."""
    import pandas as pd

    p, fmt, names = _opened(path, encoding)
    columns = [str(c) for c in columns]
    if names:
        _check_columns(pd.DataFrame(columns=names), columns, str(path), "the columns read")
    start = 0
    with _read_errors(p, path, fmt, encoding), contextlib.ExitStack() as stack:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # pre_buffer (pyarrow's default) keeps every column chunk read by one
            # iter_batches over the whole file: 485 MiB of a 10M x 8 table by its end
            reader = stack.enter_context(pq.ParquetFile(p, pre_buffer=False))
            parts: Iterator[Any] = (
                b.to_pandas() for b in reader.iter_batches(batch_size=block_rows, columns=columns)
            )
        else:
            parts = stack.enter_context(
                pd.read_csv(
                    p,
                    sep=_SEP[fmt],
                    encoding=encoding,
                    skipinitialspace=True,
                    usecols=columns,
                    chunksize=block_rows,
                )
            )
        for part in parts:
            part.columns = [str(c) for c in part.columns]
            part = part[columns]
            part.index = pd.RangeIndex(start, start + len(part))
            start += len(part)
            yield part
    if start == 0:
        raise ValueError(
            f"Data file {str(path)!r} has a header but no data rows (columns: {_list(columns)})."
        )


def _parquet_names(p: pathlib.Path) -> list[str]:
    """Column names in a Parquet file's schema ([] when the schema cannot be read: the
    full read then reports the problem)."""
    try:
        import pyarrow.parquet as pq

        return list(pq.read_schema(p).names)
    except Exception:  # no pyarrow, or a damaged file
        return []


def _check_unique(names, path, where: str) -> None:
    """Refuse a header (or schema) that names a column more than once; empty names, which
    pandas calls 'Unnamed: i', are not names."""
    names = [str(n) for n in names if n is not None and str(n) != ""]
    dup = [n for i, n in enumerate(names) if names.count(n) > 1 and names.index(n) == i]
    if dup:
        counts = ", ".join(f"{n!r} ({names.count(n)} times)" for n in dup[:20])
        raise ValueError(
            f"Data file {str(path)!r} names column(s) {counts} more than once "
            f"in its {where}; column names must be unique: rename them."
        )


_OPENERS = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def _open_text_bytes(p: pathlib.Path):
    """A binary stream of the file's text (decompressed), or None when not supported."""
    suffix = p.suffix.lower()
    if suffix == ".zip":
        import zipfile

        zf = zipfile.ZipFile(p)
        names = zf.namelist()
        return zf.open(names[0]) if len(names) == 1 else None
    if suffix == ".zst":
        return None
    if suffix in _OPENERS:
        import importlib

        return importlib.import_module(_OPENERS[suffix]).open(p, "rb")
    return open(p, "rb")


def _first_invalid_byte(p: pathlib.Path, encoding: str):
    """``(offset, byte)`` of the first byte that ``encoding`` cannot decode, or None.

    Decodes the file in 1 MiB pieces with an incremental decoder, so the offset counts from
    the start of the (decompressed) file and memory stays bounded.
    """
    import codecs

    try:
        stream = _open_text_bytes(p)
    except (OSError, ValueError, ImportError):
        return None
    if stream is None:
        return None
    with stream:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        fed = 0  # bytes passed to the decoder so far
        while True:
            chunk = stream.read(1 << 20)
            held = bytes(decoder.getstate()[0])  # bytes held back from the last piece
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.object is the held-back bytes followed by this piece, less any prefix
                # the codec skipped (utf-8-sig drops the BOM before decoding)
                data = held + chunk
                obj = bytes(exc.object)
                skipped = len(data) - len(obj) if data.endswith(obj) else 0
                return fed - len(held) + skipped + exc.start, obj[exc.start]
            if not chunk:
                return None
            fed += len(chunk)


def _decode_message(p: pathlib.Path, path, encoding: str, exc: UnicodeDecodeError) -> str:
    """The one-line message for a file that is not valid ``encoding`` text.

    pandas decodes in pieces, so ``exc.start`` counts from the start of a piece; the file is
    decoded again here to report the byte's true offset.
    """
    found = _first_invalid_byte(p, encoding)
    compressed = p.suffix.lower() in _COMPRESSION
    if found is None:
        where = f"byte 0x{exc.object[exc.start]:02x} is invalid"
    else:
        offset, byte = found
        where = (
            f"byte 0x{byte:02x} at offset {offset}"
            f"{' of the decompressed text' if compressed else ''} is invalid"
        )
    return (
        f"Data file {str(path)!r} cannot be read as {encoding} text: {where}; save the "
        "file as UTF-8 or pass its encoding."
    )


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _list(names, limit: int = 20) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _where(row0: int, fmt: str) -> str:
    """A data row (0-based position) as users count it: from 1, plus the file line."""
    if fmt == "parquet":
        return f"row {row0 + 1}"
    return f"row {row0 + 1} (line {row0 + 2} of the file)"


class Labels(NamedTuple):
    """How messages name the options: the library's parameter names by default; the CLI
    passes its flags (``Labels("--target", "--features", "--drop-na")``)."""

    target: str = "targets"
    features: str = "features"
    drop_na: str = "drop_na=True"


def _numeric_column(
    df, name: str, path: str, fmt: str, role: str, labels: Labels = Labels(), offset: int = 0
) -> np.ndarray:
    """Column ``name`` as float64 (NaN where missing), or a ValueError naming a bad value
    (``df``'s first row is the file's data row ``offset``)."""
    import pandas as pd

    col = df[name]
    if pd.api.types.is_bool_dtype(col):
        return col.astype(np.float64).to_numpy()
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna().to_numpy() & col.notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{role} column {name!r} in {path!r} must be numeric. Got "
            f"{col.iloc[i]!r} in {_where(offset + i, fmt)}; encode it as numbers"
            f"{f' or leave it out of {labels.features}' if role == 'Feature' else ''}"
            "."
        )
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_columns(df, wanted, path: str, option: str) -> None:
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(
            f"Column(s) {_list(missing)} ({option}) not found in {path!r}. "
            f"Available columns: {_list(df.columns)}."
        )


def _select(
    df, targets, features, path: str, labels: Labels, features_from: str | None = None
) -> tuple[list[str], list[str]]:
    targets = [str(t) for t in (targets or [])]
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise ValueError(
            f"{labels.target} names each column once. Got {_list(dup)} more than once."
        )
    _check_columns(df, targets, path, labels.target)
    if features is None:
        features = [c for c in df.columns if c not in targets]
        if not features:
            raise ValueError(
                f"{path!r} has no feature columns: every column is a target ({_list(targets)})."
            )
    else:
        features = [str(f) for f in features]
        if not features:
            raise ValueError(f"{labels.features} must name at least one column. Got none.")
        dup = sorted({f for f in features if features.count(f) > 1})
        if dup:
            raise ValueError(
                f"{labels.features} names each column once. Got {_list(dup)} more than once."
            )
        _check_columns(df, features, path, features_from or labels.features)
        both = [f for f in features if f in targets]
        if both:
            raise ValueError(
                f"A column cannot be both a feature and a target. Got "
                f"{_list(both)} in {labels.features} and {labels.target}."
            )
    return features, targets


def _refuse_infinite(values, names, path, fmt: str, offset: int, what: str = "Column") -> None:
    """One line naming the first infinite value of ``values`` (rows x ``names``), whose
    first row is the file's data row ``offset``."""
    inf = np.isinf(values)
    if inf.any():
        r, c = (int(v) for v in np.argwhere(inf)[0])
        raise ValueError(
            f"{what} {names[c]!r} in {path!r} holds an infinite value "
            f"({float(values[r, c])}) in {_where(offset + r, fmt)}; values must be finite."
        )


def _arrays(
    df,
    path,
    fmt,
    features,
    targets,
    drop_na,
    min_rows,
    dtype,
    check_target,
    labels: Labels,
    offset: int = 0,
):
    """The numeric features and targets of ``df`` (whose first row is the file's data row
    ``offset``), checked; ``min_rows=0`` accepts a block left empty by ``drop_na``."""
    names = [*features, *targets]
    # One float64 array of every used column, filled column by column (no stacked copies);
    # features and targets are views of it.
    both = np.empty((len(df), len(names)), np.float64)
    for j, name in enumerate(names):
        role = "Feature" if j < len(features) else "Target"
        both[:, j] = _numeric_column(df, name, path, fmt, role, labels, offset)
    finite = np.isfinite(both)
    na_rows = np.zeros(len(df), bool)
    if not finite.all():
        _refuse_infinite(both, names, path, fmt, offset)
        na_rows = np.asarray(~finite.all(axis=1))  # what is not finite is missing
    n_na = int(na_rows.sum())
    if n_na and not drop_na:
        r = int(np.argmax(na_rows))
        c = int(np.argmax(~finite[r]))
        raise ValueError(
            f"{path!r} has {n_na} row(s) with missing values (NaN or empty) in "
            f"the columns used, the first in {_where(offset + r, fmt)}, column "
            f"{names[c]!r}; drop them with {labels.drop_na}."
        )
    rows = np.flatnonzero(~na_rows)
    if n_na:
        both = both[rows]
    d = len(features)
    x = both if not targets else both[:, :d]
    y = both[:, d:] if targets else None
    if min_rows:
        _check_kept(path, len(rows), n_na, min_rows)
    if check_target and y is not None:
        for j, name in enumerate(targets):
            if np.all(y[:, j] == y[0, j]):
                raise ValueError(
                    f"Target column {name!r} in {path!r} is constant (every row "
                    f"is {y[0, j]:g}); there is nothing to learn."
                )
    x = np.ascontiguousarray(x, dtype=dtype)
    y = None if y is None else np.ascontiguousarray(y, dtype=dtype)
    return x, y, rows, n_na


def _check_kept(path: str, kept: int, dropped: int, min_rows: int) -> None:
    """Enough rows left after dropping those with missing values, or one line."""
    if kept == 0:
        raise ValueError(
            f"{path!r} has no rows left after dropping the {dropped} row(s) with missing values."
        )
    if kept < min_rows:
        raise ValueError(
            f"{path!r} must have at least {min_rows} data rows"
            f"{' (after dropping rows with missing values)' if dropped else ''} to "
            f"fit a model. Got {kept}."
        )


def load_xy(
    path,
    targets,
    features=None,
    *,
    drop_na: bool = False,
    min_rows: int = 2,
    dtype=np.float32,
    encoding: str = "utf-8",
    labels: Labels = Labels(),
) -> Table:
    """Read ``path`` and return numeric features and targets for fitting.

    Args:
      path: a ``.csv``, ``.tsv``, ``.txt`` (comma separated) or ``.parquet`` file.
      targets: one or more target column names.
      features: feature column names; None uses every column that is not a target.
      drop_na: drop rows with a missing value in a used column instead of refusing them.
      min_rows: fewest rows accepted (after dropping).
      dtype: dtype of the returned arrays.
      labels: how messages name the options (the CLI passes its flags).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: any other problem, in one line (see the module docstring).
    """
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if not targets:
        raise ValueError(f"{labels.target} must name at least one column. Got none.")
    df = read_table(path, encoding=encoding)
    path = str(path)
    fmt = detect_format(path)
    features, targets = _select(df, targets, features, path, labels)
    x, y, rows, n_na = _arrays(
        df, path, fmt, features, targets, drop_na, min_rows, dtype, check_target=True, labels=labels
    )
    return Table(x, y, features, targets, rows, n_na, path)


def load_features(
    path,
    features,
    targets=(),
    *,
    drop_na: bool = False,
    dtype=np.float32,
    encoding: str = "utf-8",
    require_targets: bool = False,
    labels: Labels = Labels(),
) -> Table:
    """Read the feature columns (and, when present, the target columns) for prediction.

    Targets are read only when every one of them is in the file (or ``require_targets``,
    which makes a missing one an error); otherwise ``Table.y`` is None.
    """
    df = read_table(path, encoding=encoding)
    return features_of(
        df,
        path,
        features,
        targets,
        drop_na=drop_na,
        dtype=dtype,
        require_targets=require_targets,
        labels=labels,
    )


def features_of(
    df,
    path,
    features,
    targets=(),
    *,
    drop_na: bool = False,
    dtype=np.float32,
    require_targets: bool = False,
    labels: Labels = Labels(),
    offset: int = 0,
    min_rows: int = 1,
) -> Table:
    """``load_features`` of a table already read: ``df`` holds the file's data rows from
    ``offset`` on (a block of ``read_blocks``, which passes ``min_rows=0``); ``Table.rows``
    count from ``df``'s first row."""
    path = str(path)
    fmt = detect_format(path)
    targets = [str(t) for t in (targets or [])]
    if not require_targets and not all(t in df.columns for t in targets):
        targets = []
    features, targets = _select(
        df, targets, list(features), path, labels, features_from="the model's features"
    )
    x, y, rows, n_na = _arrays(
        df,
        path,
        fmt,
        features,
        targets,
        drop_na,
        min_rows,
        dtype,
        check_target=False,
        labels=labels,
        offset=offset,
    )
    return Table(x, y, features, targets, rows, n_na, path)


class Frame(NamedTuple):
    """A table for a model with preprocessing: the feature columns as they are in the file.

    ``x``: a ``pandas.DataFrame`` of the feature columns (text, numbers, missing values)
    of the kept rows; ``y``: ``(n, k)`` float64 targets, or None; ``rows``: ``(n,)`` 0-based
    positions of the kept rows in the file's data rows; ``n_dropped``: rows dropped for
    missing values (with ``drop_na``).
    """

    x: Any
    y: np.ndarray | None
    feature_names: list[str]
    target_names: list[str]
    rows: np.ndarray
    n_dropped: int
    path: str


def load_frame(
    path,
    targets,
    features=None,
    *,
    drop_na: bool = False,
    min_rows: int = 2,
    encoding: str = "utf-8",
    require_targets: bool = True,
    check_target: bool = True,
    labels: Labels = Labels(),
) -> Frame:
    """Read ``path`` for a model that preprocesses its features (``TablePreprocessor``).

    Targets must be numeric and present in every kept row; feature columns come back as
    they are (text, numbers, missing values), except that an infinite number is refused.
    ``drop_na`` drops the rows with a missing value in any used column; otherwise missing
    features stay (the preprocessor imputes them) and a missing target is refused. The
    frame's index is the kept rows' 0-based position among the file's data rows, so
    ``row_namer(path)`` names them in messages.
    Without ``require_targets`` the targets are read only when every one is in the file.
    """
    df = read_table(path, encoding=encoding)
    return frame_of(
        df,
        path,
        targets,
        features,
        drop_na=drop_na,
        min_rows=min_rows,
        require_targets=require_targets,
        check_target=check_target,
        labels=labels,
    )


def frame_of(
    df,
    path,
    targets,
    features=None,
    *,
    drop_na: bool = False,
    min_rows: int = 2,
    require_targets: bool = True,
    check_target: bool = True,
    labels: Labels = Labels(),
    offset: int = 0,
) -> Frame:
    """``load_frame`` of a table already read: ``df`` holds the file's data rows from
    ``offset`` on (a block of ``read_blocks``, which passes ``min_rows=0``); ``Frame.rows``
    count from ``df``'s first row, and the frame's index stays ``df``'s."""
    import pandas as pd

    targets = [targets] if isinstance(targets, str) else [str(t) for t in (targets or [])]
    path = str(path)
    fmt = detect_format(path)
    if not require_targets and not all(t in df.columns for t in targets):
        targets = []
    elif require_targets and not targets:
        raise ValueError(f"{labels.target} must name at least one column. Got none.")
    features, targets = _select(df, targets, features, path, labels)
    x = df[features]
    for name in features:
        col = x[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            _refuse_infinite(values[:, None], [name], path, fmt, offset)
    y = None
    keep = np.ones(len(df), bool)
    if targets:
        y = np.column_stack(
            [_numeric_column(df, c, path, fmt, "Target", labels, offset) for c in targets]
        )
        _refuse_infinite(y, targets, path, fmt, offset, what="Target column")
        missing_y = np.isnan(y).any(axis=1)
        if missing_y.any() and not drop_na:
            r = int(np.argmax(missing_y))
            c = int(np.argmax(np.isnan(y[r])))
            raise ValueError(
                f"{path!r} has {int(missing_y.sum())} row(s) with a missing target, the first "
                f"in {_where(offset + r, fmt)}, column {targets[c]!r}; drop them with "
                f"{labels.drop_na}."
            )
        keep &= ~missing_y
    if drop_na:
        keep &= ~x.isna().any(axis=1).to_numpy()
    rows = np.flatnonzero(keep)
    n_dropped = len(df) - len(rows)
    if min_rows:
        _check_kept(path, len(rows), n_dropped, min_rows)
    x = x.iloc[rows]  # the index is still the file's 0-based data row: messages name it
    if y is not None:
        y = y[rows]
        if check_target:
            for j, name in enumerate(targets):
                if np.all(y[:, j] == y[0, j]):
                    raise ValueError(
                        f"Target column {name!r} in {path!r} is constant (every row is "
                        f"{y[0, j]:g}); there is nothing to learn."
                    )
    return Frame(x, y, features, targets, rows, n_dropped, path)


def row_namer(path):
    """``where(i)``: the file's 0-based data row ``i`` as messages name it (from 1, plus the
    line for text files)."""
    fmt = detect_format(path)
    return lambda i: _where(int(i), fmt)


def column_names(path) -> list[str] | None:
    """The column names of a Parquet file (its schema) or a CSV/TSV file (its header line,
    read with the ``csv`` module), before anything else is read; None when it cannot tell
    (another format, a compressed or damaged file)."""
    import csv

    p = pathlib.Path(path)
    try:
        fmt = detect_format(p)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return [str(n) for n in pq.read_schema(p).names]
        if fmt not in ("csv", "tsv"):
            return None
        with open(p, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","))
    except Exception:  # the read that follows reports it
        return None


def estimate_rows(path) -> int | None:
    """About how many data rows ``path`` holds, cheaply and before anything is read: a
    Parquet file's metadata, or a text file's size over the mean length of its first lines
    (compressed text is counted as it lies on disk). None when it cannot tell."""
    p = pathlib.Path(path)
    try:
        fmt = detect_format(p)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return int(pq.read_metadata(p).num_rows)
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(1 << 16)
    except Exception:  # a missing or damaged file: the read that follows reports it
        return None
    lines = head.count(b"\n")
    if lines < 2:
        return max(lines - 1, 0) if len(head) == size else None
    if len(head) == size:
        return lines - 1  # the header is not a row
    return max(int(size / (len(head) / lines)) - 1, 0)
