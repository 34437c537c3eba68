"""Session-wide fixtures: one tiny simulated world and one Redis per test session, shared.

Redis: scripts/test.sh starts a throwaway server and exports RECSYS_TEST_REDIS. Run directly with
pytest, the fixture starts its own `redis-server` on a free port when the binary is on PATH, and
otherwise fails with a message saying how to get one: Redis tests always run, never skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from recsys.config import Config, load_config  # noqa: E402
from recsys.testing import LocalRedis  # noqa: E402


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A Redis server for the session: RECSYS_TEST_REDIS, or one started here."""
    url = os.environ.get("RECSYS_TEST_REDIS")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        pytest.fail("Redis is required: run the tests with `bash scripts/test.sh` (installs and starts it) "
                    "or put redis-server on PATH, or set RECSYS_TEST_REDIS=redis://host:port")
    with LocalRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


# Training settings for nightly runs on the tiny world: one small grid point (the search itself is
# tested in test_training.py) and ranker windows that fit its 14 days.
FAST_TRAINING = {
    "search": {"factors": [8], "regularization": [0.1], "alpha": [2.0], "iterations": [5], "trials": 1},
    "ranker": {"window_days": 4, "heldout_days": 3, "eval_requests": 50, "cost_sample_rows": 0},
}


def tiny_config(data_dir: Path, **changes) -> Config:
    """The configuration of the tests' tiny world, rooted at data_dir."""
    base = load_config(environ={}, data_dir=data_dir, seed=7)
    sim = {"size": "tiny", **changes.pop("sim", {})}
    return base.with_overrides(sim=sim, **changes)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Config:
    """One tiny simulated world for the whole session (raw tables + truth). Read-only for tests."""
    from recsys.simulation.run import simulate

    config = tiny_config(tmp_path_factory.mktemp("tiny_world"))
    simulate(config)
    return config
