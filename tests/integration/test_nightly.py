"""The nightly pipeline end to end on the tiny world: publish, crash-resume, rollback."""

import shutil
import uuid

import pytest
from rich.console import Console
from typer.testing import CliRunner

from jobs.nightly import STEPS, run_nightly
from jobs.runner import StoppedAfter
from recsys.features.store import open_store
from recsys.registry import Registry
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
