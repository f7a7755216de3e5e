"""Vectorized sweeps: a grid of traced hyperparameters × seeds in one compiled call.

A sweep runs in three stages:

- **plan**: expand the grid over the architectures into configurations and group those
  that share an architecture and a static ``TrainConfig`` (``_plan``);
- **run**: one ``jaxreg.runner.fit_many`` call per group, configuration ``c`` of a group
  with seed ``s`` being its model ``c * n_seeds + s`` (``_run``). Sweeping learning rates, L2
  strengths or schedule parameters therefore never recompiles; each distinct
  architecture, optimizer or schedule is one compilation;
- **summarize**: statistics over initialization seeds with the data fixed: the mean, the
  standard deviation (``ddof=1``) and a Student-t 95% confidence interval of the mean
  validation MSE, and paired t-tests between strategies trained from the same seeds
  (SciPy's ``t`` distribution and ``ttest_rel``).

``sweep`` and the lecture's exercise (``exercise_over_seeds``) go through the same three.

Beyond the lecture's exercise (budget: at most 251 parameters, 4000 full-batch epochs, the
lecture's data), a sweep found ``LECTURE_BEST``: a 1-80-1 tanh network (241 parameters),
Adam with a cosine decay from lr 0.02 and L2 2e-4, whose mean validation MSE over 32 seeds
is 0.039969 (95% CI 0.039948-0.039989), 1.12% above the noise floor 0.039527 (the
lecture's best single run is 3.3% above it). Reproduce with ``LECTURE_BEST_COMMAND``.

Rank 5: imports data, engine, model, optim and runner.
"""

from __future__ import annotations

import difflib
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxreg import validate
from jaxreg.data import (
    Dataset,
    Standardizer,
    check_xy,
    lecture_data,
    lecture_function,
    training_split,
)
from jaxreg.engine import TrainConfig
from jaxreg.model import ACTIVATIONS, MLPSpec, apply_members
from jaxreg.optim import OPTIMIZERS, SCHEDULES, Hparams, check_hparams
from jaxreg.runner import Timings, fit_many

__all__ = [
    "EXERCISE_STRATEGIES",
    "LECTURE_BEST",
    "LECTURE_BEST_COMMAND",
    "LECTURE_SEED",
    "ExerciseReport",
    "PairedComparison",
    "Strategy",
    "SweepResult",
    "confidence_interval",
    "ensemble_predict",
    "exercise_over_seeds",
    "exercise_seeds",
    "noise_floor",
    "paired_comparison",
    "sweep",
]

LECTURE_BEST = {
    "architectures": [(80,)],
    "activation": "tanh",
    "optimizer": "adam",
    "schedule": "cosine",
    "grid": {"learning_rate": [0.02], "l2": [2e-4]},
    "epochs": 4000,
    "seeds": 32,
}
LECTURE_BEST_COMMAND = (
    "jaxreg sweep --lecture --hidden 80 --activation tanh --optimizer adam "
    "--schedule cosine --lr 0.02 --l2 2e-4 --epochs 4000 --seeds 32"
)
LECTURE_SEED = 1234  # the lecture's initialization key, PRNGKey(1234)
STATIC_GRID = ("optimizer", "schedule")  # grid names that change the compiled program


# ------------------------------------------------------------------ statistics


def _check_confidence(confidence, where: str) -> None:
    validate.real(where, "confidence", confidence, low=0, high=1, low_open=True, high_open=True)


def confidence_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of the mean: ``(mean, low, high)``.

    Non-finite values are dropped; with fewer than two values the bounds are NaN.

    Example:
      >>> mean, low, high = confidence_interval([0.040, 0.041, 0.042])
      >>> round(mean, 6), round(high - mean, 6)
      (0.041, 0.002484)
    """
    _check_confidence(confidence, "confidence_interval")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    q = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1))
    half = q * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


class PairedComparison(NamedTuple):
    """A paired comparison of per-seed values ``a - b`` (negative: ``a`` is lower/better).

    ``mean_diff`` with its Student-t confidence interval, the two-sided p-value of the
    paired t-test, the fraction of seeds where ``a < b``, and the number of pairs.
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    p_value: float
    frac_a_better: float
    n: int


def paired_comparison(a, b, confidence: float = 0.95) -> PairedComparison:
    """Paired t-test (``scipy.stats.ttest_rel``) of per-seed values of a strategy ``a``
    against a baseline ``b``.

    ``a[i]`` and ``b[i]`` must come from the same seed. Pairs with a non-finite member are
    dropped. When every difference is equal the test is degenerate: ``t`` is infinite
    with ``p = 0`` (NaN for both when the differences are all 0).

    Example:
      >>> r = paired_comparison([0.040, 0.041, 0.042], [0.041, 0.043, 0.042])
      >>> round(r.mean_diff, 6)
      -0.001
    """
    _check_confidence(confidence, "paired_comparison")
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(
            f"The 'b' parameter of paired_comparison must have the length of 'a' "
            f"({a.size}: one value per seed). Got length {b.size} instead."
        )
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = int(d.size)
    mean, low, high = confidence_interval(d, confidence)
    frac = float(np.mean(d < 0)) if n else math.nan
    if n < 2:
        return PairedComparison(mean, low, high, math.nan, math.nan, frac, n)
    if float(d.std(ddof=1)) == 0.0:  # SciPy warns and divides by zero here
        t_stat, p = (math.nan, math.nan) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        from scipy import stats

        res = stats.ttest_rel(a[keep], b[keep])
        t_stat, p = float(res.statistic), float(res.pvalue)
    return PairedComparison(mean, low, high, t_stat, p, frac, n)


def noise_floor(x_val, y_val) -> float:
    """Validation MSE of the lecture's true function ``sqrt(x) + sin(x)`` on ``(x_val, y_val)``.

    No model beats it on average over noise draws; it is the target a sweep on the
    lecture's data is measured against.
    """
    x_val, y_val = check_xy(x_val, y_val)
    return float(np.mean((np.asarray(lecture_function(x_val)) - y_val) ** 2))


def ensemble_predict(params_stacked, spec: MLPSpec | str, x) -> tuple[jax.Array, jax.Array]:
    """Deep-ensemble prediction: the mean and standard deviation over members.

    Args:
      params_stacked: params whose leaves have a leading member axis ``M`` (as returned by
        ``fit_many`` or ``SweepResult.best_params``).
      spec: the members' ``MLPSpec`` (or an activation name).
      x: inputs ``(n, d)``.

    Returns:
      ``(mean, std)``, each ``(n, k)``; ``std`` is the population standard deviation
      (``ddof=0``) of the members' predictions.
    """
    activation = spec.activation if isinstance(spec, MLPSpec) else spec
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"The 'spec' parameter of ensemble_predict must be an MLPSpec or one "
            f"of {sorted(ACTIVATIONS)}. Got {spec!r} instead."
        )
    leaves = jax.tree.leaves(params_stacked)
    x = jnp.asarray(_as_2d(x), leaves[0].dtype)
    preds = apply_members(params_stacked, x, activation)  # (M, n, k)
    return jnp.mean(preds, axis=0), jnp.std(preds, axis=0)


def _as_2d(x):
    arr = np.asarray(x)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


# ------------------------------------------------------------------ plan: inputs


def _fmt_arch(spec: MLPSpec) -> str:
    return "-".join(str(s) for s in spec.layer_sizes)


def _as_specs(architectures, n_in: int, n_out: int, activation, spec_kw) -> list[MLPSpec]:
    if architectures is None:
        architectures = [(10, 10, 10)]
    if isinstance(architectures, MLPSpec | int) or (
        isinstance(architectures, Sequence)
        and architectures
        and all(isinstance(a, int) and not isinstance(a, bool) for a in architectures)
    ):
        architectures = [architectures]
    if not isinstance(architectures, Sequence) or isinstance(architectures, str):
        raise ValueError(
            "The 'architectures' parameter of sweep must be a list of MLPSpec or "
            f"of hidden-layer widths. Got {architectures!r} instead."
        )
    if not architectures:
        raise ValueError(
            "The 'architectures' parameter of sweep must be a non-empty list. Got [] instead."
        )
    activations = [activation] if isinstance(activation, str) else list(activation)
    specs = []
    for a in architectures:
        if isinstance(a, MLPSpec):
            if a.n_inputs != n_in or a.n_outputs != n_out:
                raise ValueError(
                    f"The 'architectures' parameter of sweep must list MLPSpec "
                    f"with {n_in} input(s) and {n_out} output(s), as the data. "
                    f"Got {_fmt_arch(a)} instead."
                )
            specs.append(a)
            continue
        hidden = (a,) if isinstance(a, int) else a
        try:
            hidden = tuple(hidden)
        except TypeError:
            hidden = None
        if not hidden or any(
            isinstance(h, bool) or not isinstance(h, int | np.integer) or h < 1 for h in hidden
        ):
            raise ValueError(
                "The 'architectures' parameter of sweep must list MLPSpec or "
                f"tuples of positive hidden widths. Got {a!r} instead."
            )
        for act in activations:
            specs.append(
                MLPSpec((n_in, *(int(h) for h in hidden), n_out), activation=act, **spec_kw)
            )
    if len(set(specs)) != len(specs):
        raise ValueError(
            "The 'architectures' parameter of sweep must list distinct "
            f"architectures. Got {[_fmt_arch(s) for s in specs]} instead."
        )
    return specs


def _grid_error(rule: str, got) -> ValueError:
    return ValueError(
        f"The 'grid' parameter of sweep must be a dict whose {rule}. Got {got!r} instead."
    )


def _check_grid(grid) -> dict[str, list]:
    """Validate a grid: known names, non-empty lists, valid numbers. Returns name -> list."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise ValueError(
            f"The 'grid' parameter of sweep must be a dict of name -> list of "
            f"values. Got {type(grid).__name__} instead."
        )
    valid = (*Hparams._fields, *STATIC_GRID)
    out: dict[str, list] = {}
    for name, values in grid.items():
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"The 'grid' parameter of sweep must be a dict whose keys are in "
                f"{list(valid)}. Got the unknown key {name!r} instead.{hint}"
            )
        if isinstance(values, str | int | float | np.number) and not isinstance(values, bool):
            values = [values]
        try:
            values = (
                list(np.asarray(values, dtype=object).ravel())
                if isinstance(values, np.ndarray)
                else list(values)
            )
        except TypeError:
            raise _grid_error(f"{name!r} value is a list", values) from None
        if not values:
            raise _grid_error(f"{name!r} value is a non-empty list", [])
        if len(set(map(str, values))) != len(values):
            raise _grid_error(f"{name!r} values are distinct", values)
        if name in STATIC_GRID:
            choices = OPTIMIZERS if name == "optimizer" else SCHEDULES
            for v in values:
                if v not in choices:
                    raise _grid_error(f"{name!r} values are in {list(choices)}", v)
            out[name] = list(values)
            continue
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise _grid_error(f"{name!r} values are numbers", v)
            check_hparams(Hparams(**{name: float(v)}))  # names the field, rule and value
        out[name] = [float(v) for v in values]
    return out


def _check_seeds(seeds, where: str = "sweep") -> list[int]:
    rule = "an int >= 1 or a non-empty list of distinct non-negative ints"
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(
                f"The 'seeds' parameter of {where} must be {rule}. Got {seeds!r} instead."
            )
        return list(range(int(seeds)))
    try:
        out = [s for s in seeds]
    except TypeError:
        out = None
    if (
        not out
        or len(set(out)) != len(out)
        or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in out)
    ):
        raise ValueError(f"The 'seeds' parameter of {where} must be {rule}. Got {seeds!r} instead.")
    return [int(s) for s in out]


def _hold_out(x, y, val_fraction, split_seed) -> tuple[Any, Any, Any, Any]:
    """``(x_train, y_train, x_val, y_val)``: the rows ``training_split`` holds out for
    ``split_seed``, as the estimator and ``jaxreg fit`` hold them out."""
    validate.real(
        "sweep", "val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True
    )
    if (
        isinstance(split_seed, bool)
        or not isinstance(split_seed, int | np.integer)
        or not (0 <= split_seed < 2**32)
    ):
        raise ValueError(
            f"The 'split_seed' parameter of sweep must be an int in "
            f"[0, 4294967295]. Got {split_seed!r} instead."
        )
    n = len(x)
    _, tr, va = training_split(n, val_fraction, int(split_seed))
    if len(tr) < 1:
        raise ValueError(
            f"The 'val_fraction' parameter of sweep must leave at least one "
            f"training row. Got {val_fraction!r} instead, which holds out all "
            f"{n} rows."
        )
    return x[tr], y[tr], x[va], y[va]


def _as_dataset(data_or_xy, val_fraction, split_seed) -> Dataset:
    if isinstance(data_or_xy, Dataset):
        parts = (data_or_xy.x, data_or_xy.y, data_or_xy.x_val, data_or_xy.y_val)
        if data_or_xy.w is not None:
            raise ValueError(
                "The 'data_or_xy' parameter of sweep must be a Dataset without "
                "sample weights. Got a Dataset with w instead."
            )
    elif isinstance(data_or_xy, tuple | list) and len(data_or_xy) in (2, 4):
        parts = tuple(data_or_xy) + (None, None) * (len(data_or_xy) == 2)
    else:
        raise ValueError(
            "The 'data_or_xy' parameter of sweep must be a Dataset, (x, y) or "
            "(x_train, y_train, x_val, y_val). Got "
            f"{type(data_or_xy).__name__} instead."
        )
    x, y = check_xy(parts[0], parts[1])
    if parts[2] is None or parts[3] is None:
        return Dataset(*_hold_out(x, y, val_fraction, split_seed))
    xv, yv = check_xy(parts[2], parts[3])
    if xv.shape[1] != x.shape[1] or yv.shape[1] != y.shape[1]:
        raise ValueError(
            f"The 'data_or_xy' parameter of sweep must have validation arrays "
            f"with the training arrays' columns (x {x.shape[1]}, y "
            f"{y.shape[1]}). Got x_val {xv.shape[1]}, y_val {yv.shape[1]} "
            "instead."
        )
    return Dataset(x, y, xv, yv)


# ------------------------------------------------------------------ plan: configurations


class _Config(NamedTuple):
    """One configuration: what it trains and the grid values that chose it."""

    spec: MLPSpec
    cfg: TrainConfig
    hparams: Hparams  # scalars
    values: dict[str, Any]


class _Group(NamedTuple):
    """Configurations sharing an architecture and a static configuration: one compiled
    ``fit_many`` call."""

    spec: MLPSpec
    cfg: TrainConfig
    rows: list[int]  # configuration indices, in the order of the call's model blocks


class _Plan(NamedTuple):
    configs: list[_Config]
    groups: list[_Group]
    seeds: list[int]


def _expand(
    specs: Sequence[MLPSpec], base_cfg: TrainConfig, grid: dict[str, list], hparams: Hparams
) -> list[_Config]:
    """Every architecture × every combination of the grid's values, in that order."""
    names = list(grid)
    combos = list(itertools.product(*grid.values())) if grid else [()]
    configs = []
    for spec in specs:
        for combo in combos:
            values = dict(zip(names, combo, strict=True))
            static = {k: values[k] for k in STATIC_GRID if k in values}
            traced = {k: v for k, v in values.items() if k not in STATIC_GRID}
            configs.append(
                _Config(
                    spec,
                    replace(base_cfg, **static) if static else base_cfg,
                    hparams._replace(**traced),
                    values,
                )
            )
    return configs


def _plan(configs: Sequence[_Config], seeds: list[int]) -> _Plan:
    """Group the configurations by ``(spec, cfg)``, in order of first appearance."""
    groups: dict[tuple, _Group] = {}
    for i, c in enumerate(configs):
        groups.setdefault((c.spec, c.cfg), _Group(c.spec, c.cfg, [])).rows.append(i)
    return _Plan(list(configs), list(groups.values()), list(seeds))


# ------------------------------------------------------------------ run


class _Runs(NamedTuple):
    """Per-seed results of a plan, configuration-major."""

    val_mse: np.ndarray  # (n_configs, n_seeds) in the data's units; NaN: non-finite params
    train_mse: np.ndarray
    params: list[tuple[Any, int]]  # config -> (its group's stacked params, its block)
    run_s: np.ndarray  # (n_configs,) its share of its group's run time
    compile_s: np.ndarray  # (n_configs,) its group's compile time
    timings: Timings  # totals


def _run(plan: _Plan, data: Dataset, scale2=1.0) -> _Runs:
    """Train every configuration of ``plan`` over its seeds: one ``fit_many`` per group.

    ``scale2`` (per output) maps MSE in the training units back to the data's units.
    """
    n_configs, n_seeds = len(plan.configs), len(plan.seeds)
    val = np.full((n_configs, n_seeds), np.nan)
    train = np.full((n_configs, n_seeds), np.nan)
    run_s, compile_s = np.zeros(n_configs), np.zeros(n_configs)
    params: list[tuple[Any, int]] = [(None, 0)] * n_configs
    total_compile = total_run = 0.0
    for g in plan.groups:
        hps = [plan.configs[i].hparams for i in g.rows]
        hp = Hparams(
            *(
                np.repeat(np.asarray([getattr(h, f) for h in hps], np.float32), n_seeds)
                for f in Hparams._fields
            )
        )
        m = n_seeds * len(g.rows)
        res, timings = fit_many(
            g.spec, g.cfg, data, hp, keys=plan.seeds * len(g.rows), check=False, return_timings=True
        )
        total_compile += timings.compile_seconds
        total_run += timings.run_seconds
        finite = np.array(
            [
                np.all(np.isfinite(np.asarray(leaf).reshape(m, -1)), axis=1)
                for leaf in jax.tree.leaves(res.params)
            ]
        ).all(axis=0)
        tr, va = (
            np.where(finite, (np.asarray(a, np.float64) * scale2).mean(axis=1), np.nan).reshape(
                len(g.rows), n_seeds
            )
            for a in (res.train_mse, res.val_mse)
        )
        for j, i in enumerate(g.rows):
            train[i], val[i] = tr[j], va[j]
            run_s[i] = timings.run_seconds / len(g.rows)
            compile_s[i] = timings.compile_seconds
            params[i] = (res.params, j)
    return _Runs(val, train, params, run_s, compile_s, Timings(total_compile, total_run))


def _seed_params(runs: _Runs, i: int, n_seeds: int):
    """Configuration ``i``'s params for every seed (leaves with a leading seed axis)."""
    stacked, j = runs.params[i]
    return jax.tree.map(lambda a: a[j * n_seeds : (j + 1) * n_seeds], stacked)


# ------------------------------------------------------------------ summarize


def _describe(val: np.ndarray, train: np.ndarray, confidence: float) -> dict[str, Any]:
    """Statistics of one configuration's per-seed MSE; seeds with a non-finite validation
    MSE count as diverged and are left out."""
    ok = np.isfinite(val)
    mean, low, high = confidence_interval(val, confidence)
    return {
        "n_seeds": int(ok.sum()),
        "n_diverged": int((~ok).sum()),
        "mean": mean,
        "std": float(np.std(val[ok], ddof=1)) if ok.sum() > 1 else math.nan,
        "ci_low": low,
        "ci_high": high,
        "min": float(np.min(val[ok])) if ok.any() else math.nan,
        "train_mean": float(np.mean(train[ok])) if ok.any() else math.nan,
    }


def _sweep_table(plan: _Plan, runs: _Runs, noise_floor: float | None, confidence: float):
    import pandas as pd

    rows = []
    for i, (spec, c, _hp, values) in enumerate(plan.configs):
        s = _describe(runs.val_mse[i], runs.train_mse[i], confidence)
        row = {
            "config": i,
            "architecture": _fmt_arch(spec),
            "activation": spec.activation,
            "n_params": spec.n_params,
            "optimizer": c.optimizer,
            "schedule": c.schedule,
            **{k: v for k, v in values.items() if k not in STATIC_GRID},
            "n_seeds": s["n_seeds"],
            "n_diverged": s["n_diverged"],
            "val_mse_mean": s["mean"],
            "val_mse_std": s["std"],
            "val_mse_ci_low": s["ci_low"],
            "val_mse_ci_high": s["ci_high"],
            "val_mse_min": s["min"],
            "train_mse_mean": s["train_mean"],
            "time_s": float(runs.run_s[i]),
            "compile_s": float(runs.compile_s[i]),
        }
        if noise_floor is not None:
            row["gap_pct"] = 100.0 * (s["mean"] / noise_floor - 1.0)
        rows.append(row)
    return pd.DataFrame(rows)


def _best_config(table) -> int:
    """The lowest mean validation MSE among configurations with no diverged seed (among
    all of them when every configuration has one)."""
    clean = table[table["n_diverged"] == 0]
    pool = clean if len(clean) and clean["val_mse_mean"].notna().any() else table
    if not pool["val_mse_mean"].notna().any():
        raise FloatingPointError(
            "Every configuration of the sweep diverged (NaN or infinite "
            "MSE). Lower the learning rates or standardize the data."
        )
    return int(pool["val_mse_mean"].idxmin())


# ------------------------------------------------------------------ the sweep


@dataclass(frozen=True)
class SweepResult:
    """What ``sweep`` returns.

    Attributes:
      table: one row per configuration (pandas DataFrame), sorted as configured.
      best: the row of the lowest mean validation MSE among configurations with no
        diverged seed.
      best_spec, best_config, best_hparams: the best configuration as engine objects.
      best_params: the best configuration's final params for every seed (leaves with a
        leading seed axis), ready for ``ensemble_predict``.
      best_seed_params: the params of its seed with the lowest validation MSE.
      seeds: the seeds, in the order of the seed axis.
      val_mse, train_mse: ``(n_configs, n_seeds)`` per-seed MSE in the data's units.
      x_scaler, y_scaler: the standardizers applied before training (identity when off).
      noise_floor: the reference MSE given to ``sweep`` (or None).
      compile_seconds, run_seconds: totals over the compiled calls.
      data: the training and validation arrays, in the data's units.
    """

    table: Any
    best: Any
    best_spec: MLPSpec
    best_config: TrainConfig
    best_hparams: Hparams
    best_params: Any
    best_seed_params: Any
    seeds: list[int]
    val_mse: np.ndarray
    train_mse: np.ndarray
    x_scaler: Standardizer
    y_scaler: Standardizer
    noise_floor: float | None = None
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    data: Dataset | None = field(default=None, repr=False)

    def predict(self, x, members: bool = True):
        """Ensemble ``(mean, std)`` of the best configuration in the data's units."""
        params = (
            self.best_params if members else jax.tree.map(lambda a: a[None], self.best_seed_params)
        )
        xs = self.x_scaler.transform(_as_2d(np.asarray(x, np.float32)))
        mean, std = ensemble_predict(params, self.best_spec, xs)
        return (
            np.asarray(self.y_scaler.inverse(np.asarray(mean))),
            np.asarray(self.y_scaler.inverse_scale(np.asarray(std))),
        )


def sweep(
    data_or_xy,
    *,
    architectures=None,
    grid: Mapping | None = None,
    seeds=8,
    cfg: TrainConfig | None = None,
    epochs: int | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    hparams: Hparams = Hparams(),
    activation: str | Sequence[str] = "tanh",
    init: str = "he_normal",
    bias_init: str = "ones",
    standardize: bool = False,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    noise_floor: float | None = None,
    confidence: float = 0.95,
) -> SweepResult:
    """Train every configuration of a grid over every seed; one compiled call per architecture.

    Args:
      data_or_xy: a ``Dataset`` with validation arrays, ``(x_train, y_train, x_val,
        y_val)``, or ``(x, y)``: then the rows ``jaxreg.data.training_split(n,
        val_fraction, split_seed)`` holds out are the validation rows (the rows the
        estimator and ``jaxreg fit`` hold out for the same seed).
      architectures: ``MLPSpec`` objects and/or hidden-layer widths such as ``(16, 8)``
        (input and output widths come from the data; ``activation``, ``init`` and
        ``bias_init`` apply; a list of activations multiplies the architectures).
      grid: name -> list of values. Names are ``Hparams`` fields (``learning_rate``,
        ``l2``, ``decay_rate``, ``transition_steps``, ...; traced, no recompilation) or
        ``optimizer``/``schedule`` (each value compiles once per architecture).
      seeds: an int ``N`` (seeds ``0..N-1``) or a list; seed ``s`` initializes with
        ``PRNGKey(s)``.
      cfg: the static training configuration; or give ``epochs``/``optimizer``/
        ``schedule``, which override its fields. Defaults: 1000 epochs, Adam, constant.
      hparams: values of the ``Hparams`` fields the grid does not set.
      standardize: standardize x and y with the training rows' mean and std; MSE is
        reported in the data's units either way.
      val_fraction, split_seed: the hold-out of ``(x, y)`` data, a fraction in (0, 1) and
        a seed in [0, 2**32 - 1].
      noise_floor: a reference MSE (e.g. ``noise_floor(x_val, y_val)`` on the lecture's
        data); adds a ``gap_pct`` column.
      confidence: the level of the confidence intervals, in (0, 1).

    Returns:
      A ``SweepResult``.

    Example:
      >>> res = sweep(lecture_data(), architectures=[(10, 10, 10), (16, 8)],
      ...             grid={"learning_rate": [1e-3, 3e-3]}, seeds=8, epochs=4000)
      >>> res.table[["architecture", "learning_rate", "val_mse_mean"]]  # doctest: +SKIP
    """
    # plan
    data = _as_dataset(data_or_xy, val_fraction, split_seed)
    grid = _check_grid(grid)
    seed_list = _check_seeds(seeds)
    check_hparams(hparams)
    _check_confidence(confidence, "sweep")
    specs = _as_specs(
        architectures,
        data.x.shape[1],
        data.y.shape[1],
        activation,
        {"init": init, "bias_init": bias_init},
    )
    base_cfg = cfg if cfg is not None else TrainConfig(epochs=1000, record_every=0)
    if not isinstance(base_cfg, TrainConfig):
        raise ValueError(
            f"The 'cfg' parameter of sweep must be a TrainConfig. Got "
            f"{type(base_cfg).__name__} instead."
        )
    over: dict[str, Any] = {
        k: v
        for k, v in (("epochs", epochs), ("optimizer", optimizer), ("schedule", schedule))
        if v is not None
    }
    if over:
        base_cfg = replace(base_cfg, **over)
    if cfg is None:
        base_cfg = replace(base_cfg, record_every=0)  # no history needed: fastest loop
    if noise_floor is not None and not (
        isinstance(noise_floor, int | float) and math.isfinite(noise_floor) and noise_floor > 0
    ):
        raise ValueError(
            f"The 'noise_floor' parameter of sweep must be a positive float. "
            f"Got {noise_floor!r} instead."
        )
    plan = _plan(_expand(specs, base_cfg, grid, hparams), seed_list)

    # run
    xs = Standardizer.fit(data.x, enabled=standardize)
    ys = Standardizer.fit(data.y, enabled=standardize)
    sdata = Dataset(
        *(
            jnp.asarray(a)
            for a in (
                xs.transform(data.x),
                ys.transform(data.y),
                xs.transform(data.x_val),
                ys.transform(data.y_val),
            )
        )
    )
    scale2 = np.asarray(ys.scale, np.float64) ** 2  # per-output MSE back to the data's units
    runs = _run(plan, sdata, scale2)

    # summarize
    table = _sweep_table(plan, runs, noise_floor, confidence)
    b = _best_config(table)
    best = plan.configs[b]
    best_params = _seed_params(runs, b, len(seed_list))
    s_best = int(np.nanargmin(runs.val_mse[b]))
    best_seed_params = jax.tree.map(lambda a: a[s_best], best_params)
    return SweepResult(
        table,
        table.loc[b],
        best.spec,
        best.cfg,
        best.hparams,
        best_params,
        best_seed_params,
        seed_list,
        runs.val_mse,
        runs.train_mse,
        xs,
        ys,
        noise_floor,
        runs.timings.compile_seconds,
        runs.timings.run_seconds,
        data,
    )


# ------------------------------------------------------------------ the lecture's exercise


class Strategy(NamedTuple):
    """One strategy of the lecture's exercise: full batch on the lecture's data, Adam
    unless ``optimizer`` says otherwise."""

    label: str
    spec: MLPSpec
    schedule: str
    hparams: Hparams
    optimizer: str = "adam"

    def config(self, epochs: int) -> TrainConfig:
        """The training configuration under the exercise's budget of ``epochs`` full-batch
        gradient evaluations (L-BFGS: as many iterations and function evaluations)."""
        lbfgs = self.optimizer == "lbfgs"
        return TrainConfig(
            epochs=epochs,
            optimizer=self.optimizer,
            schedule=self.schedule,
            record_every=0,
            max_fun=epochs if lbfgs else None,
        )


_BASE, _DEEP = MLPSpec((1, 10, 10, 10, 1)), MLPSpec((1, 6, 6, 6, 6, 6, 1))
_SCHED = {"learning_rate": 3e-3, "decay_rate": 0.5, "transition_steps": 1000.0}
EXERCISE_STRATEGIES: tuple[Strategy, ...] = (  # the baseline first
    Strategy("Baseline (ADAM + tanh)", _BASE, "constant", Hparams(1e-3)),
    Strategy("1. Deeper network (6 layers)", _DEEP, "constant", Hparams(1e-3)),
    Strategy("2. Deeper network + LR schedule", _DEEP, "exponential", Hparams(**_SCHED)),
    Strategy("3. Strategy 2 + L2 regularization", _DEEP, "exponential", Hparams(**_SCHED, l2=1e-3)),
    Strategy("4. Baseline + L2 regularization", _BASE, "constant", Hparams(1e-3, l2=1e-3)),
    Strategy("5. Baseline network, L-BFGS", _BASE, "constant", Hparams(), "lbfgs"),
)


def exercise_seeds(n_seeds: int) -> list[int]:
    """``n_seeds`` initialization seeds: the lecture's 1234 first, then 0, 1, 2, ..."""
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int | np.integer) or n_seeds < 2:
        raise ValueError(
            f"The 'n_seeds' parameter of exercise_seeds must be an int >= 2. "
            f"Got {n_seeds!r} instead."
        )
    rest = [s for s in range(int(n_seeds)) if s != LECTURE_SEED][: int(n_seeds) - 1]
    return [LECTURE_SEED, *rest]


class ExerciseReport(NamedTuple):
    """``exercise_over_seeds`` output. ``table``: one row per strategy; ``val_mse`` and
    ``train_mse``: label -> per-seed array in the order of ``seeds``."""

    table: Any
    val_mse: dict[str, np.ndarray]
    train_mse: dict[str, np.ndarray]
    seeds: list[int]
    noise_floor: float
    paired: dict[str, PairedComparison]
    seconds: float


def exercise_over_seeds(
    n_seeds: int,
    epochs: int = 4000,
    *,
    seeds: Sequence[int] | None = None,
    data_seed: int = 14,
    confidence: float = 0.95,
) -> ExerciseReport:
    """Run the lecture's exercise strategies over ``n_seeds`` initializations, data fixed.

    Strategies sharing an architecture and a schedule train in one vmapped call. Each
    row reports the mean validation MSE with its Student-t CI, its gap to the noise floor,
    the single run from the lecture's ``PRNGKey(1234)``, and a paired t-test against the
    Adam baseline trained from the same seeds (difference ``strategy - baseline``, negative
    is better). ``seeds``, when given, replaces ``exercise_seeds(n_seeds)``.

    Returns:
      An ``ExerciseReport`` (a NamedTuple whose first field is the table).
    """
    import pandas as pd

    # plan
    if seeds is None:
        seed_list = exercise_seeds(n_seeds)
    else:
        seed_list = _check_seeds(seeds, "exercise_over_seeds")
        if len(seed_list) < 2:
            raise ValueError(
                f"The 'seeds' parameter of exercise_over_seeds must list at "
                f"least 2 seeds. Got {seed_list!r} instead."
            )
    _check_confidence(confidence, "exercise_over_seeds")
    plan = _plan(
        [_Config(s.spec, s.config(epochs), s.hparams, {}) for s in EXERCISE_STRATEGIES],
        seed_list,
    )
    xt, yt, xv, yv = lecture_data(data_seed)
    floor = noise_floor(xv, yv)

    # run
    t0 = time.perf_counter()
    runs = _run(plan, Dataset(xt, yt, xv, yv))
    seconds = time.perf_counter() - t0

    # summarize
    labels = [s.label for s in EXERCISE_STRATEGIES]
    val = dict(zip(labels, runs.val_mse, strict=True))
    train = dict(zip(labels, runs.train_mse, strict=True))
    base = labels[0]
    rows, paired = [], {}
    for i, (label, spec, *_) in enumerate(EXERCISE_STRATEGIES):
        v = val[label]
        s = _describe(v, train[label], confidence)
        row = {
            "strategy": label,
            "n_params": spec.n_params,
            "n_seeds": s["n_seeds"],
            "val_mse_mean": s["mean"],
            "val_mse_std": s["std"],
            "ci_low": s["ci_low"],
            "ci_high": s["ci_high"],
            "gap_pct": 100 * (s["mean"] / floor - 1),
            "val_mse_seed1234": float(v[seed_list.index(LECTURE_SEED)])
            if LECTURE_SEED in seed_list
            else math.nan,
            "train_mse_mean": s["train_mean"],
        }
        if label == base:
            row.update(
                diff_vs_baseline=0.0,
                diff_ci_low=math.nan,
                diff_ci_high=math.nan,
                p_value=math.nan,
                frac_better=math.nan,
            )
        else:
            pc = paired_comparison(v, val[base], confidence)
            paired[label] = pc
            row.update(
                diff_vs_baseline=pc.mean_diff,
                diff_ci_low=pc.ci_low,
                diff_ci_high=pc.ci_high,
                p_value=pc.p_value,
                frac_better=pc.frac_a_better,
            )
        row["run_s"] = float(runs.run_s[i])
        rows.append(row)
    return ExerciseReport(pd.DataFrame(rows), val, train, seed_list, floor, paired, seconds)
