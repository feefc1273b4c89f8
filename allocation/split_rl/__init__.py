"""Seed B: the learned split policy for wireless split inference (model-based RL; uses torch).

Import it explicitly (`from allocation.split_rl import SplitPolicy`): the rest of `allocation`
stays free of torch.
"""

from .agents import ALGORITHMS, DynaRefresh, SplitPolicy, real_ratio, train_agent
from .env import SplitEnv
from .evaluator import PerplexitySource, SplitEvaluator, Tally
from .oracle import OracleChoice, oracle
from .problem import SplitProblem
from .surrogate import Surrogate, grid_states

__all__ = [
    "ALGORITHMS",
    "DynaRefresh",
    "OracleChoice",
    "PerplexitySource",
    "SplitEnv",
    "SplitEvaluator",
    "SplitPolicy",
    "SplitProblem",
    "Surrogate",
    "Tally",
    "grid_states",
    "oracle",
    "real_ratio",
    "train_agent",
]
