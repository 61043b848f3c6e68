"""Tests for the BG/NBD and Gamma-Gamma customer models."""

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from scipy.optimize import check_grad
from scipy.special import hyp2f1

from nudge.errors import NudgeError
from nudge.insight import (
    BetaGeoModel,
    FitError,
    GammaGammaModel,
    _common,
    bgnbd,
    gammagamma,
    summarize_transactions,
)
from nudge.insight.simulate import simulate_customers

CDNOW_SAMPLE = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "data"
    / "cdnow"
    / "CDNOW_sample.txt"
)

# Fader, Hardie & Lee (2005), fitted on the 39-week CDNOW calibration period.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_BGNBD_LOG_LIKELIHOOD = -9582.4
PUBLISHED_GAMMAGAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}

CDNOW_LIKE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
STEADY = {"r": 1.5, "alpha": 40.0, "a": 2.5, "b": 6.0}
SPEND = {"p": 6.0, "q": 3.8, "v": 15.0}


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    if not CDNOW_SAMPLE.exists():
        pytest.skip(f"CDNOW sample not found at {CDNOW_SAMPLE}")
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["customer", "sample_id", "date", "cds", "dollars"],
        dtype={"date": str},
    )
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return summarize_transactions(
        raw, "customer", "date", "dollars", freq="W", observation_end="1997-09-30"
    )


@pytest.fixture(scope="module")
def simulated() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return simulate_customers(50_000, CDNOW_LIKE, SPEND, max_T=39.0, rng=rng)


def _within(fitted: dict[str, float], expected: dict[str, float], rel: float) -> None:
    assert fitted.keys() == expected.keys()
    for name, value in expected.items():
        assert fitted[name] == pytest.approx(value, rel=rel), name


@pytest.mark.shared_data
class TestCdnow:
    def test_calibration_counts(self, cdnow: pd.DataFrame) -> None:
        assert len(cdnow) == 2357
        assert int((cdnow["frequency"] > 0).sum()) == 946
        assert cdnow["T"].max() == pytest.approx(272 / 7)

    def test_bgnbd_reproduces_published_fit(self, cdnow: pd.DataFrame) -> None:
        model = BetaGeoModel().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])

        _within(model.params, PUBLISHED_BGNBD, rel=0.01)
        assert model.log_likelihood == pytest.approx(
            PUBLISHED_BGNBD_LOG_LIKELIHOOD, abs=0.1
        )

    def test_bgnbd_reproduces_published_conditional_expectation(
        self, cdnow: pd.DataFrame
    ) -> None:
        model = BetaGeoModel().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])

        # The paper's worked example: 2 repeat purchases, the last at week
        # 30.43 of 38.86, expects 1.226 purchases in the next 39 weeks.
        expected = model.expected_purchases(39, 2, 30.43, 38.86)

        assert expected == pytest.approx([1.226], abs=5e-4)

    def test_gammagamma_reproduces_published_fit(self, cdnow: pd.DataFrame) -> None:
        model = GammaGammaModel().fit(cdnow["frequency"], cdnow["monetary_value"])

        _within(model.params, PUBLISHED_GAMMAGAMMA, rel=0.01)


class TestBetaGeoFit:
    def test_recovers_simulated_parameters(self, simulated: pd.DataFrame) -> None:
        model = BetaGeoModel().fit(
            simulated["frequency"], simulated["recency"], simulated["T"]
        )

        _within(model.params, CDNOW_LIKE, rel=0.15)

    def test_fit_returns_self_and_accepts_lists(self) -> None:
        model = BetaGeoModel()
        frequency = [0, 1, 2, 0, 3, 1, 0, 5, 2, 0, 1, 0]
        recency = [0, 4, 9, 0, 20, 2, 0, 25, 12, 0, 7, 0]

        assert model.fit(frequency, recency, [30] * 12) is model
        assert set(model.params) == {"r", "alpha", "a", "b"}
        assert all(np.isfinite(v) and v > 0 for v in model.params.values())

    def test_gradient_matches_finite_differences(self, simulated: pd.DataFrame) -> None:
        head = simulated.head(2000)
        customers = bgnbd._Customers.collapse(
            head["frequency"].to_numpy(float),
            head["recency"].to_numpy(float),
            head["T"].to_numpy(float),
        )

        for point in ([0.3, 4.0, 0.8, 2.5], [2.0, 0.5, 3.0, 0.4]):
            error = check_grad(
                lambda p: bgnbd._log_likelihood(p, customers)[0],
                lambda p: bgnbd._log_likelihood(p, customers)[1],
                np.array(point),
            )
            scale = np.linalg.norm(bgnbd._log_likelihood(np.array(point), customers)[1])
            assert error < 1e-5 * max(float(scale), 1.0)

    def test_penalizer_shrinks_parameters(self, simulated: pd.DataFrame) -> None:
        columns = (simulated["frequency"], simulated["recency"], simulated["T"])
        plain = BetaGeoModel().fit(*columns)
        shrunk = BetaGeoModel(penalizer=0.1).fit(*columns)

        def size(m: BetaGeoModel) -> float:
            return sum(v**2 for v in m.params.values())

        assert size(shrunk) < size(plain)

    def test_no_repeat_buyers_is_a_fit_error(self) -> None:
        with pytest.raises(FitError, match="no customer bought twice"):
            BetaGeoModel().fit([0] * 50, [0] * 50, [10] * 50)

    def test_too_few_customers_is_a_fit_error(self) -> None:
        with pytest.raises(FitError, match="at least 10 customers"):
            BetaGeoModel().fit([1, 2], [3, 4], [5, 6])

    def test_fit_error_is_a_value_error_in_the_nudge_tree(self) -> None:
        assert issubclass(FitError, ValueError)
        assert issubclass(FitError, NudgeError)

    def test_parameter_running_off_is_a_fit_error(self) -> None:
        def unbounded(params: npt.NDArray[np.float64]) -> tuple[float, Any]:
            return float(params[0]), np.array([1.0])

        with pytest.raises(FitError, match="theta ran to the edge"):
            _common.fit_log_params("toy", ["theta"], unbounded, [[1.0]], 0.0)

    @pytest.mark.parametrize(
        ("frequency", "recency", "T", "message"),
        [
            ([-1] * 12, [0] * 12, [5] * 12, "frequency must not be negative"),
            ([1.5] * 12, [1] * 12, [5] * 12, "whole numbers"),
            ([1] * 12, [-1] * 12, [5] * 12, "recency must not be negative"),
            ([1] * 12, [6] * 12, [5] * 12, "must not exceed T"),
            ([0] * 12, [2] * 12, [5] * 12, "frequency 0 must have recency 0"),
            ([1] * 12, [1] * 11, [5] * 12, "mismatched lengths"),
            ([1], [1] * 12, [5] * 12, "mismatched lengths"),
            ([1] * 11 + [np.nan], [1] * 12, [5] * 12, "missing or infinite"),
            (["x"] * 12, [1] * 12, [5] * 12, "must hold numbers"),
        ],
    )
    def test_bad_input_is_a_value_error(
        self, frequency: list[float], recency: list[float], T: list[float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            BetaGeoModel().fit(frequency, recency, T)

    def test_negative_penalizer_is_refused(self) -> None:
        with pytest.raises(ValueError, match="penalizer"):
            BetaGeoModel(penalizer=-1.0)

    def test_unfitted_model_refuses_to_predict(self) -> None:
        with pytest.raises(RuntimeError, match="not fitted"):
            BetaGeoModel().p_alive([1], [1], [2])


class TestBetaGeoPredictions:
    model = BetaGeoModel.from_params(CDNOW_LIKE)

    def test_p_alive_is_one_without_repeat_purchases(self) -> None:
        alive = self.model.p_alive([0, 0, 0], [0, 0, 0], [0.0, 5.0, 100.0])

        np.testing.assert_array_equal(alive, 1.0)

    def test_p_alive_falls_with_time_since_last_purchase(self) -> None:
        alive = self.model.p_alive(3, 10.0, [10.0, 20.0, 40.0])

        assert alive[0] > alive[1] > alive[2] > 0
        assert alive[0] <= 1

    def test_p_alive_matches_closed_form(self) -> None:
        r, alpha, a, b = CDNOW_LIKE.values()
        x, t_x, T = 4, 12.0, 30.0

        odds = a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)

        assert self.model.p_alive(x, t_x, T) == pytest.approx([1 / (1 + odds)])

    def test_expected_purchases_rise_with_horizon(self) -> None:
        horizons = np.linspace(0, 200, 41)

        expected = self.model.expected_purchases(horizons, 2, 20.0, 30.0)

        assert expected[0] == 0
        assert np.all(np.diff(expected) > 0)

    def test_expected_purchases_match_paper_formula(self) -> None:
        r, alpha, a, b = CDNOW_LIKE.values()
        t, x, T = 26.0, np.array([0, 1, 4, 12]), 30.0
        t_x = np.where(x > 0, 18.0, 0.0)

        z = t / (alpha + T + t)
        stays = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(
            r + x, b + x, a + b + x - 1, z
        )
        odds = (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        paper = (a + b + x - 1) / (a - 1) * stays / (1 + odds)

        np.testing.assert_allclose(
            self.model.expected_purchases(t, x, t_x, T), paper, rtol=1e-10
        )

    def test_new_customer_expectation_matches_simulation(self) -> None:
        rng = np.random.default_rng(3)
        drawn = simulate_customers(100_000, STEADY, max_T=52.0, rng=rng)
        model = BetaGeoModel.from_params(STEADY)

        # Each drawn customer's repeat purchases over their own T estimate the
        # unconditional expectation at that T.
        expected = model.expected_purchases_new(drawn["T"])

        assert expected.mean() == pytest.approx(drawn["frequency"].mean(), rel=0.02)

    def test_new_customer_expectation_is_conditional_at_zero(self) -> None:
        horizons = np.array([0.0, 1.0, 10.0, 100.0])

        new = self.model.expected_purchases_new(horizons)
        conditional = self.model.expected_purchases(horizons, 0, 0, 0)

        np.testing.assert_allclose(new, conditional)
        assert new[0] == 0 and np.all(np.diff(new) > 0)

    def test_outputs_are_arrays_for_series_input(self) -> None:
        frequency = pd.Series([0, 2, 5])
        recency = pd.Series([0.0, 10.0, 25.0])
        T = pd.Series([30.0, 30.0, 30.0])

        for output in (
            self.model.p_alive(frequency, recency, T),
            self.model.expected_purchases(10, frequency, recency, T),
        ):
            assert isinstance(output, np.ndarray)
            assert output.shape == (3,)

    def test_negative_horizon_is_refused(self) -> None:
        with pytest.raises(ValueError, match="t must not be negative"):
            self.model.expected_purchases(-1, 1, 1, 2)

    def test_next_purchase_time_is_where_expectation_reaches_one(self) -> None:
        frequency = np.array([0, 1, 3, 8])
        recency = np.array([0.0, 5.0, 25.0, 29.0])
        T = np.full(4, 30.0)

        wait = self.model.expected_time_to_next_purchase(frequency, recency, T)

        assert np.all(np.isfinite(wait))
        reached = self.model.expected_purchases(wait, frequency, recency, T)
        np.testing.assert_allclose(reached, 1.0, rtol=1e-6)
        assert wait[3] < wait[2] < wait[0]

    def test_next_purchase_time_is_infinite_below_the_ceiling(self) -> None:
        model = BetaGeoModel.from_params(STEADY)
        # Someone silent for long after a few purchases is likely gone, so their
        # expected count levels off below one; a recent regular is not.
        frequency, recency, T = np.array([2, 10]), np.array([5.0, 295.0]), 300.0

        wait = model.expected_time_to_next_purchase(frequency, recency, T)

        assert wait[0] == np.inf
        assert np.isfinite(wait[1])

    def test_from_params_checks_names_and_values(self) -> None:
        with pytest.raises(ValueError, match="parameters must be"):
            BetaGeoModel.from_params({"r": 1.0, "alpha": 1.0, "a": 1.0})
        with pytest.raises(ValueError, match="positive"):
            BetaGeoModel.from_params({**CDNOW_LIKE, "b": -1.0})


class TestGammaGamma:
    def test_recovers_simulated_parameters(self, simulated: pd.DataFrame) -> None:
        model = GammaGammaModel().fit(
            simulated["frequency"], simulated["monetary_value"]
        )

        _within(model.params, SPEND, rel=0.15)

    def test_fit_skips_one_time_buyers_and_non_positive_spend(
        self, simulated: pd.DataFrame
    ) -> None:
        usable = simulated[simulated["frequency"] > 0].head(3000)
        noise = pd.DataFrame(
            {"frequency": [0, 0, 3, 2, 1], "monetary_value": [0.0, 9.0, 0.0, -5.0, -1]}
        )
        with_noise = pd.concat([usable, noise])

        clean = GammaGammaModel().fit(usable["frequency"], usable["monetary_value"])
        noisy = GammaGammaModel().fit(
            with_noise["frequency"], with_noise["monetary_value"]
        )

        _within(noisy.params, clean.params, rel=1e-9)

    def test_gradient_matches_finite_differences(self, simulated: pd.DataFrame) -> None:
        repeat = simulated[simulated["frequency"] > 0].head(2000)
        spenders = gammagamma._Spenders.collapse(
            repeat["frequency"].to_numpy(float),
            repeat["monetary_value"].to_numpy(float),
        )
        point = np.array([5.0, 3.0, 12.0])

        error = check_grad(
            lambda p: gammagamma._log_likelihood(p, spenders)[0],
            lambda p: gammagamma._log_likelihood(p, spenders)[1],
            point,
        )

        scale = np.linalg.norm(gammagamma._log_likelihood(point, spenders)[1])
        assert error < 1e-5 * max(float(scale), 1.0)

    def test_too_few_usable_customers_is_a_fit_error(self) -> None:
        with pytest.raises(FitError, match="at least 10 customers"):
            GammaGammaModel().fit([0] * 20 + [2] * 5, [0.0] * 20 + [10.0] * 5)

    def test_conditional_spend_blends_population_and_customer(self) -> None:
        model = GammaGammaModel.from_params(SPEND)
        population = SPEND["p"] * SPEND["v"] / (SPEND["q"] - 1)

        spend = model.conditional_expected_average_profit([0, 1, 5, 50], 100.0)

        assert spend[0] == pytest.approx(population)
        assert np.all(np.diff(spend) > 0)
        assert population < spend[-1] < 100.0

    def test_infinite_population_mean_is_refused(self) -> None:
        model = GammaGammaModel.from_params({"p": 2.0, "q": 0.5, "v": 10.0})

        with pytest.raises(ValueError, match="expected spend is infinite"):
            model.conditional_expected_average_profit([0], [0.0])


class TestLifetimeValue:
    bgnbd = BetaGeoModel.from_params({"r": 0.25, "alpha": 30.0, "a": 0.8, "b": 2.5})
    spend = GammaGammaModel.from_params(SPEND)
    customers = (np.array([0, 2, 6]), np.array([0.0, 60.0, 170.0]), 180.0)
    monetary = np.array([0.0, 25.0, 40.0])

    def clv(self, **options: Any) -> npt.NDArray[np.float64]:
        return self.spend.customer_lifetime_value(
            self.bgnbd, *self.customers, self.monetary, **options
        )

    def test_one_month_is_discounted_expected_value(self) -> None:
        purchases = self.bgnbd.expected_purchases(30.0, *self.customers)
        per_purchase = self.spend.conditional_expected_average_profit(
            self.customers[0], self.monetary
        )

        np.testing.assert_allclose(
            self.clv(time=1, discount_rate=0.05), purchases * per_purchase / 1.05
        )

    def test_undiscounted_value_sums_the_whole_horizon(self) -> None:
        purchases = self.bgnbd.expected_purchases(360.0, *self.customers)
        per_purchase = self.spend.conditional_expected_average_profit(
            self.customers[0], self.monetary
        )

        np.testing.assert_allclose(
            self.clv(time=12, discount_rate=0.0), purchases * per_purchase
        )

    def test_value_grows_with_horizon_and_shrinks_with_discount(self) -> None:
        assert np.all(self.clv(time=24) > self.clv(time=12))
        assert np.all(self.clv(discount_rate=0.1) < self.clv(discount_rate=0.01))

    def test_weekly_models_use_months_of_thirty_sevenths_weeks(self) -> None:
        weekly = BetaGeoModel.from_params(
            {"r": 0.25, "alpha": 30 / 7, "a": 0.8, "b": 2.5}
        )
        x, t_x, T = self.customers

        in_weeks = self.spend.customer_lifetime_value(
            weekly, x, t_x / 7, T / 7, self.monetary, freq="W"
        )

        np.testing.assert_allclose(in_weeks, self.clv(), rtol=1e-10)

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"time": 0}, "time must be a whole number"),
            ({"time": 1.5}, "time must be a whole number"),
            ({"discount_rate": -0.1}, "discount_rate"),
            ({"freq": "M"}, "freq must be"),
        ],
    )
    def test_bad_options_are_refused(
        self, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            self.clv(**options)
