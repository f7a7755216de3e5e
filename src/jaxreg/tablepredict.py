"""Predictions for a whole table file, block by block (rank 2): ``predict_table``.

A fitted model (an ``MLPRegressor``, or the ``Pipeline`` of a ``TablePreprocessor`` and an
``MLPRegressor`` that ``jaxreg.load`` returns) predicts every row of a CSV, TSV or Parquet
file: blocks of rows are read (``tabular.read_blocks``), checked as a whole read checks
them, predicted and written in turn, so a table larger than memory never is held whole.
``jaxreg predict`` is this function. NumPy and pandas are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
import warnings
from typing import Any, NamedTuple

from jaxreg import tabular

__all__ = ["BLOCK_ROWS", "TablePrediction", "block_rows", "predict_table"]

BLOCK_ROWS = 1 << 20  # the most rows of a block (beyond, blocks are no faster)


class TablePrediction(NamedTuple):
    """What ``predict_table`` wrote: the file's data ``rows`` (one output row each), the
    rows left empty for a missing feature (``dropped``, with ``drop_na``), the rows read at
    once (``block_rows``) and the number of ``blocks``."""

    rows: int
    dropped: int
    block_rows: int
    blocks: int


def _targets(model) -> list[str]:
    net = model[-1] if hasattr(model, "steps") else model
    names = getattr(net, "target_names_in_", None)
    if names is not None and len(names):
        return [str(t) for t in names]
    return [f"y{i}" for i in range(net.n_outputs_)]


def block_rows(model, *, keep=(), std: bool = False, max_memory: int | None = None) -> int:
    """Rows per block: the columns read and written, as float64, in a sixteenth of
    ``max_memory`` bytes (reading, predicting and formatting a block take about that many
    times as much), at least 256 and at most ``BLOCK_ROWS``."""
    if max_memory is None:
        return BLOCK_ROWS
    first = model[0] if hasattr(model, "steps") else model
    width = int(first.n_features_in_) + len(keep) + len(_targets(model)) * (2 if std else 1)
    return int(min(max(max_memory // (width * 8 * 16), 256), BLOCK_ROWS))


def predict_table(
    model,
    data,
    out=None,
    *,
    keep=(),
    std: bool = False,
    drop_na: bool = False,
    encoding: str = "utf-8",
    max_memory: int | None = None,
    labels: tabular.Labels = tabular.Labels(),
    keep_option: str = "keep",
) -> TablePrediction:
    """Predict every data row of the file ``data`` and write one output row for each.

    Args:
      model: a fitted ``MLPRegressor`` or ``Pipeline`` (as ``jaxreg.load`` returns); a
        pipeline takes the raw columns (text, missing values) through its preprocessing.
      data: a ``.csv``, ``.tsv`` or ``.parquet`` file holding the model's feature columns
        (any order, other columns ignored); a model fitted without feature names takes a
        file of exactly its number of columns.
      out: a path, written as Parquet when it ends in ``.parquet`` or ``.pq``,
        tab-separated when it ends in ``.tsv`` and as CSV otherwise, through a temporary
        file that replaces it only when every block is written; or a text stream (CSV,
        written as the blocks come). Default: standard output.
      keep: input columns copied first into the output (identifiers).
      std: add each target's ensemble standard deviation (``<target>_std``).
      drop_na: give a row with a missing feature empty predictions (a model without
        preprocessing otherwise refuses it; a pipeline imputes it).
      max_memory: bytes for a block (``block_rows``); default ``BLOCK_ROWS`` rows.
      labels, keep_option: how messages name the options (the CLI passes its flags).

    Each unseen-category warning is one ``UnknownCategoryWarning`` per column for the
    whole table. Raises a one-line ``ValueError`` naming the column and the row (counted
    in the file) for a bad value, and when ``drop_na`` leaves no row; nothing is
    written to a path then.
    """
    import numpy as np
    import pandas as pd

    from jaxreg.preprocess import UnknownCategoryWarning, unseen_warning

    keep = [str(k) for k in keep]
    targets = _targets(model)
    names = tabular.header_names(data, encoding=encoding)
    feats = _features(model, data, names)
    _check_keep(keep, names, targets, data, keep_option)
    columns = feats + [k for k in keep if k not in feats]
    size = block_rows(model, keep=keep, std=std, max_memory=max_memory)
    raw = hasattr(model, "steps")
    unseen: dict[str, list] = {}  # column -> [values, missing, rows]
    others: dict[str, Any] = {}  # other warnings, once each, in order
    n_rows = n_dropped = blocks = 0
    with _output(out) as write:
        for block in tabular.read_blocks(data, columns, size, encoding=encoding):
            offset = int(block.index[0])
            if raw:
                part = tabular.frame_of(
                    block, data, [], feats, drop_na=drop_na, min_rows=0,
                    require_targets=False, check_target=False, labels=labels, offset=offset,
                )  # fmt: skip
                x, rows, dropped = part.x, part.rows, part.n_dropped
            else:
                table = tabular.features_of(
                    block, data, feats, drop_na=drop_na, dtype=np.float64, labels=labels,
                    offset=offset, min_rows=0,
                )  # fmt: skip
                x = pd.DataFrame(table.x, columns=feats)
                rows, dropped = table.rows, table.n_dropped
            cols = {k: block[k].to_numpy() for k in keep}
            mean = std_ = np.zeros((0, len(targets)))
            if len(rows):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    mean, std_ = model.predict(x, return_std=True)
                for w in caught:
                    if isinstance(w.message, UnknownCategoryWarning) and w.message.column:
                        seen = unseen.setdefault(w.message.column, [set(), False, 0])
                        seen[0] |= w.message.values
                        seen[1] = seen[1] or w.message.missing
                        seen[2] += w.message.rows
                    else:
                        others.setdefault(str(w.message), w)
            cols.update(_columns(len(block), rows, mean, std_, targets, std))
            write(pd.DataFrame(cols))
            n_rows += len(block)
            n_dropped += dropped
            blocks += 1
        if n_dropped == n_rows:
            raise ValueError(
                f"{str(data)!r} has no rows left after dropping the {n_dropped} row(s) with "
                "missing values."
            )
    for name, (values, missing, count) in unseen.items():
        warnings.warn(unseen_warning(name, values, missing, count), stacklevel=2)
    for w in others.values():
        warnings.warn(w.message, stacklevel=2)
    return TablePrediction(n_rows, n_dropped, size, blocks)


def _features(model, data, names: list[str]) -> list[str]:
    """The columns the model reads: its feature names, or for a model fitted without
    them, every column of the file (as many as it has features)."""
    first = model[0] if hasattr(model, "steps") else model
    feats = getattr(first, "feature_names_in_", None)
    if feats is not None:
        return [str(f) for f in feats]
    if len(names) != model.n_features_in_:
        raise ValueError(
            f"The model has no feature names, so DATA must have exactly its "
            f"{model.n_features_in_} feature column(s). Got {len(names)} column(s) in "
            f"{str(data)!r}."
        )
    return list(names)


def _check_keep(keep: list[str], names: list[str], targets: list[str], data, option: str):
    """``keep`` names columns of the file, each once, none an output column."""
    outputs = set(targets) | {f"{t}_std" for t in targets}
    for col in keep:
        if col not in names:
            raise ValueError(
                f"{option} must name a column of {str(data)!r}. Got {col!r}; its columns "
                f"are {names}."
            )
        if col in outputs:
            raise ValueError(
                f"{option} {col!r} would be overwritten by the prediction column of the same "
                "name; keep another column or rename it in the file."
            )
    if len(set(keep)) != len(keep):
        raise ValueError(f"{option} must name each column once. Got {keep!r}.")


def _columns(n: int, rows, mean, std, targets: list[str], with_std: bool) -> dict:
    """The output columns of ``n`` file rows: each target's prediction (and with
    ``with_std`` its ensemble spread, ``<target>_std``) at the kept ``rows``, NaN (an empty
    CSV cell) at the others."""
    import numpy as np

    mean = np.asarray(mean).reshape(len(rows), len(targets))
    std = np.asarray(std).reshape(len(rows), len(targets))
    cols = {}
    for j, name in enumerate(targets):
        for key, values, wanted in ((name, mean, True), (f"{name}_std", std, with_std)):
            if wanted:
                cols[key] = np.full(n, np.nan)
                cols[key][rows] = values[:, j]
    return cols


@contextlib.contextmanager
def _output(out):
    """``write(frame)`` for the predictions, one block after another (see
    ``predict_table``'s ``out``)."""
    if out is None or hasattr(out, "write"):
        yield _csv_writer((out or sys.stdout).write)
        return
    from jaxreg.files import writing

    suffix = pathlib.Path(out).suffix.lower()
    with writing(out) as fh:
        if suffix not in (".parquet", ".pq"):
            sep = "\t" if suffix == ".tsv" else ","
            yield _csv_writer(lambda text: fh.write(text.encode("utf-8")), sep)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        writers: list = []

        def parquet(frame) -> None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if not writers:
                writers.append(pq.ParquetWriter(fh, table.schema))
            schema = writers[0].schema
            if not table.schema.equals(schema, check_metadata=False):
                try:
                    table = table.cast(schema)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    name, was, now = next(
                        (f.name, f.type, table.schema.field(f.name).type)
                        for f in schema
                        if table.schema.field(f.name).type != f.type
                    )
                    raise ValueError(
                        f"{str(out)!r}: column {name!r} reads as {was} in the first block "
                        f"of rows and as {now} in a later one, and a Parquet column has one "
                        "type; give the column one kind of value, or write CSV."
                    ) from None
            writers[0].write_table(table)

        try:
            yield parquet
        except BaseException:
            for writer in writers:  # its temporary file is removed next
                with contextlib.suppress(Exception):
                    writer.close()
            raise
        for writer in writers:
            writer.close()


def _csv_writer(write, sep: str = ","):
    """``write(frame)`` of CSV text (cells separated by ``sep``), the header with the first
    frame only."""
    first = [True]

    def csv(frame) -> None:
        write(csv_text(frame, first[0], sep))
        first[0] = False

    return csv


def csv_text(frame, header: bool = True, sep: str = ",") -> str:
    """``frame.to_csv(index=False, header=header, float_format="%.9g", sep=sep)``, the same
    text, faster for columns of numbers, flags and text: each value is spelled once, as
    pandas spells it (``%.9g``, an empty cell for a missing value), and Python's csv writer
    quotes as pandas' does. Other columns (dates, mixed objects) go through pandas."""
    import csv
    import io

    import numpy as np
    import pandas as pd

    spelled = []
    numbers = True  # no cell can need quotes
    for name in frame.columns:
        col = frame[name]
        kind = col.dtype.kind
        if kind == "f":
            values = col.to_numpy()
            text = [f"{v:.9g}" for v in values.tolist()]
            for i in np.flatnonzero(np.isnan(values)).tolist():
                text[i] = ""
        elif kind in "iub":
            text = [str(v) for v in col.tolist()]
        elif kind == "O" and pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
            text = ["" if v is None or v != v else v for v in col.tolist()]
            numbers = False
        else:
            return frame.to_csv(index=False, header=header, float_format="%.9g", sep=sep)
        spelled.append(text)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    if header:
        writer.writerow([str(c) for c in frame.columns])
    if numbers and len(spelled) > 1:  # (a row of one empty cell is written '""')
        out.write("".join(f"{line}\n" for line in map(sep.join, zip(*spelled, strict=True))))
    else:
        writer.writerows(zip(*spelled, strict=True))
    return out.getvalue()
