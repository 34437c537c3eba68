"""`recsys monitor changes`: the serving version's definitions manifest against an edited copy of
the real feature repo (real Feast definitions) and against changed upstream table contracts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.config import PROJECT_ROOT
from recsys.contracts.schemas import ITEMS, SCHEMAS
from recsys.monitoring.changes import changes_since, definitions_manifest, save_manifest
from recsys.registry import Registry, feature_definitions_hash
from recsys.registry.publish import DEFINITIONS_MANIFEST
from tests.conftest import tiny_config

REPO = PROJECT_ROOT / "feature_repo"
TRAINED = datetime(2026, 10, 15, tzinfo=timezone.utc)


def _serve(config, version: str, manifest: bool) -> None:
    """Commit ``version`` trained with the repo as it is now (with or without a manifest) and serve it."""
    registry = Registry.for_config(config).open()
    with registry.stage(version) as area:
        if manifest:
            save_manifest(definitions_manifest(config), area.artifact(DEFINITIONS_MANIFEST))
        else:
            area.write_json("params.json", {})
        area.commit(trained_until=TRAINED, data_fingerprint="test",
                    feature_definitions_hash=feature_definitions_hash(config.feature_repo))
    registry.promote(version, "test", publish=None)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    config = tiny_config(tmp_path_factory.mktemp("changes"))
    _serve(config, "v1", manifest=True)
    return config


def _edited_repo(tmp_path: Path, module: str = "", old: str = "", new: str = "") -> Path:
    """A copy of the real feature repo with ``old`` replaced by ``new`` in ``module`` (if given)."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    if not module:
        return repo
    path = repo / module
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new))
    return repo


def _monitor(config, repo: Path, tmp_path: Path):
    from recsys.cli import _register, app

    _register()
    out, prom = tmp_path / "changes.json", tmp_path / "changes.prom"
    result = CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "monitor", "changes", "--feature-repo",
                                      str(repo), "--out", str(out), "--prometheus", str(prom)])
    return result, json.loads(out.read_text()), prom.read_text()


def test_an_unchanged_copy_of_the_repo_gives_no_notification(served, tmp_path):
    result, report, prom = _monitor(served, _edited_repo(tmp_path), tmp_path)
    assert result.exit_code == 0, result.output
    assert report["changes"] == [] and report["compared"] > 20 and "recsys_definitions_ok 1.0" in prom


def test_an_edited_comment_is_not_a_change(served, tmp_path):
    result, report, _ = _monitor(served, _edited_repo(tmp_path, "views.py", "# Daily snapshots", "# Daily"), tmp_path)
    assert result.exit_code == 0 and report["changes"] == [], result.output


def test_a_changed_dtype_names_the_view_and_the_field(served, tmp_path):
    repo = _edited_repo(tmp_path, "views.py", 'Field(name="price", dtype=Float32)',
                        'Field(name="price", dtype=Float64)')
    result, report, prom = _monitor(served, repo, tmp_path)
    assert result.exit_code == 1, result.output
    assert [(c["kind"], c["name"], c["status"], c["details"]) for c in report["changes"]] == [
        ("feature_view", "item_profile", "changed", ["field price: dtype Float32 -> Float64"])]
    assert "item_profile changed: field price: dtype Float32 -> Float64" in result.output
    assert 'recsys_definitions_changed{kind="feature_view",name="item_profile",status="changed"} 1.0' in prom


def test_a_changed_ttl_names_every_view_using_it(served, tmp_path):
    repo = _edited_repo(tmp_path, "views.py", "STATS_TTL = timedelta(days=2)", "STATS_TTL = timedelta(days=1)")
    _, report, _ = _monitor(served, repo, tmp_path)
    assert {c["name"]: c["details"] for c in report["changes"]} == {
        v: ["ttl: 2 days, 0:00:00 -> 1 day, 0:00:00"]
        for v in ("item_stats", "restaurant_stats", "user_cuisine_affinity", "user_stats")}


def test_a_constant_read_by_an_on_demand_transform_and_a_removed_field_are_named(served, tmp_path):
    repo = _edited_repo(tmp_path, "on_demand.py", "DEFAULT_PRICE_RATIO = 1.0", "DEFAULT_PRICE_RATIO = 2.0")
    views = repo / "views.py"
    views.write_text(views.read_text().replace('        Field(name="platform", dtype=String),\n', "", 1))
    _, report, _ = _monitor(served, repo, tmp_path)
    assert {(c["name"], tuple(c["details"])) for c in report["changes"]} == {
        ("price_vs_basket", ("constants.DEFAULT_PRICE_RATIO: 1.0 -> 2.0",)),
        ("user_profile", ("field platform removed (String)",)),
        ("ranker_v1", ('features.user_profile: ["home_cell", "platform"] -> ["home_cell"]',))}


def test_a_changed_upstream_table_schema_names_the_table_and_column(served):
    price = ITEMS.column("price")
    items = dataclasses.replace(ITEMS, columns=tuple(dataclasses.replace(c, dtypes=(pl.Float64,)) if c is price else c
                                                     for c in ITEMS.columns))
    report = changes_since(served, "v1", tables={**SCHEMAS, "items": items})
    assert [(c.kind, c.name, c.details) for c in report.changes] == [
        ("table", "items", ('column price: dtypes ["Float32"] -> ["Float64"]',))]


def test_a_version_from_before_manifests_gets_a_clear_note_not_a_crash(tmp_path):
    config = tiny_config(tmp_path / "data")
    _serve(config, "old", manifest=False)
    same, report, _ = _monitor(config, REPO, tmp_path)
    assert same.exit_code == 0, same.output
    assert "predates definition manifests" in report["note"] and "predates" in same.output
    edited = _edited_repo(tmp_path, "views.py", "# Daily snapshots", "# Daily")
    changed, report, _ = _monitor(config, edited, tmp_path)
    assert changed.exit_code == 1 and [c["kind"] for c in report["changes"]] == ["feature_repo"]
