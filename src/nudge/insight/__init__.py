"""Probabilistic customer models: who will buy again, how often and for how much."""

from nudge.insight._common import FitError
from nudge.insight.backtest import BacktestReport, backtest
from nudge.insight.bgnbd import BetaGeoModel
from nudge.insight.config import InsightConfig
from nudge.insight.gammagamma import GammaGammaModel
from nudge.insight.profiles import Profiles, build_profiles, segment_summary
from nudge.insight.replenishment import buy_again_due, replenishment
from nudge.insight.summary import summarize_transactions

__all__ = [
    "BacktestReport",
    "BetaGeoModel",
    "FitError",
    "GammaGammaModel",
    "InsightConfig",
    "Profiles",
    "backtest",
    "build_profiles",
    "buy_again_due",
    "replenishment",
    "segment_summary",
    "summarize_transactions",
]
