"""Shared column names and options of the offline evaluation (one vocabulary for every module).

The impressions-log and policy-lists contracts are in docs/DATA_CONTRACTS.md; these are the
names the evaluation reads from them and the ones it adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recsys.errors import ConfigError

# ---- columns of the impressions log (contract) ----
REQUEST_ID = "request_id"
TS = "ts"
USER_ID = "user_id"
SURFACE = "surface"
RESTAURANT_ID = "restaurant_id"
ITEM_ID = "item_id"
POSITION = "position"
PROPENSITY = "propensity"
POLICY = "policy"
CLICKED = "clicked"
ORDERED = "ordered"

LOG_REQUIRED = (REQUEST_ID, TS, USER_ID, SURFACE, RESTAURANT_ID, ITEM_ID, POSITION, PROPENSITY, CLICKED, ORDERED)
ID_COLUMNS = (REQUEST_ID, USER_ID, RESTAURANT_ID, ITEM_ID)

# ---- columns the evaluation adds ----
REQ_IDX = "req_idx"  # dense request index 0..R-1, in log order: the unit of the bootstrap
ENTITY = "entity"  # the logged entry: restaurant_id on the feed, item_id on the menu
POLICY_ENTITY = "policy_entity"  # the target policy's entry at this (request, position)
POLICY_PROPENSITY = "policy_propensity"  # target's probability of the entry (1 if deterministic)
MATCH = "match"  # policy_entity == entity
ROW = "row"  # 0-based row number in the file(s) as read: what error messages name

Surface = Literal["feed", "menu"]
Reward = Literal["clicked", "ordered"]
SURFACES: tuple[str, ...] = ("feed", "menu")
REWARDS: tuple[str, ...] = (CLICKED, ORDERED)
ESTIMATOR_NAMES: tuple[str, ...] = ("naive", "replay", "ips", "snips", "dr")


def entity_column(surface: str) -> str:
    """The id column a policy ranks on a surface: restaurants on the feed, items on the menu."""
    return RESTAURANT_ID if surface == "feed" else ITEM_ID


@dataclass(frozen=True)
class EvalOptions:
    """Settings shared by every estimator (one signature: ``estimator(events, options)``).

    Parameters
    ----------
    reward : "clicked" or "ordered"
        The logged column used as the reward.
    clip : float or None
        Cap on importance weights ``w = pi / propensity`` (None: no clipping). Clipping trades
        bias (downwards) for variance.
    n_bootstrap : int
        Poisson-bootstrap resamples over requests for the 95% intervals (0: no intervals).
    seed : int
        Seed of the bootstrap weights (the same seed gives the same intervals).
    min_matched, min_ess : int
        Below these matched events or effective sample size an estimate carries ``warning``.
    prior_strength : float
        Pseudo-count k of the doubly-robust reward model's smoothing (see estimators.py).
    max_positions : int
        Positions >= this are reported together in one last bucket (overall numbers unaffected).
    chunk_elements : int
        Bootstrap weight-matrix chunk size in elements (memory ~ 6 bytes per element).
    """

    reward: str = CLICKED
    clip: float | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    min_matched: int = 100
    min_ess: float = 100.0
    prior_strength: float = 20.0
    max_positions: int = 20
    chunk_elements: int = 1 << 25

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ConfigError(f"reward={self.reward!r}: expected one of {REWARDS}")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"clip={self.clip!r}: expected a positive weight cap or None")
        if self.n_bootstrap < 0:
            raise ConfigError(f"n_bootstrap={self.n_bootstrap!r}: expected >= 0")
        if self.max_positions < 1:
            raise ConfigError(f"max_positions={self.max_positions!r}: expected >= 1")
