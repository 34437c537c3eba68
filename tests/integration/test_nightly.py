"""The nightly pipeline end to end on the tiny world: publish, crash-resume, rollback."""

import json
import shutil
import uuid

import pytest
from rich.console import Console
from typer.testing import CliRunner

from jobs.nightly import STEPS, run_nightly
from jobs.runner import StoppedAfter
from recsys.features.store import open_store
from recsys.monitoring.profile import load_profile
from recsys.registry import Registry
from recsys.registry.publish import DEFINITIONS_MANIFEST, REFERENCE_PROFILE
from tests.conftest import FAST_TRAINING, tiny_config

USERS = [{"user_id": u} for u in range(0, 400, 37)]


def _copy_world(tiny_world, tmp_path_factory, name: str, **changes):
    data_dir = tmp_path_factory.mktemp(name)
    shutil.copytree(tiny_world.raw_dir, data_dir / "raw")
    shutil.copytree(tiny_world.data_dir / "truth", data_dir / "truth")
    changes.setdefault("training", FAST_TRAINING)
    return tiny_config(data_dir, **changes)


def _quiet() -> Console:
    return Console(record=True, width=200)


def _online_lists(config):
    rows = open_store(config).get_online_features(
        features=["user_top_restaurants:restaurant_ids", "user_top_restaurants:scores",
                  "user_top_restaurants:model_version"], entity_rows=USERS).to_dict()
    return rows


@pytest.fixture(scope="module")
def published(tiny_world, tmp_path_factory):
    config = _copy_world(tiny_world, tmp_path_factory, "nightly_sqlite")
    summary = run_nightly(config, console=_quiet())
    return config, summary


def test_nightly_trains_gates_and_publishes_a_version_that_models_list_shows(published):
    from recsys.cli import _register, app

    config, summary = published
    version = summary["steps"]["register"]["version"]
    assert summary["steps"]["gate"]["passed"], summary["steps"]["gate"]
    assert summary["steps"]["publish"]["serving"] == version
    assert Registry.for_config(config).open().serving().version == version
    lists = _online_lists(config)
    assert set(lists["model_version"]) == {version}
    assert all(len(ids) > 0 for ids in lists["restaurant_ids"])
    _register()
    out = CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "models", "list"])
    assert out.exit_code == 0 and version in out.output


def test_the_published_version_carries_its_reference_profile_and_definitions_manifest(published):
    """Every numeric input of the ranker's feature service and the model's scores are profiled on the
    training rows; the manifest names every Feast object; both are fingerprinted artifacts."""
    config, summary = published
    version = summary["steps"]["register"]["version"]
    registry = Registry.for_config(config).open()
    directory, meta = registry.version_dir(version), registry.show(version)
    assert {REFERENCE_PROFILE, DEFINITIONS_MANIFEST} <= set(meta.artifacts)
    profile = load_profile(directory / REFERENCE_PROFILE)
    service = open_store(config).get_feature_service("ranker_v1").feature_view_projections
    names = {f"{p.name_to_use()}__{f.name}": str(f.dtype) for p in service for f in p.features}
    scores = {"als_score"} | ({"ranker_score"} if (directory / "ranker.json").exists() else set())
    empty = set(filter(None, profile.meta["empty"].split(",")))  # no value in the window: named, not profiled
    assert set(profile.features) | empty == {n for n, dtype in names.items() if dtype != "String"} | scores
    assert set(profile.meta["not_profiled"].split(",")) == {n for n, dtype in names.items() if dtype == "String"}
    assert all(groups["all"].rows > 0 for groups in profile.features.values())
    manifest = json.loads((directory / DEFINITIONS_MANIFEST).read_text())
    assert {"feature_view:user_stats", "on_demand_feature_view:price_vs_basket", "feature_service:ranker_v1",
            "entity:user", "table:impressions"} <= set(manifest["objects"])


def test_a_run_killed_at_each_step_boundary_publishes_the_same_result(tiny_world, tmp_path_factory, published):
    reference, ref_summary = published
    config = _copy_world(tiny_world, tmp_path_factory, "nightly_killed")
    for step in STEPS[:-1]:
        with pytest.raises(StoppedAfter):
            run_nightly(config, console=_quiet(), stop_after=step.name)
    summary = run_nightly(config, console=_quiet())
    assert summary["steps"]["publish"]["serving"] == ref_summary["steps"]["publish"]["serving"]
    assert _online_lists(config) == _online_lists(reference)


def test_rollback_restores_the_previous_versions_online_rows_and_pointer(tiny_world, tmp_path_factory, redis_url):
    from recsys.cli import _register, app

    config = _copy_world(tiny_world, tmp_path_factory, "nightly_redis", online_store=redis_url,
                         project=f"night_{uuid.uuid4().hex[:8]}")
    first = run_nightly(config, console=_quiet())["steps"]["register"]["version"]
    # A second version from the same data (another seed), allowed past the regression check.
    second_config = config.with_overrides(seed=8, gate={"tolerance": 1.0, "slice_tolerance": 1.0})
    second = run_nightly(second_config, console=_quiet(), resume=False)["steps"]["register"]["version"]
    assert first != second
    assert set(_online_lists(config)["model_version"]) == {second}
    _register()
    out = CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "--online-store", redis_url,
                                   "models", "rollback"], env={"RECSYS_PROJECT": config.project})
    assert out.exit_code == 0, out.output
    assert Registry.for_config(config).open().serving().version == first
    lists = _online_lists(config)
    assert set(lists["model_version"]) == {first}
