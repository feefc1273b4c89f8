"""Joint split-point and resource allocation with baselines; numpy/scipy only.

Two cost models behind one ``solve`` / ``evaluate``: the seed-A paper's (``Scenario``,
``random_scenario``, ``scenario_from_profiles``) and the makespan model (``MakespanScenario``,
``catalogue_scenario``): a shared server, a synchronous round, memory caps.
"""

from .api import METHODS, solve
from .makespan_model import MakespanScenario, catalogue_scenario
from .makespan_result import MakespanAllocation
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
    "MakespanAllocation",
    "MakespanScenario",
    "ModelCost",
    "Scenario",
    "Weights",
    "catalogue_scenario",
    "evaluate",
    "random_scenario",
    "scenario_from_profiles",
    "solve",
]
