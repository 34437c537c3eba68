"""Fixtures shared by the integration tests, each built once per session on the session's tiny world:
one split and one trained model per surface, and one nightly-published world.

The published world: the nightly (the slow part, ~45 s) runs once per session. Modules that only
serve from it or read it, or put back what they change, use ``published`` itself; modules that
change it for good (online rows written, the updater's state, Redis stopped) take their own copy
from ``published_copy``: the nightly's files copied, then applied, materialized and published under
a Feast project of their own on the session's Redis (a few seconds, no training)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from recsys.config import Config
from recsys.training.als import ALSModel
from recsys.training.interactions import scan_impressions
from recsys.training.params import ALSParams
from recsys.training.search import time_split
from tests.conftest import tiny_config

# Small factor count and strong regularisation: the tiny world has ~10 clicks per user, so this
# is the setting where ALS's lead over popularity on held-out recall is wide (and deterministic).
TINY_ALS = ALSParams(factors=8, regularization=1.0, alpha=2.0, iterations=15)
VALIDATION_DAYS = 3

# Nightly settings of the published world: one small ALS grid point; ranker windows that fit the
# tiny world's 14 days.
PUBLISHED_TRAINING = {
    "search": {"factors": [8], "regularization": [0.1], "alpha": [2.0], "iterations": [5], "trials": 1},
    "ranker": {"window_days": 3, "heldout_days": 3, "negative_rate": 1.0, "eval_requests": 2000},
}


@pytest.fixture(scope="session")
def tiny_splits(tiny_world):
    log = scan_impressions(tiny_world.raw_dir)
    return {surface: time_split(log, surface, VALIDATION_DAYS) for surface in ("feed", "menu")}


@pytest.fixture(scope="session")
def tiny_models(tiny_world, tiny_splits):
    return {surface: ALSModel(TINY_ALS, seed=tiny_world.seed).fit(split.train)
            for surface, split in tiny_splits.items()}


def _published_config(directory: Path, online_store: str) -> Config:
    return tiny_config(directory, online_store=online_store, project=f"srv_{uuid.uuid4().hex[:8]}",
                       training=PUBLISHED_TRAINING)


@pytest.fixture(scope="session")
def _nightly(tiny_world, tmp_path_factory, redis_url) -> tuple[Config, str, Path]:
    """The tiny world nightly-run and published on the session's Redis: (config, serving version,
    a copy of its files taken right after the nightly, which ``published_copy`` starts from)."""
    from jobs.nightly import run_nightly

    directory = tmp_path_factory.mktemp("published")
    shutil.copytree(tiny_world.raw_dir, directory / "raw")
    shutil.copytree(tiny_world.data_dir / "truth", directory / "truth")
    config = _published_config(directory, redis_url)
    summary = run_nightly(config, console=Console(record=True, width=200))
    assert summary["steps"]["publish"]["published"], summary["steps"]
    pristine = tmp_path_factory.mktemp("published_pristine")
    shutil.copytree(directory, pristine, dirs_exist_ok=True)
    return config, summary["steps"]["register"]["version"], pristine


@pytest.fixture(scope="session")
def published(_nightly) -> tuple[Config, str]:
    """(config, serving version) of the session's nightly-published tiny world, shared: a module
    may only read it, serve from it, or add registry versions and move the SERVING pointer if it
    moves it back (and so republishes the serving version's online rows)."""
    config, version, _ = _nightly
    return config, version


@pytest.fixture(scope="session")
def published_copy(_nightly, tmp_path_factory, redis_url) -> Callable[[str], tuple[Config, str]]:
    """``published_copy(name)``: a private copy of the published world as the nightly left it, to
    change at will; (config, serving version). Own data directory (registry, offline store, event
    logs) and own Feast project on the session's Redis, with the same online rows."""
    from recsys.features.store import apply, materialize, offline_end
    from recsys.registry import Registry
    from recsys.registry.publish import publish_version

    _, version, pristine = _nightly

    def copy(name: str) -> tuple[Config, str]:
        directory = tmp_path_factory.mktemp(name)
        shutil.copytree(pristine, directory, dirs_exist_ok=True)
        config = _published_config(directory, redis_url)
        apply(config)
        materialize(config, offline_end(config))
        publish_version(config, version)
        assert Registry.for_config(config).open().serving().version == version
        return config, version

    return copy
