"""Probabilistic customer models: who will buy again, how often and for how much."""

from nudge.insight._common import FitError
from nudge.insight.bgnbd import BetaGeoModel
from nudge.insight.gammagamma import GammaGammaModel
from nudge.insight.summary import summarize_transactions

__all__ = [
    "BetaGeoModel",
    "FitError",
    "GammaGammaModel",
    "summarize_transactions",
]
