"""One nightly-published copy of the tiny world per test session, shared by the modules that only
serve from it or add versions to its registry and put its pointer back (test_ab,
test_feature_samples): the nightly, the slow part, runs once for all of them."""

from __future__ import annotations

from tests.integration.test_online_path import published_world

_WORLD: dict[str, tuple] = {}


def shared_published_world(tiny_world, tmp_path_factory, redis_url) -> tuple:
    """``(config, serving version)`` of the session's published tiny world (built on first use)."""
    if "world" not in _WORLD:
        _WORLD["world"] = published_world(tiny_world, tmp_path_factory.mktemp("published"), redis_url)
    return _WORLD["world"]
