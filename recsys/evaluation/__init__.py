"""Offline replay evaluation of ranking policies on logged impressions (docs/EVALUATION.md).

logs -> policies -> estimators -> compare -> report; :func:`run.evaluate` chains them.
"""

from recsys.evaluation.columns import EvalOptions
from recsys.evaluation.compare import compare, compare_slices, exposure, gini
from recsys.evaluation.estimators import doubly_robust, estimate_all, ips, naive, replay, snips
from recsys.evaluation.logs import check_log, check_policy_lists, join_policy, load_log, load_policy_lists
from recsys.evaluation.policies import register_policy, resolve_policy
from recsys.evaluation.report import write_report
from recsys.evaluation.run import evaluate

__all__ = [
    "EvalOptions", "check_log", "check_policy_lists", "compare", "compare_slices", "doubly_robust",
    "estimate_all", "evaluate", "exposure", "gini", "ips", "join_policy", "load_log", "load_policy_lists",
    "naive", "register_policy", "replay", "resolve_policy", "snips", "write_report",
]
