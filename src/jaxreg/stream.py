"""Tables larger than memory: a Parquet or CSV file read in blocks (``pyarrow``), never
whole. Rank 2: imports validate, data and (for text columns and missing values) preprocess.

``TableStream(path, target)`` is what ``MLPRegressor.fit`` streams from (and ``jaxreg fit
--max-memory``). One pass over the file (``scan``) counts the rows, computes the scaler
statistics of the training rows (exact, in float64, combined block by block) and keeps
the held-out rows (up to ``held_rows``) and an evenly spaced sample of training rows (for
the history's training MSE). Which rows are held out is decided by a hash of the row's
index in the file and the seed: a stable split that needs no second pass and does not
depend on how the file is cut into row groups or blocks. Every epoch then reads the file
again (``batches``): Parquet row groups in a random order, their rows gathered into a
shuffle buffer of ``buffer_rows`` rows, permuted and cut into minibatches. When the buffer
holds every training row, the order is exactly the one the in-memory engine draws for
that epoch (the caller hands the order in), so streaming equals in-memory training.

Why pyarrow: it is already how jaxreg reads Parquet (pandas' engine), it reads one row
group or one CSV block at a time with its own threads, and it needs no new dependency.
Grain is built for records and multi-host input pipelines over many files; for one
table of numeric columns, pyarrow's readers are the smaller, faster tool.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxreg import validate
from jaxreg.data import Standardizer

__all__ = ["StreamStats", "TableStream", "held_out_mask", "held_out_sets", "parse_size"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def held_out_mask(rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each file row (its 0-based index) is held out: ``splitmix64(row, seed)``
    mapped to [0, 1) below ``fraction``. A pure function of the row index and the seed."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows, np.uint64) * _GOLDEN + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53)) < fraction


def held_out_sets(
    rows: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The validation and test masks of file rows (0-based indices): the hash
    (``held_out_mask``) below ``val_fraction``, and in ``[val_fraction, val_fraction +
    test_fraction)``. The other rows train."""
    val = held_out_mask(rows, val_fraction, seed)
    return val, held_out_mask(rows, val_fraction + test_fraction, seed) & ~val


def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """Bytes from ``"256MB"``, ``"2GiB"``, ``"1.5G"`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().upper().replace(" ", "")
        units = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        num = s.rstrip("IB") if s.endswith("IB") else s.rstrip("B")
        unit = ""
        while num and num[-1] in "KMGT":
            unit, num = num[-1], num[:-1]
        try:
            value = int(float(num) * units[unit])
        except ValueError:
            value = -1
    if value < 1:
        raise ValueError(
            f"{what} must be a size such as 256MB or 2GB (bytes: K, M, G, T are powers of "
            f"1024). Got {text!r} instead."
        )
    return value


class _NeedsPreprocessing(Exception):
    """A feature column holds text or a missing value: the scan fits the preprocessing."""


@dataclass
class StreamStats:
    """What the scan learned: rows, the scalers' statistics (float64), the held-out rows
    and the history sample (raw values)."""

    n_rows: int
    n_train: int
    n_val: int
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    x_val: np.ndarray  # (<= held_rows, d) float64
    y_val: np.ndarray
    x_sample: np.ndarray  # training rows every ``stride``-th training row
    y_sample: np.ndarray
    stride: int
    n_train_local: int = 0  # this process's share (all of them in one process)
    n_dropped: int = 0  # rows left out for a missing value (drop_na), all processes
    n_test: int = 0  # test rows (test_fraction), never trained on nor watched
    x_test: np.ndarray | None = None  # (<= held_rows, d) float64, kept test rows
    y_test: np.ndarray | None = None


@dataclass
class TableStream:
    """A table streamed from ``path`` (``.parquet`` or ``.csv``/``.tsv``).

    Args:
      path: the file.
      target: the target column name, or a list of them.
      features: feature columns (None: every other column). Numeric columns without
        missing values stream as they are; text columns and missing values go through
        the preprocessing below. The targets must be numeric and complete (one-line errors
        name the column and row).
      val_fraction: the fraction of rows held out (by a hash of the row index and
        ``seed``), for validation and early stopping.
      test_fraction: a further fraction held out by the same hash (the rows whose hash
        falls in ``[val_fraction, val_fraction + test_fraction)``), never trained on nor
        watched: ``StreamStats.x_test`` keeps up to ``held_rows`` of them.
      seed: the split's seed.
      buffer_rows: rows of the shuffle buffer (the most rows held at once, besides one
        block being read, the minibatches in flight and the held-out rows).
      block_rows: rows read at once.
      held_rows: the most held-out rows kept in memory (a hash-random sample of them
        beyond); validation uses these.
      sample_rows: about how many training rows the history's training MSE uses.
      process_index, process_count: this process's share of a multi-process run: Parquet
        row group ``g`` (CSV block ``g``) is read by process ``g % process_count`` alone;
        ``scan(gather)`` combines the statistics of every share.
      categorical, numeric, missing_indicator, max_categories: as ``TablePreprocessor``'s.
        When the features need it (a text column, a missing value, or one of these
        given), a first pass fits a ``TablePreprocessor`` (``preprocessor`` afterwards):
        the categories from every row, each column's median from an evenly spaced sample
        of at most ``MEDIAN_ROWS`` (and ``held_rows``) values (all of them in a smaller
        table); every block is then read through it, and ``feature_names`` become its
        output columns. Several processes each pass over their own share and combine the
        counts and samples (``prepare(gather)``/``scan(gather)``); they decide that the
        features need it before reading (the Parquet schema and null counts, the types of
        a CSV file's first block, or one of these given), where one process also finds
        a text or missing value as it reads.
      drop_na: leave out every row with a missing value in a used column (a feature or a
        target; NaN or empty), as ``jaxreg fit --drop-na`` does in memory; the split
        stays the file rows' (``StreamStats.n_dropped`` counts them).
      labels: how messages name the options and rows (``preprocess.Labels``; the CLI
        passes its flags); default the parameters and the file's row numbers.
    """

    path: Any
    target: Any
    features: Sequence[str] | None = None
    val_fraction: float = 0.1
    seed: int = 0
    test_fraction: float = 0.0
    buffer_rows: int = 1 << 20
    block_rows: int = 1 << 16
    held_rows: int = 1 << 18
    sample_rows: int = 1 << 14
    process_index: int = 0
    process_count: int = 1
    categorical: Sequence[str] | None = None
    numeric: Sequence[str] | None = None
    missing_indicator: bool = False
    max_categories: int | None = None
    drop_na: bool = False
    labels: Any = None
    stats: StreamStats | None = None
    # the most rows this stream has held at once (buffer + block + held rows): a test's
    # proof that the table is never materialized
    max_rows_held: int = 0
    _columns: list[str] = field(default_factory=list)

    def __post_init__(self):
        owner = "TableStream"
        self.path = pathlib.Path(self.path)
        self.targets = [self.target] if isinstance(self.target, str) else list(self.target)
        if not self.targets or not all(isinstance(t, str) for t in self.targets):
            raise validate.bad(owner, "target", "a column name or a list of them", self.target)
        validate.real(owner, "val_fraction", self.val_fraction, low=0, high=1, high_open=True)
        validate.real(owner, "test_fraction", self.test_fraction, low=0, high=1, high_open=True)
        if self.val_fraction + self.test_fraction >= 1:
            raise validate.bad(
                owner,
                "test_fraction",
                f"below 1 - val_fraction = {1 - self.val_fraction:g} (training rows must remain)",
                self.test_fraction,
            )
        for name in ("buffer_rows", "block_rows", "held_rows", "sample_rows"):
            validate.integer(owner, name, getattr(self, name), low=1)
        suffix = self.path.suffix.lower()
        if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
            raise validate.bad(owner, "path", "a .parquet, .csv or .tsv file", str(self.path))
        if not self.path.is_file():
            raise ValueError(f"Data file {str(self.path)!r} does not exist.")
        self.parquet = suffix in (".parquet", ".pq")
        names = self._schema_names()
        missing = [c for c in self.targets + list(self.features or ()) if c not in names]
        if missing:
            raise ValueError(
                f"Column {missing[0]!r} is not in {self.path.name} (columns: "
                f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''})."
            )
        self.feature_names = (
            list(self.features)
            if self.features is not None
            else [c for c in names if c not in self.targets]
        )
        if not self.feature_names:
            raise ValueError(f"{self.path.name} has no feature columns besides the target(s).")
        self.raw_feature_names = list(self.feature_names)
        self.preprocessor: Any = None  # a fitted TablePreprocessor when the features need one
        validate.boolean(owner, "missing_indicator", self.missing_indicator)
        validate.boolean(owner, "drop_na", self.drop_na)
        self._dropped_now = 0  # rows left out by drop_na in the current pass
        self._columns = self.feature_names + self.targets
        self._buffer_rows_now = 0  # rows in the shuffle buffer now
        self._held_rows_now = 0  # held-out rows kept
        self.rows_read = 0  # rows this process has read (all passes)
        self._cache: tuple | None = None  # (transform, x, y) of a share the buffer holds
        validate.integer(owner, "process_count", self.process_count, low=1)
        validate.integer(
            owner, "process_index", self.process_index, low=0, high=self.process_count - 1
        )

    # ------------------------------------------------------------ reading

    def _schema_names(self) -> list[str]:
        if self.parquet:
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(self.path).schema_arrow.names)
        return list(self._csv_reader().schema.names)

    def _csv_reader(self):
        import pyarrow.csv as pcsv

        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        return pcsv.open_csv(
            self.path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(delimiter=delimiter),
            # an empty text cell is missing, as pandas reads it (and numbers' cells already)
            convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
        )

    def numeric_complete(self) -> bool:
        """Whether every used column is numeric with no missing value, as far as the file
        says without being read (Parquet types and null counts; False for text files)."""
        if not self.parquet:
            return False
        counts, complete = self._parquet_nulls(self._columns)
        return self._numbers_typed(self._columns) and complete and not any(counts.values())

    def _numbers_typed(self, names: Sequence[str]) -> bool:
        """Whether the file types every column of ``names`` as numbers (the Parquet schema,
        or the types pyarrow read from a CSV's first block)."""
        import pyarrow as pa

        if self.parquet:
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(self.path).schema_arrow
        else:
            schema = self._csv_reader().schema
        types = [schema.field(name).type for name in names]
        return all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types)

    def _parquet_nulls(self, names: Sequence[str]) -> tuple[dict[str, int], bool]:
        """Each column's missing values that the Parquet metadata counts over the row
        groups, and whether every row group counted them (without reading the file)."""
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self.path).metadata
        index = {meta.schema.column(j).name: j for j in range(meta.num_columns)}
        counts = dict.fromkeys(names, 0)
        complete = True
        for g in range(meta.num_row_groups):
            for name in names:
                stats = meta.row_group(g).column(index[name]).statistics
                if stats is None or not stats.has_null_count:
                    complete = False
                else:
                    counts[name] += stats.null_count
        return counts, complete

    def row_groups(self) -> list[tuple[int, int]]:
        """``(first row, rows)`` of each Parquet row group (one unit for CSV)."""
        if not self.parquet:
            return [(0, -1)]
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self.path).metadata
        out, start = [], 0
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            out.append((start, rows))
            start += rows
        return out

    def mine(self, unit: int) -> bool:
        """Whether row group (CSV block) ``unit`` is this process's to read."""
        return unit % self.process_count == self.process_index

    def _blocks(
        self, groups: Sequence[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(row indices in the file, values (r, d + k) float64)`` blocks of at most
        ``block_rows`` rows of this process's share: the given Parquet row groups in that
        order (its own in file order by default); CSV: its own blocks in file order. The
        features through ``preprocessor`` when there is one."""
        for rows, batch in self._batches(groups):
            if self.preprocessor is None:
                values = self._numeric(batch, rows)
            else:
                x = self.preprocessor.transform(self._frame(batch, rows)).to_numpy(np.float64)
                y = self._numeric(batch.select(self.targets), rows)
                values = np.concatenate([x, y], axis=1)
            self._held(len(values))
            self.rows_read += len(values)
            yield rows, values

    def _frame(self, batch, rows: np.ndarray):
        """The raw feature columns of ``batch`` as a pandas frame indexed by file row."""
        import pandas as pd

        frame = batch.select(self.raw_feature_names).to_pandas()
        frame.index = pd.Index(rows)
        return frame

    def _batches(self, groups: Sequence[int] | None = None) -> Iterator[tuple[np.ndarray, Any]]:
        """``(row indices in the file, pyarrow record batch of the used columns)``, as
        ``_blocks``; with ``drop_na``, the rows with a missing value left out."""
        for start, batch in self._raw_batches(groups):
            rows = np.arange(start, start + batch.num_rows)
            if self.drop_na:
                keep = self._complete(batch)
                if not keep.all():
                    import pyarrow as pa

                    self._dropped_now += int((~keep).sum())
                    batch, rows = batch.filter(pa.array(keep)), rows[keep]
            yield rows, batch

    @staticmethod
    def _complete(batch) -> np.ndarray:
        """Which rows of ``batch`` have a value in every column (no null, no float NaN)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        keep = np.ones(batch.num_rows, bool)
        for col in batch.columns:
            if col.null_count:
                keep &= np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), bool)
            if pa.types.is_floating(col.type):
                keep &= ~np.asarray(
                    pc.fill_null(pc.is_nan(col), False).to_numpy(zero_copy_only=False), bool
                )
        return keep

    def _raw_batches(self, groups: Sequence[int] | None = None) -> Iterator[tuple[int, Any]]:
        """``(first row index, pyarrow record batch of the used columns)``."""
        if self.parquet:
            import pyarrow.parquet as pq

            f = pq.ParquetFile(self.path)
            starts = [s for s, _ in self.row_groups()]
            every = range(f.metadata.num_row_groups)
            for g in [g for g in every if self.mine(g)] if groups is None else groups:
                start = starts[g]
                for batch in f.iter_batches(
                    batch_size=self.block_rows, row_groups=[g], columns=self._columns
                ):
                    yield start, batch
                    start += batch.num_rows
        else:
            start = unit = 0
            for batch in self._csv_blocks():
                batch = batch.select(self._columns)
                for off in range(0, batch.num_rows, self.block_rows):
                    part = batch.slice(off, self.block_rows)
                    if self.mine(unit):
                        yield start, part
                    start += part.num_rows
                    unit += 1

    def _csv_blocks(self) -> Iterator[Any]:
        """The CSV file's record batches; a value that does not fit the type its column
        took from the first block is one line naming the column (pyarrow names its
        position)."""
        import re

        import pyarrow as pa

        reader = self._csv_reader()
        names = reader.schema.names
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                found = re.search(r"CSV column #(\d+)", str(exc))
                column = f" (column {names[int(found.group(1))]!r})" if found else ""
                raise ValueError(
                    f"{self.path.name}: {str(exc).strip()}{column}. A streamed CSV file's "
                    "columns keep the types read from its first 4 MiB: give each column "
                    "one kind of value, or convert the file to Parquet."
                ) from None
            yield batch

    def _numeric(self, batch, rows: np.ndarray) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        cols = []
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            plain = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
            if (not plain or col.null_count) and self._can_preprocess(name):
                raise _NeedsPreprocessing(name)
            # what cannot be preprocessed: a target, or any column of a multi-process run
            numeric = self.labels.numeric if self.labels is not None else "numeric"
            rule = (
                "a target must hold numbers"
                if name in self.targets
                else "several processes choose the preprocessing before reading the file "
                "(from the Parquet schema and null counts, or the types of a CSV file's "
                f"first block), so name the column in {numeric} to have it preprocessed"
            )
            if not plain:
                raise ValueError(
                    f"Column {name!r} of {self.path.name} holds {col.type} values: {rule}."
                )
            if col.null_count:
                row = int(rows[int(pc.index(pc.is_null(col), True).as_py())])
                raise ValueError(
                    f"Column {name!r} of {self.path.name} has a missing value in row "
                    f"{row + 1}: {rule}"
                    + (
                        ", every one of them (drop such rows first)."
                        if name in self.targets
                        else "."
                    )
                )
            cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))
        values = np.stack(cols, axis=1) if cols else np.zeros((batch.num_rows, 0))
        if not np.isfinite(values).all():
            r, c = (int(v) for v in np.argwhere(~np.isfinite(values))[0])
            raise ValueError(
                f"Column {batch.schema.names[c]!r} of {self.path.name} has the value "
                f"{values[r, c]} in row {int(rows[r]) + 1}: only finite numbers can be trained on."
            )
        return values

    def _can_preprocess(self, name: str) -> bool:
        """Whether a text or missing value in column ``name`` calls for the preprocessing
        (a feature column, one process, none fitted yet) rather than an error."""
        return (
            self.preprocessor is None and self.process_count == 1 and name in self.raw_feature_names
        )

    def _held(self, extra: int) -> None:
        held = extra + self._buffer_rows_now + self._held_rows_now
        self.max_rows_held = max(self.max_rows_held, held)

    # ------------------------------------------------------------ the scan

    def scan(self, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> StreamStats:
        """The statistics (``_scan``), after the preprocessing's own pass when the features
        need one: asked for (``categorical``, ``numeric``, ``missing_indicator``), or found
        (a text or missing value in a feature column ends the scan, which then starts
        again through the fitted preprocessor). Cached."""
        if self.stats is not None:
            return self.stats
        self.prepare(gather)
        try:
            return self._scan(gather)
        except _NeedsPreprocessing:  # one process only (``_can_preprocess``)
            self._held_rows_now = 0
            self._fit_preprocessor()
            return self._scan(gather)

    def prepare(self, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> TableStream:
        """Fit the preprocessing now when the features need it as far as the file tells
        before it is read (a column that is not numbers in the Parquet schema or in the
        types of the CSV's first block, a Parquet null count) or when it was asked for
        (``categorical``, ``numeric``, ``missing_indicator``): ``feature_names`` are then
        final, for sizing the buffers by them. ``scan`` does it too."""
        if self.preprocessor is None and self.stats is None:
            asked = self.categorical or self.numeric or self.missing_indicator
            if asked or self._schema_needs_preprocessing():
                self._fit_preprocessor(gather)
        return self

    def _schema_needs_preprocessing(self) -> bool:
        if not self._numbers_typed(self.raw_feature_names):
            return True
        if not self.parquet or self.drop_na:
            return False
        return any(self._parquet_nulls(self.raw_feature_names)[0].values())

    def _fit_preprocessor(self, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """The preprocessing's pass over the raw feature columns (``preprocess.fit_blocks``):
        ``preprocessor`` fitted, ``feature_names`` its output columns. Several processes
        each read their own share and combine their counts and samples through ``gather``
        (required then)."""
        from jaxreg.preprocess import MAX_CATEGORIES, MEDIAN_ROWS, Labels, fit_blocks

        if self.process_count > 1 and gather is None:
            raise ValueError(
                "TableStream.prepare needs gather (jaxreg.runner.gather_processes) in a run "
                f"of {self.process_count} processes: each reads only its share of the table."
            )
        labels = self.labels or Labels(where=lambda row: f"row {row + 1} of {self.path.name}")

        def frames():
            for rows, batch in self._batches():
                self._held(batch.num_rows)
                self.rows_read += batch.num_rows
                yield self._frame(batch, rows)

        self.preprocessor = fit_blocks(
            frames(),
            categorical=self.categorical,
            numeric=self.numeric,
            missing_indicator=self.missing_indicator,
            max_categories=MAX_CATEGORIES if self.max_categories is None else self.max_categories,
            labels=labels,
            # each column's sample no larger than the held-out rows kept: within the budget
            median_rows=min(MEDIAN_ROWS, self.held_rows),
            gather=gather if self.process_count > 1 else None,
        )
        self.feature_names = [str(c) for c in self.preprocessor.feature_names_out_]

    def _scan(self, gather: Callable[[np.ndarray], np.ndarray] | None = None) -> StreamStats:
        """One pass: row counts, the training rows' mean and population std (float64,
        combined block by block with Chan's update), the held-out rows and the history
        sample. In a multi-process run, ``gather(a)`` stacks every process's ``a``
        (``jax.experimental.multihost_utils.process_allgather``): the counts and statistics
        are combined across the shares (the held-out and sample rows stay each process's
        own)."""
        d = len(self.feature_names)
        total_rows = sum(r for _, r in self.row_groups()) if self.parquet else None
        n = n_train = n_val = 0
        mean = np.zeros(d + len(self.targets))
        m2 = np.zeros_like(mean)
        held: list[np.ndarray] = []
        held_count = 0
        tests: list[np.ndarray] = []
        test_count = n_test = 0
        sample: list[np.ndarray] = []
        stride = max(1, math.ceil((total_rows or 0) / self.sample_rows)) if total_rows else 0
        seen_train = 0
        self._dropped_now = 0
        for rows, values in self._blocks():
            val, test = held_out_sets(rows, self.val_fraction, self.test_fraction, self.seed)
            tr = values[~(val | test)]
            if len(tr):
                bm = tr.mean(axis=0)
                bm2 = ((tr - bm) ** 2).sum(axis=0)
                total = n_train + len(tr)
                delta = bm - mean
                mean = mean + delta * (len(tr) / total)
                m2 = m2 + bm2 + delta**2 * (n_train * len(tr) / total)
                n_train = total
                if stride:
                    pos = np.arange(seen_train, seen_train + len(tr))
                    sample.append(tr[pos % stride == 0])
                else:  # CSV: keep every row until the count is known, then thin
                    sample.append(tr)
                seen_train += len(tr)
            if val.any() and held_count < self.held_rows:
                take = values[val][: self.held_rows - held_count]
                held.append(take)
                held_count += len(take)
                self._held_rows_now = held_count
            if test.any() and test_count < self.held_rows:
                take = values[test][: self.held_rows - test_count]
                tests.append(take)
                test_count += len(take)
                self._held_rows_now = held_count + test_count
            n_val += int(val.sum())
            n_test += int(test.sum())
            n += len(values)
            if not stride and sum(len(a) for a in sample) > 4 * self.sample_rows:
                sample = [np.concatenate(sample)[::2]]  # CSV: thin to every other row
        n_train_local = n_train
        dropped = self._dropped_now
        if self.process_count > 1:
            if gather is None:
                raise ValueError("TableStream.scan needs gather in a multi-process run.")
            width = len(mean)
            shares = np.asarray(
                gather(np.concatenate([[n, n_train, n_val], mean, m2, [dropped, n_test]]))
            )
            n, n_train, n_val = (int(v) for v in shares[:, :3].sum(axis=0))
            dropped, n_test = (int(v) for v in shares[:, -2:].sum(axis=0))
            mean, m2, count = np.zeros(width), np.zeros(width), 0
            for share in shares:  # Chan's update, in process order
                c = int(share[1])
                if c == 0:
                    continue
                delta = share[3 : 3 + width] - mean
                total = count + c
                mean = mean + delta * (c / total)
                m2 = m2 + share[3 + width : 3 + 2 * width] + delta**2 * (count * c / total)
                count = total
        if n_train == 0:
            raise ValueError(
                f"{self.path.name} has no training rows ({n} rows, val_fraction "
                f"{self.val_fraction})."
            )
        width = d + len(self.targets)
        hv = np.concatenate(held) if held else np.zeros((0, width))
        ht = np.concatenate(tests) if tests else np.zeros((0, width))
        hs = np.concatenate(sample) if sample else np.zeros((0, width))
        if not stride:
            stride = max(1, math.ceil(len(hs) / self.sample_rows))
            hs = hs[::stride]
        std = np.sqrt(m2 / n_train)
        self.stats = StreamStats(
            n,
            n_train,
            n_val,
            mean[:d],
            std[:d],
            mean[d:],
            std[d:],
            hv[:, :d],
            hv[:, d:],
            hs[:, :d],
            hs[:, d:],
            stride,
            n_train_local,
            dropped,
            n_test,
            ht[:, :d],
            ht[:, d:],
        )
        return self.stats

    def scalers(self, enabled: bool = True) -> tuple[Standardizer, Standardizer]:
        """Standardizers of X and y from the scan (as ``Standardizer.fit`` of the training
        rows: population std, spread 0 -> 1)."""
        s = self.scan()
        if not enabled:
            d, k = len(s.x_mean), len(s.y_mean)
            return (
                Standardizer(np.zeros(d), np.ones(d)),
                Standardizer(np.zeros(k), np.ones(k)),
            )

        def one(mean, std, what, names):
            if not (np.isfinite(mean).all() and np.isfinite(std).all()):
                j = int(np.argmin(np.isfinite(mean) & np.isfinite(std)))
                raise ValueError(
                    f"{what} column {names[j]!r} cannot be standardized: its mean or spread "
                    "is not representable. Rescale the column, e.g. change its units."
                )
            return Standardizer(mean, np.where(std > 0, std, 1.0))

        return (
            one(s.x_mean, s.x_std, "X", self.feature_names),
            one(s.y_mean, s.y_std, "y", self.targets),
        )

    # ------------------------------------------------------------ epochs

    def batches(
        self,
        batch: int,
        order: Callable[[int, int], np.ndarray],
        transform: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One epoch of minibatches ``(x, y, w)``: ``w`` 1 for rows, 0 for the padding of
        the last, partial batch.

        ``order(rows, i)`` gives the permutation of the ``i``-th buffer of ``rows`` rows
        and, with ``i = -1``, the order of the row groups (``rows`` of them); when one
        buffer holds every training row, it is permuted once, in file order, as the
        in-memory engine would. ``transform(values)`` standardizes a block's training rows
        into float32 ``(x, y)``.
        """
        groups = self.row_groups()
        stats = self.scan()
        whole = stats.n_train_local <= self.buffer_rows
        sequence = (
            list(range(len(groups)))
            if whole or not self.parquet
            else [int(g) for g in order(len(groups), -1)]
        )
        sequence = [g for g in sequence if not self.parquet or self.mine(g)]
        d = len(self.feature_names)
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        held = 0
        index = 0
        carry_x = carry_y = None

        def emit(x, y, final: bool):
            nonlocal index
            perm = order(len(x), index)
            index += 1
            x, y = x[perm], y[perm]
            full = len(x) // batch * batch
            for s in range(0, full, batch):
                yield x[s : s + batch], y[s : s + batch], np.ones(batch, np.float32)
            rest_x, rest_y = x[full:], y[full:]
            if final and len(rest_x):
                pad = batch - len(rest_x)
                w = np.concatenate([np.ones(len(rest_x)), np.zeros(pad)]).astype(np.float32)
                yield (
                    np.concatenate([rest_x, np.zeros((pad, d), rest_x.dtype)]),
                    np.concatenate([rest_y, np.zeros((pad, rest_y.shape[1]), rest_y.dtype)]),
                    w,
                )
                return None
            return (rest_x, rest_y) if len(rest_x) else None

        cached = self._cache if whole and self._cache and self._cache[0] is transform else None
        if cached is not None:  # the rows of an earlier epoch of this fit: no file read
            yield from emit(cached[1], cached[2], final=True)
            return
        for g in sequence:
            for rows, values in self._blocks([g] if self.parquet else None):
                out = held_out_mask(rows, self.val_fraction + self.test_fraction, self.seed)
                tr = values[~out]
                x, y = transform(tr)
                pending_x.append(x)
                pending_y.append(y)
                held += len(x)
                self._buffer_rows_now = held
                if not whole and held >= self.buffer_rows:
                    bx, by = np.concatenate(pending_x), np.concatenate(pending_y)
                    if carry_x is not None:
                        bx, by = np.concatenate([carry_x, bx]), np.concatenate([carry_y, by])
                    gen = emit(bx, by, final=False)
                    rest = yield from gen
                    carry_x, carry_y = rest if rest is not None else (None, None)
                    pending_x, pending_y = [], []
                    held = 0 if carry_x is None else len(carry_x)
                    self._buffer_rows_now = held
            if not self.parquet:
                break
        parts_x = ([carry_x] if carry_x is not None else []) + pending_x
        parts_y = ([carry_y] if carry_y is not None else []) + pending_y
        if parts_x:
            bx, by = np.concatenate(parts_x), np.concatenate(parts_y)
            if whole:  # the share fits in the buffer: keep it for the next epochs
                self._cache = (transform, bx, by)
            yield from emit(bx, by, final=True)
        if not whole:
            self._buffer_rows_now = 0
