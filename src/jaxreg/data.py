"""Data: validated arrays in, synthetic data sets of the seeds, and a standardizer.

Convention: arrays entering the library are ``x`` of shape ``(n, d)`` and ``y`` of
shape ``(n, k)`` (column vectors for one feature or one target), as in the lecture.
Rank 0: imports nothing from jaxreg.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Dataset",
    "Standardizer",
    "lecture_data",
    "lecture_data_earlier",
    "lecture_function",
    "linear_blog_data",
    "polynomial_data",
    "as_2d_float",
    "check_xy",
    "training_split",
]


class Dataset(NamedTuple):
    """Training (and optionally validation) arrays; a pytree the engine consumes.

    ``x``: ``(n, d)``; ``y``: ``(n, k)``; ``w``: ``(n,)`` sample weights or None;
    ``x_val``/``y_val``: held-out rows or None.

    Padded data (``pad_rows``): ``n`` is the number of real training rows (an int32
    scalar, traced), the rows after them have weight 0 in ``w`` and are never sampled
    into a minibatch; ``w_val`` is 1 for real validation rows and 0 for padding. Padding
    lets data of different row counts share one compiled executable.
    """

    x: Any  # JAX or NumPy arrays
    y: Any
    x_val: Any = None
    y_val: Any = None
    w: Any = None
    n: Any = None
    w_val: Any = None


def bucket_rows(n: int) -> int:
    """The padded size for ``n`` rows: at least 16, else ``n`` rounded up to a multiple of
    ``2**(floor(log2(n)) - 2)``: four sizes per doubling, at most 25% extra rows."""
    if n <= 16:
        return 16
    step = 2 ** (int(n).bit_length() - 3)
    return -(-n // step) * step


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``size`` rows."""
    extra = size - a.shape[0]
    return a if extra == 0 else np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])


# ---------------------------------------------------------------- validation


def as_2d_float(name: str, a, *, dtype=np.float32, allow_1d: bool = True) -> np.ndarray:
    """Convert ``a`` to a finite 2-D float array or raise a ValueError naming ``name``.

    A 1-D input becomes a column when ``allow_1d``; anything else must already be 2-D.
    """
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be a numeric array; could not convert it: {exc}") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        bad = _first_non_numeric(arr)
        raise ValueError(f"{name} must be numeric. Got a non-numeric value {bad!r}.")
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must be real-valued. Got complex dtype {arr.dtype}.")
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_samples, n_columns). "
            f"Got an array with shape {arr.shape}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row. Got shape {arr.shape}.")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column. Got shape {arr.shape}.")
    arr = arr.astype(dtype, copy=False)
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        row = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise ValueError(
            f"{name} must be finite. Got {n_bad} NaN or infinite value(s), the first in row {row}."
        )
    return arr


def _first_non_numeric(arr: np.ndarray, strict: bool = False):
    """The first value ``float`` refuses; without one, None if ``strict`` else the first."""
    for v in arr.ravel():
        try:
            float(v)
        except (TypeError, ValueError):
            return v
    return None if strict or not arr.size else arr.ravel()[0]


def _first_non_numeric_text(values):
    """The first string (or bytes) among ``values`` that ``float`` refuses, else None;
    other objects are left to the caller's own validation."""
    text = [v for v in np.asarray(values, dtype=object).ravel() if isinstance(v, str | bytes)]
    return _first_non_numeric(np.array(text, dtype=object), strict=True)


def check_not_text(name: str, a) -> None:
    """Refuse text in what should be numbers, naming ``name``, the column (for a
    DataFrame) and the first offending value (plain, not ``np.str_('a')``)."""
    dtypes = getattr(a, "dtypes", None)
    if dtypes is not None and not hasattr(a, "dtype"):  # a DataFrame
        for col, dt in zip(a.columns, dtypes, strict=True):
            bad = None
            if getattr(dt, "kind", "O") in "OUS":
                bad = _first_non_numeric_text(a[col])
            if bad is not None:
                raise ValueError(
                    f"{name} must be numeric. Column {str(col)!r} holds the "
                    f"non-numeric value {str(bad)!r}."
                )
        return
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is None and isinstance(a, list | tuple):
        try:
            kind = np.asarray(a).dtype.kind
        except Exception:  # ragged: the caller's own validation reports it
            return
    bad = _first_non_numeric_text(a) if kind in ("U", "S", "O") else None
    if bad is not None:
        raise ValueError(f"{name} must be numeric. Got the non-numeric value {str(bad)!r}.")


def check_xy(x, y, *, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair ``(x, y)``: 2-D (a 1-D array is a column), finite, equal lengths."""
    x = as_2d_float("x", x, dtype=dtype)
    y = as_2d_float("y", y, dtype=dtype)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows. "
            f"Got x with {x.shape[0]} rows and y with {y.shape[0]}."
        )
    return x, y


# ---------------------------------------------------------------- the split


def training_split(
    n: int, validation_fraction: float, random_state
) -> tuple[int, np.ndarray, np.ndarray]:
    """The training seed and the training/validation rows, as every door draws them.

    ``random_state`` (an int, a ``numpy.random.RandomState`` or None) first draws the
    training seed (``randint(0, 2**31 - 1)``), then a permutation whose first
    ``ceil(validation_fraction * n)`` rows are held out. Returns ``(seed, train, val)``, the
    row positions sorted; ``val`` is empty when the fraction is 0.
    """
    from sklearn.utils import check_random_state

    rs = check_random_state(random_state)
    seed = int(rs.randint(0, 2**31 - 1))
    if validation_fraction <= 0:
        return seed, np.arange(n), np.zeros(0, dtype=int)
    n_val = int(np.ceil(validation_fraction * n))
    perm = rs.permutation(n)
    return seed, np.sort(perm[n_val:]), np.sort(perm[:n_val])


def holdout_split(
    n: int, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, validation, test)`` row positions, sorted, as ``jaxreg fit`` draws them.

    The test rows come first, from scikit-learn's ``train_test_split`` with
    ``random_state=seed`` (none when ``test_fraction`` is 0); the validation rows are then
    drawn from the others by ``training_split`` with the same seed, exactly as the estimator
    draws them from the rows it is given.
    """
    rows = np.arange(n)
    test = rows[:0]
    if test_fraction > 0:
        from sklearn.model_selection import train_test_split

        rows, test = train_test_split(rows, test_size=test_fraction, random_state=seed)
        rows, test = np.sort(rows), np.sort(test)
    _, tr, val = training_split(len(rows), validation_fraction, seed)
    return rows[tr], rows[val], test


# ---------------------------------------------------------------- standardizer


_TRANSFORM_ROWS = 65_536  # rows a block in Standardizer.transform_checked


class Standardizer(NamedTuple):
    """Per-column affine map ``z = (a - mean) / scale`` with population std (ddof=0).

    Columns with zero spread get scale 1, so constant columns map to 0 instead of NaN.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls, a, *, weights=None, enabled: bool = True, what: str = "x", names=None
    ) -> Standardizer:
        """Per-column (weighted) mean and population standard deviation of ``a`` ``(n, d)``.

        A column whose statistics are not representable (its mean, standard deviation or
        variance overflows) is a ``ValueError`` naming ``what`` and the column (``names``
        or its index): standardizing it would silently give a broken model.
        """
        a = np.asarray(a)
        if not enabled:
            return cls(np.zeros(a.shape[1], a.dtype), np.ones(a.shape[1], a.dtype))
        with np.errstate(over="ignore", invalid="ignore"):
            if weights is None:
                mean = a.mean(axis=0)
                scale = a.std(axis=0)
            else:
                mean = np.average(a, axis=0, weights=weights)
                scale = np.sqrt(np.average((a - mean) ** 2, axis=0, weights=weights))
            ok = (
                np.isfinite(mean)
                & np.isfinite(scale)
                & np.isfinite(np.square(scale, dtype=np.float64))
            )
        if not ok.all():
            j = int(np.argmin(ok))
            col = repr(str(names[j])) if names is not None else str(j)
            big = float(np.max(np.abs(a[:, j])))
            raise ValueError(
                f"{what} column {col} cannot be standardized: its mean or spread is not "
                f"representable in {a.dtype} (values up to {big:.3g} in magnitude; the "
                "variance overflows). Rescale the column, e.g. change its units."
            )
        if weights is None:
            scale = np.where(scale > 0, scale, 1).astype(a.dtype)
            return cls(mean.astype(a.dtype), scale)
        return cls(mean, np.where(scale > 0, scale, 1.0))

    def transform(self, a):
        return (a - self.mean) / self.scale

    def transform_checked(self, a, dtype, *, what: str = "x", names=None) -> np.ndarray:
        """``transform(a)`` as a NumPy array of ``dtype``, refusing values that it cannot
        represent (a row far outside the range the statistics came from), naming ``what``,
        the column and the value."""
        a = np.asarray(a)
        out = np.empty(a.shape, dtype)
        bad = None
        # Block by block (float64 only for a block at a time): the same values as one pass,
        # about half the time on a million rows (the temporaries stay in the cache).
        for start in range(0, max(len(a), 1), _TRANSFORM_ROWS):
            block = slice(start, start + _TRANSFORM_ROWS)
            with np.errstate(over="ignore", invalid="ignore"):
                z = np.asarray(self.transform(np.asarray(a[block], np.float64)), np.float64)
                out[block] = z
            if not np.isfinite(out[block]).all():
                bad = np.argwhere(~np.isfinite(out[block]))[0]
                bad[0] += start
                break
        if bad is not None:
            r, c = (int(v) for v in bad)
            z = np.asarray(self.transform(np.asarray(a[r : r + 1], np.float64)), np.float64)
            col = repr(str(names[c])) if names is not None else str(c)
            raise ValueError(
                f"{what} column {col} holds the value {float(np.asarray(a)[r, c]):.6g}, "
                f"{z[0, c]:.3g} standard deviations from the training rows' mean, which "
                f"{np.dtype(dtype).name} cannot represent. Remove or fix that row, or rescale "
                "the column."
            )
        return out

    def inverse(self, z):
        return z * self.scale + self.mean

    def inverse_scale(self, s):
        """Map a spread (e.g. a standard deviation) back to the original units."""
        return s * self.scale


# ---------------------------------------------------------------- seed data sets


def lecture_function(x):
    """The lecture's regression function ``sqrt(x) + sin(x)``, without noise."""
    return x**0.5 + jnp.sin(x)


def _lecture_generate(key, n: int, x_min: float, x_max: float):
    x = jnp.linspace(x_min, x_max, num=n)
    eps = 0.2 * jax.random.normal(key, shape=(n,))
    y = x**0.5 + jnp.sin(x) + eps
    return x.reshape(n, 1), y.reshape(n, 1)


def lecture_data(seed: int = 14, n: int = 400, x_min: float = 0.0, x_max: float = 5.0):
    """The current lecture's train and validation data.

    ``PRNGKey(seed)`` is split once into a training and a validation key, and each
    set is ``x = linspace(x_min, x_max, n)``, ``y = sqrt(x) + sin(x) + 0.2 * normal``.

    Returns:
      ``(x_train, y_train, x_val, y_val)``, each ``(n, 1)`` float32.
    """
    key_train, key_val = jax.random.split(jax.random.PRNGKey(seed))
    return (
        *_lecture_generate(key_train, n, x_min, x_max),
        *_lecture_generate(key_val, n, x_min, x_max),
    )


def lecture_data_earlier(seed: int = 1234, n: int = 400):
    """The earlier lecture version's data: ``PRNGKey(1234)`` split into three keys,
    the second for training data and the third for validation data."""
    _, k1, k2 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (*_lecture_generate(k1, n, 0.0, 5.0), *_lecture_generate(k2, n, 0.0, 5.0))


def polynomial_data(
    key,
    coefficients=(1.0, -2.0, 1.0, -2.0),
    n: int = 1000,
    x_min: float = -10.0,
    x_max: float = 10.0,
):
    """The polynomial blog's data: ``polyval(coefficients, linspace) + normal``.

    The key is split; the subkey draws the noise and the other half is returned so the
    caller can initialize weights from it, as in the blog.

    Returns:
      ``(x, y, key)`` with ``x``, ``y`` of shape ``(n, 1)``.
    """
    key, subkey = jax.random.split(key, 2)
    x = jnp.linspace(x_min, x_max, n)
    y = jnp.polyval(jnp.asarray(coefficients, x.dtype), x) + jax.random.normal(subkey, shape=(n,))
    return x.reshape(-1, 1), y.reshape(-1, 1), key


def linear_blog_data(seed: int = 0, n: int = 1000, coef=(3.0, 4.0), intercept: float = 5.0):
    """The linear-SGD blog's data: ``X = 10 U(0,1)`` of shape ``(n, 2)``,
    ``y = X @ coef + U(0,1) + intercept`` (so the fitted intercept is near
    ``intercept + 0.5``). Drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    x = 10 * rng.random((n, len(coef)))
    y = x @ np.asarray(coef) + rng.random(n) + intercept
    return x, y
