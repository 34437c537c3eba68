"""Training fixtures shared by the integration tests: one split and one trained model per surface
per session, on the session's tiny world."""

from __future__ import annotations

import pytest

from recsys.training.als import ALSModel
from recsys.training.interactions import scan_impressions
from recsys.training.params import ALSParams
from recsys.training.search import time_split

# Small factor count and strong regularisation: the tiny world has ~10 clicks per user, so this
# is the setting where ALS's lead over popularity on held-out recall is wide (and deterministic).
TINY_ALS = ALSParams(factors=8, regularization=1.0, alpha=2.0, iterations=15)
VALIDATION_DAYS = 3


@pytest.fixture(scope="session")
def tiny_splits(tiny_world):
    log = scan_impressions(tiny_world.raw_dir)
    return {surface: time_split(log, surface, VALIDATION_DAYS) for surface in ("feed", "menu")}


@pytest.fixture(scope="session")
def tiny_models(tiny_world, tiny_splits):
    return {surface: ALSModel(TINY_ALS, seed=tiny_world.seed).fit(split.train)
            for surface, split in tiny_splits.items()}
