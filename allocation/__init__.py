"""Joint split-point and resource allocation (seed A) with baselines; numpy/scipy only."""

from .api import METHODS, solve
from .result import Allocation, evaluate
from .system_model import (
    Costs,
    ModelCost,
    Scenario,
    Weights,
    random_scenario,
    scenario_from_profiles,
)

__all__ = [
    "METHODS",
    "Allocation",
    "Costs",
    "ModelCost",
    "Scenario",
    "Weights",
    "evaluate",
    "random_scenario",
    "scenario_from_profiles",
    "solve",
]
