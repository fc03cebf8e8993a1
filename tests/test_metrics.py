"""Evaluation metrics against scipy.stats and hand-computed values."""
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from mmpiqa_jax.evaluate import metrics


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(ties):
    rng = np.random.default_rng(3)
    mos = rng.uniform(1, 5, 60)
    pred = mos + rng.normal(scale=0.8, size=60)
    if ties:  # coarse values: many tied ranks on both sides
        mos, pred = np.round(mos), np.round(pred * 2) / 2
    np.testing.assert_allclose(metrics.srcc(pred, mos), scipy.stats.spearmanr(pred, mos).statistic)
    np.testing.assert_allclose(metrics.krcc(pred, mos), scipy.stats.kendalltau(pred, mos).statistic)
    np.testing.assert_allclose(metrics.plcc(pred, mos), scipy.stats.pearsonr(pred, mos).statistic)
    np.testing.assert_allclose(metrics.rmse(pred, mos), np.sqrt(np.mean((pred - mos) ** 2)))
    # SRCC with ties is Pearson's r on average ranks.
    np.testing.assert_allclose(metrics.srcc(pred, mos),
                               np.corrcoef(scipy.stats.rankdata(pred),
                                           scipy.stats.rankdata(mos))[0, 1])


def test_rank_correlations_by_hand():
    pred, mos = [1, 2, 3, 4], [1, 3, 2, 4]  # one swapped pair out of six
    assert metrics.srcc(pred, mos) == pytest.approx(1 - 6 * 2 / (4 * 15))  # 0.8
    assert metrics.krcc(pred, mos) == pytest.approx((5 - 1) / 6)


def test_logistic_fit_recovers_known_curve():
    # Centred predictions: b3 starts at mean(x) = 0, where finite differences stall the fit.
    x = np.linspace(-1, 1, 80)
    true = (5.0, 1.0, 0.2, 0.25)
    y = metrics.logistic_4(x, *true)
    fit = metrics.fit_logistic(x, y)
    assert fit.method == "logistic" and fit.message == ""
    np.testing.assert_allclose(fit(x), y, atol=1e-6)
    result = metrics.compute_metrics(x, y)
    assert result["plcc_logistic"] == pytest.approx(1.0, abs=1e-9)
    assert result["rmse_logistic"] == pytest.approx(0.0, abs=1e-6)
    assert result["plcc"] < 0.99 and result["fit"] == "logistic" and result["note"] == ""
    assert set(result) >= {"srcc", "plcc", "krcc", "rmse", "plcc_logistic", "rmse_logistic", "n",
                           "fit"}


def test_logistic_formula_by_hand():
    # b4's sign does not matter: |b4|.
    assert metrics.logistic_4(0.0, 5.0, 1.0, 0.0, -2.0) == pytest.approx(3.0)
    assert metrics.logistic_4(2.0, 5.0, 1.0, 0.0, 2.0) == pytest.approx(4.0 / (1 + np.exp(-1)) + 1)


def test_fit_failure_falls_back_to_linear_and_says_so():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + 1 + rng.normal(scale=0.1, size=50)
    with pytest.warns(metrics.LogisticFitWarning, match="fell back to a linear fit"):
        result = metrics.compute_metrics(x, y, maxfev=1)  # cannot converge in one evaluation
    assert result["fit"] == "linear"
    assert "maxfev" in result["note"] and "linear" in result["note"]
    np.testing.assert_allclose(result["fit_params"], np.polyfit(x, y, 1))
    fitted = np.polyval(np.polyfit(x, y, 1), x)
    assert result["rmse_logistic"] == pytest.approx(np.sqrt(np.mean((fitted - y) ** 2)))
    # Fewer images than parameters is another failure of the same kind.
    with pytest.warns(metrics.LogisticFitWarning):
        assert metrics.fit_logistic([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]).method == "linear"


def test_degenerate_fit_worse_than_a_line_falls_back(monkeypatch):
    x = np.linspace(0, 1, 20)
    y = 3 * x + 1

    def degenerate_curve_fit(f, xdata, ydata, p0, **kwargs):
        warnings.warn("Covariance of the parameters could not be estimated",
                      scipy.optimize.OptimizeWarning)
        return np.array([2.0, 2.0, 0.5, 1.0]), np.full((4, 4), np.inf)  # a flat line at 2

    monkeypatch.setattr(scipy.optimize, "curve_fit", degenerate_curve_fit)
    with pytest.warns(metrics.LogisticFitWarning, match="worse than a line"):
        fit = metrics.fit_logistic(x, y)
    assert fit.method == "linear"
    np.testing.assert_allclose(fit.params, [3.0, 1.0])


def test_constant_predictions_give_zero_with_a_note():
    mos = np.array([1.0, 2.0, 4.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy ConstantInputWarning, no fit warning
        result = metrics.compute_metrics(np.full(4, 3.3), mos)
    assert result["srcc"] == result["plcc"] == result["krcc"] == result["plcc_logistic"] == 0.0
    assert "constant" in result["note"] and result["fit"] == "constant"
    assert result["rmse_logistic"] == pytest.approx(np.std(mos))  # fitted value = mean MOS
    assert all(np.isfinite(v) for k, v in result.items() if k in metrics.METRIC_KEYS)


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match=r"pred\[2\] = nan"):
        metrics.compute_metrics([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"mos\[0\] = inf"):
        metrics.srcc([1.0, 2.0], [np.inf, 1.0])
    with pytest.raises(ValueError, match="3 != 2"):
        metrics.plcc([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.compute_metrics([1.0], [1.0])
    with pytest.raises(ValueError, match="1-D"):
        metrics.krcc(np.ones((2, 2)), np.ones((2, 2)))


def test_aggregate_splits_by_hand():
    splits = [{"srcc": 0.9, "plcc": 0.8}, {"srcc": 0.7, "plcc": 0.6}, {"srcc": 0.2, "plcc": 0.7}]
    agg = metrics.aggregate_splits(splits, keys=("srcc", "plcc"))
    assert agg["srcc"]["median"] == pytest.approx(0.7)
    assert agg["srcc"]["mean"] == pytest.approx(0.6)
    assert agg["srcc"]["std"] == pytest.approx(np.sqrt(((0.3) ** 2 + 0.1 ** 2 + 0.4 ** 2) / 3))
    plcc = agg["plcc"]
    assert plcc.pop("values") == [0.8, 0.6, 0.7]
    assert plcc == pytest.approx({"median": 0.7, "mean": 0.7, "std": np.sqrt(0.02 / 3), "n": 3})
    sample = metrics.aggregate_splits(splits[:2], keys=("srcc",), ddof=1)["srcc"]["std"]
    assert sample == pytest.approx(np.sqrt(0.02))
    assert metrics.aggregate_splits(splits[:1], keys=("srcc",), ddof=1)["srcc"]["std"] is None
    with pytest.raises(KeyError, match="split 1 has no metric 'krcc'"):
        metrics.aggregate_splits([{"krcc": 1.0}, {"srcc": 1.0}], keys=("krcc",))
    with pytest.raises(ValueError, match="at least one"):
        metrics.aggregate_splits([])


def _collapsing_data():
    """Predictions bunched at one value with a few above: an unbounded 4-parameter fit turns
    into a step (|b4| ~ 1e-7) that lifts PLCC from 0.06 to 0.24."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = np.concatenate([rng.normal(3.0, 0.001, 40), rng.normal(3.5, 0.2, 5)])
        y = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0.5, 1, 5)])
    return x, y


def test_bounded_fit_does_not_collapse_into_a_step():
    import scipy.optimize
    import warnings
    x, y = _collapsing_data()
    p0 = [np.max(y), np.min(y), np.mean(x), np.std(x)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free, _ = scipy.optimize.curve_fit(metrics.logistic_4, x, y, p0=p0, maxfev=100_000)
    assert abs(free[3]) < 1e-4 * np.ptp(x)  # the unbounded fit is a step
    assert metrics.plcc(metrics.logistic_4(x, *free), y) - metrics.plcc(x, y) > 0.15
    with pytest.warns(metrics.LogisticFitWarning, match="degenerate: the curve would be a step"):
        result = metrics.compute_metrics(x, y)
    assert result["fit"] == "linear" and "PLCC is the raw one" in result["note"]
    assert result["plcc_logistic"] == pytest.approx(result["plcc"], abs=1e-12)


def test_bounded_fit_keeps_an_ordinary_curve():
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 5, 200)
    y = metrics.logistic_4(x, 90.0, 10.0, 3.0, 0.6) + rng.normal(0, 2, 200)
    fit = metrics.fit_logistic(x, y)
    assert fit.method == "logistic" and fit.message == ""
    np.testing.assert_allclose(fit.params, [90.0, 10.0, 3.0, 0.6], rtol=0.1)
