"""IQA evaluation metrics (host side, numpy/scipy): SRCC, KRCC, PLCC, RMSE and the logistic fit.

Conventions (see the datasets reference): SRCC and KRCC on raw predictions; PLCC and RMSE both raw
and after the 4-parameter logistic `f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2` fitted from
`[max y, min y, mean x, std x]`.

Constant predictions (or constant MOS) make every correlation undefined: reported as 0.0 ("no
ranking ability", not NaN), with a `note` from `compute_metrics`.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from mmpiqa_jax.errors import UserError

# The numeric metrics that `compute_metrics` returns and `aggregate_splits` aggregates.
METRIC_KEYS = ("srcc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic")


class LogisticFitWarning(UserWarning):
    """The logistic fit did not converge and a simpler fit was used instead."""


def _check_pair(pred, mos) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 1-D arrays of one length >= 2, all finite; raises naming the fault."""
    arrays = []
    for name, values in (("pred", pred), ("mos", mos)):
        a = np.asarray(values, dtype=np.float64)
        if a.ndim != 1:
            raise UserError(f"{name} must be 1-D, got shape {a.shape}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise UserError(f"{name}[{bad[0]}] = {a[bad[0]]} is not finite "
                            f"({bad.size} non-finite value(s) in {name})")
        arrays.append(a)
    x, y = arrays
    if x.size != y.size:
        raise UserError(f"pred and mos differ in length: {x.size} != {y.size}")
    if x.size < 2:
        raise UserError(f"need at least 2 images to compute correlations, got {x.size}")
    return x, y


def _is_constant(a: np.ndarray) -> bool:
    return bool(np.all(a == a[0]))


def _correlation(fn, pred, mos) -> float:
    x, y = _check_pair(pred, mos)
    if _is_constant(x) or _is_constant(y):
        return 0.0  # undefined; see the module docstring
    return float(fn(x, y).statistic)


def srcc(pred, mos) -> float:
    """Spearman rank correlation (scipy; ties get average ranks); 0.0 for constant input."""
    return _correlation(scipy.stats.spearmanr, pred, mos)


def krcc(pred, mos) -> float:
    """Kendall rank correlation, tau-b (scipy); 0.0 for constant input."""
    return _correlation(scipy.stats.kendalltau, pred, mos)


def plcc(pred, mos) -> float:
    """Pearson linear correlation (scipy); 0.0 for constant input."""
    return _correlation(scipy.stats.pearsonr, pred, mos)


def rmse(pred, mos) -> float:
    """Root mean squared error."""
    x, y = _check_pair(pred, mos)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def logistic_4(x, b1, b2, b3, b4):
    """The 4-parameter logistic `(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`."""
    # expit is the same sigmoid without exp overflow for steep curves.
    z = (np.asarray(x, dtype=np.float64) - b3) / np.abs(b4)
    return (b1 - b2) * scipy.special.expit(z) + b2


def _logistic_4_jac(x, b1, b2, b3, b4):
    """Analytic Jacobian [N, 4] of `logistic_4` (finite differences stall b3 near 0)."""
    z = (np.asarray(x, dtype=np.float64) - b3) / np.abs(b4)
    sig = scipy.special.expit(z)
    slope = (b1 - b2) * sig * (1.0 - sig)
    return np.stack([sig, 1.0 - sig, -slope / np.abs(b4), -slope * z / b4], axis=-1)


@dataclasses.dataclass(frozen=True)
class LogisticFit:
    """A fitted mapping from predictions to the MOS scale: `method` "logistic" (params b1..b4),
    "linear" (slope, intercept) after a failed logistic fit, or "constant" (mean MOS) for
    constant predictions; `message` says why it fell back."""

    method: str
    params: tuple[float, ...]
    message: str = ""

    def __post_init__(self):
        expected = {"logistic": 4, "linear": 2, "constant": 1}
        if self.method not in expected:
            raise UserError(f"unknown fit method {self.method!r}; "
                            f"expected one of {tuple(expected)}")
        if len(self.params) != expected[self.method]:
            raise UserError(f"a {self.method} fit takes {expected[self.method]} params, "
                            f"got {len(self.params)}: {self.params}")

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.method == "logistic":
            return logistic_4(x, *self.params)
        if self.method == "linear":
            slope, intercept = self.params
            return slope * x + intercept
        return np.full_like(x, self.params[0])


def _linear(x: np.ndarray, y: np.ndarray, reason: str) -> LogisticFit:
    slope, intercept = np.polyfit(x, y, 1)
    message = f"logistic fit failed ({reason}); fell back to a linear fit"
    warnings.warn(message, LogisticFitWarning, stacklevel=3)
    return LogisticFit("linear", (float(slope), float(intercept)), message)


def _sse(fitted: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((fitted - y) ** 2))


# The least width |b4| as a fraction of the predictions' range: narrower is a step that lifts the
# fitted PLCC above what the ranking supports; a fit at this bound falls back to a line.
MIN_WIDTH = 0.02


def logistic_bounds(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of (b1, b2, b3, b4) from the data: the ends within the MOS range widened by its
    span, the midpoint within the predictions' range, the width at least `MIN_WIDTH` of it."""
    span_y, span_x = float(np.ptp(y)) or 1.0, float(np.ptp(x))
    lower = [np.min(y) - span_y, np.min(y) - span_y, np.min(x), MIN_WIDTH * span_x]
    upper = [np.max(y) + span_y, np.max(y) + span_y, np.max(x), 100.0 * span_x]
    return np.asarray(lower, np.float64), np.asarray(upper, np.float64)


def fit_logistic(pred, mos, *, maxfev: int = 100_000) -> LogisticFit:
    """Fits `logistic_4` from pred to mos with scipy's `curve_fit`, within `logistic_bounds`.

    Falls back to a least-squares line, with a `LogisticFitWarning` and the reason in `.message`,
    when the fit does not converge, has too few points, gives non-finite values, ends at the
    width bound, or is degenerate (an `OptimizeWarning`) and fits worse than a line. Constant
    predictions give a "constant" fit at the mean MOS.
    """
    x, y = _check_pair(pred, mos)
    if _is_constant(x):
        return LogisticFit("constant", (float(np.mean(y)),),
                           "predictions are constant; fitted values are the mean MOS")
    if x.size < 4:  # curve_fit's bounded solver would not refuse an underdetermined fit
        return _linear(x, y, f"{x.size} points for 4 parameters")
    lower, upper = logistic_bounds(x, y)
    p0 = np.clip([np.max(y), np.min(y), np.mean(x), np.std(x)], lower, upper)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", scipy.optimize.OptimizeWarning)
            params, _ = scipy.optimize.curve_fit(logistic_4, x, y, p0=p0, jac=_logistic_4_jac,
                                                 bounds=(lower, upper), max_nfev=maxfev)
    except RuntimeError as e:  # no convergence in `maxfev` evaluations
        return _linear(x, y, f"RuntimeError at maxfev={maxfev}: {e}")
    except (ValueError, TypeError) as e:
        return _linear(x, y, f"{type(e).__name__}: {e}")
    fitted = logistic_4(x, *params)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(fitted))):
        return _linear(x, y, f"non-finite parameters {params.tolist()}")
    degenerate = [w for w in caught if issubclass(w.category, scipy.optimize.OptimizeWarning)]
    if degenerate and _sse(fitted, y) > _sse(np.polyval(np.polyfit(x, y, 1), x), y):
        return _linear(x, y, f"OptimizeWarning: {degenerate[0].message}, and the curve fits "
                             "worse than a line")
    if params[3] <= lower[3] * (1 + 1e-6):
        return _linear(x, y, f"degenerate: the curve would be a step (its width at the bound, "
                             f"{MIN_WIDTH:g} of the predictions' range), so PLCC is the raw one")
    return LogisticFit("logistic", tuple(float(p) for p in params))


def compute_metrics(pred, mos, *, maxfev: int = 100_000) -> dict:
    """All metrics of one evaluation.

    Returns a JSON-ready dict: `srcc`, `plcc`, `krcc`, `rmse` (raw), `plcc_logistic`,
    `rmse_logistic` (after `fit_logistic`), `n`, `fit` (its method), `fit_params`, and `note`
    ("" unless something is degenerate: constant predictions, constant MOS, or a fallback fit).
    """
    x, y = _check_pair(pred, mos)
    fit = fit_logistic(x, y, maxfev=maxfev)
    fitted = fit(x)
    notes = []
    if _is_constant(x):
        notes.append("predictions are constant: correlations are undefined and reported as 0.0")
    if _is_constant(y):
        notes.append("MOS values are constant: correlations are undefined and reported as 0.0")
    if fit.message and not _is_constant(x):
        notes.append(fit.message)
    return {
        "srcc": srcc(x, y),
        "plcc": plcc(x, y),
        "krcc": krcc(x, y),
        "rmse": rmse(x, y),
        "plcc_logistic": plcc(fitted, y),
        "rmse_logistic": rmse(fitted, y),
        "n": int(x.size),
        "fit": fit.method,
        "fit_params": list(fit.params),
        "note": "; ".join(notes),
    }


def aggregate_splits(results: list[dict], keys=METRIC_KEYS, ddof: int = 0) -> dict:
    """Each metric over splits: {metric: {"values", "median", "mean", "std", "n"}}.

    Args:
      results: one `compute_metrics` dict per split.
      keys: the metrics to aggregate; each must be in every dict.
      ddof: numpy's for the std (0: population); the std is None (valid JSON, not NaN) when
        there are no more values than `ddof`.
    """
    if not results:
        raise UserError("aggregate_splits needs at least one split's metrics, got none")
    out = {}
    for key in keys:
        values = []
        for i, result in enumerate(results):
            if key not in result:
                raise KeyError(f"split {i} has no metric {key!r} (has {sorted(result)})")
            values.append(float(result[key]))
        v = np.asarray(values)
        out[key] = {"values": values, "median": float(np.median(v)), "mean": float(np.mean(v)),
                    "std": float(np.std(v, ddof=ddof)) if v.size > ddof else None,
                    "n": int(v.size)}
    return out
