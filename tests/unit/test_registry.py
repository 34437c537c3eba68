"""The model registry: atomic immutable versions, the serving pointer, rollback, fingerprints."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import polars as pl
import pytest

from recsys.errors import NotFoundError
from recsys.registry import (PointerWatcher, PromotionRefusedError, Registry, RegistryError,
                             VersionConflictError, fingerprint_files, fingerprint_frame, version_id)
from recsys.registry._io import FileLock

T0 = datetime(2026, 10, 28, tzinfo=timezone.utc)


def _commit(registry: Registry, version: str, *, factor: float = 1.0, status: str = "candidate",
            status_reason: str = "", trained_until: datetime = T0):
    with registry.stage(version) as area:
        area.write_arrays("als.npz", item_factors=np.full((3, 2), factor, dtype=np.float32))
        area.write_json("params.json", {"factors": 2, "alpha": np.float64(1.5)})
        return area.commit(trained_until=trained_until, data_fingerprint="d" * 64,
                           feature_definitions_hash="f" * 64, params={"factors": np.int64(2)},
                           metrics={"recall@10": 0.25, "ndcg@10": np.float32(0.5)},
                           status=status, status_reason=status_reason, code_version="git:test")


def _no_publish(version: str) -> None:
    pass


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "registry").open()


def test_constructor_does_no_io(tmp_path):
    Registry(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_commit_renames_the_staging_area_into_place_with_metadata_and_manifest(registry):
    meta = _commit(registry, "v1")
    files = sorted(p.name for p in registry.version_dir("v1").iterdir())
    assert files == ["als.npz", "metadata.json", "params.json"]
    assert [p.name for p in registry.models_dir.iterdir()] == ["v1"]  # no staging dir, no lock left
    assert set(meta.artifacts) == {"als.npz", "params.json"}
    assert registry.show("v1") == meta
    assert meta.status == "candidate" and meta.params == {"factors": 2} and meta.code_version == "git:test"
    with np.load(registry.version_dir("v1") / "als.npz", allow_pickle=False) as npz:
        assert npz["item_factors"].shape == (3, 2)
    assert registry.verify("v1") == []


def test_an_uncommitted_staging_area_is_not_listed_and_is_removed_when_left(registry):
    with registry.stage("v1") as area:
        area.write_json("params.json", {})
        assert registry.list_versions() == []
    assert list(registry.models_dir.iterdir()) == []


def test_a_staging_dir_left_by_a_crash_is_cleaned_on_the_next_open_but_a_live_one_is_kept(registry):
    crashed = registry.models_dir / ".staging-v1-deadbeef"  # its writer died: no lock held
    crashed.mkdir()
    (crashed / "als.npz").write_bytes(b"half written")
    (registry.models_dir / ".staging-v2-cafe.lock").touch()
    (registry.models_dir / ".staging-v2-cafe").mkdir()  # lock file present, nobody holds it
    live = registry.stage("v3")
    live.write_json("params.json", {})
    assert registry.list_versions() == []

    Registry(registry.root).open()

    assert sorted(p.name for p in registry.models_dir.iterdir()) == [live.path.name, live.path.name + ".lock"]
    live.abort()
    assert list(registry.models_dir.iterdir()) == []


def test_a_writer_process_killed_mid_staging_leaves_a_dir_that_the_next_open_removes(registry):
    script = ("import os, sys; from pathlib import Path; from recsys.registry import Registry; "
              "area = Registry(Path(sys.argv[1])).stage('v1'); area.write_json('params.json', {}); "
              "os._exit(9)")
    result = subprocess.run([sys.executable, "-c", script, str(registry.root)])
    assert result.returncode == 9
    assert len(list(registry.models_dir.iterdir())) == 2  # the staging dir and its lock file
    assert registry.list_versions() == []
    registry.open()
    assert list(registry.models_dir.iterdir()) == []


def test_committing_identical_content_twice_is_idempotent(registry):
    first = _commit(registry, "v1")
    again = _commit(registry, "v1")
    assert again == first  # the existing version, its created_at unchanged
    assert [m.version for m in registry.list_versions()] == ["v1"]
    assert [p.name for p in registry.models_dir.iterdir()] == ["v1"]


def test_committing_different_content_under_an_existing_version_is_an_error(registry):
    _commit(registry, "v1")
    with pytest.raises(VersionConflictError, match=r"artifact als\.npz"):
        _commit(registry, "v1", factor=2.0)
    with pytest.raises(VersionConflictError, match="field trained_until"):
        _commit(registry, "v1", trained_until=datetime(2026, 10, 29, tzinfo=timezone.utc))
    assert registry.verify("v1") == []
    assert [p.name for p in registry.models_dir.iterdir()] == ["v1"]


def test_pickles_and_object_arrays_are_refused_as_artifacts(registry):
    with registry.stage("v1") as area:
        area.write_bytes("model.pkl", b"anything")
        with pytest.raises(RegistryError, match="model.pkl.*pickle"):
            area.commit(trained_until=T0, data_fingerprint="d", feature_definitions_hash="f")
    with registry.stage("v1") as area:
        with area.artifact("ids.npy").open("wb") as fh:
            np.save(fh, np.array(["a", None], dtype=object), allow_pickle=True)
        with pytest.raises(RegistryError, match="object dtype"):
            area.commit(trained_until=T0, data_fingerprint="d", feature_definitions_hash="f")
    assert registry.list_versions() == []


def test_bad_versions_and_naive_timestamps_are_refused_naming_the_value(registry):
    for bad in ["", "../x", ".hidden", "a/b", "x" * 200]:
        with pytest.raises(RegistryError, match="version="):
            registry.stage(bad)
    with registry.stage("v1") as area, pytest.raises(RegistryError, match="trained_until"):
        area.commit(trained_until=datetime(2026, 10, 28), data_fingerprint="d", feature_definitions_hash="f")


def test_unknown_version_is_not_found(registry):
    _commit(registry, "v1")
    with pytest.raises(NotFoundError, match="'nope' not found.*latest: v1"):
        registry.show("nope")
    with pytest.raises(NotFoundError):
        registry.promote("nope", "x", publish=_no_publish)


def test_list_versions_is_sorted_by_creation(registry):
    for version in ["b", "c", "a"]:
        _commit(registry, version)
    assert [m.version for m in registry.list_versions()] == ["b", "c", "a"]


def test_promote_publishes_then_moves_the_pointer_and_the_generation(registry):
    _commit(registry, "v1")
    _commit(registry, "v2")
    seen = []

    def publish(version):
        seen.append((version, registry.serving().version if registry.serving() else None))

    first = registry.promote("v1", "first", publish=publish)
    second = registry.promote("v2", "nightly", publish=publish)
    assert seen == [("v1", None), ("v2", "v1")]  # rows written while the old pointer still served
    assert (first.generation, second.generation) == (1, 2)
    assert registry.serving() == second
    assert (second.version, second.previous, second.reason, second.action) == ("v2", "v1", "nightly", "promote")
    assert registry.show("v2").status == "served" and registry.show("v1").status == "retired"
    # promoting what already serves is a no-op: no publish, no new generation
    assert registry.promote("v2", "re-run", publish=publish) == second and len(seen) == 2


def test_rollback_republishes_the_previous_version_before_moving_back(registry):
    for version in ["v1", "v2", "v3"]:
        _commit(registry, version)
        registry.promote(version, f"promote {version}", publish=_no_publish)
    calls = []

    def publish(version):
        calls.append((version, registry.serving().version))

    back = registry.rollback("bad model", publish=publish)
    assert calls == [("v2", "v3")]
    assert (back.version, back.previous, back.action, back.generation) == ("v2", "v3", "rollback", 4)
    assert registry.show("v3").status == "retired" and registry.show("v2").status == "served"
    assert registry.rollback(publish=publish).version == "v1"  # undo, then undo again
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(publish=publish)
    assert registry.serving().version == "v1"


def test_a_failing_publish_hook_leaves_the_pointer_unchanged(registry):
    for version in ["v1", "v2"]:
        _commit(registry, version)
    before = registry.promote("v1", "first", publish=_no_publish)

    def broken(version):
        raise ConnectionError("redis down")

    with pytest.raises(ConnectionError):
        registry.promote("v2", "nightly", publish=broken)
    assert registry.serving() == before and len(registry.history()) == 1
    assert registry.show("v2").status == "candidate"
    registry.promote("v2", "nightly", publish=_no_publish)
    with pytest.raises(ConnectionError):
        registry.rollback(publish=broken)
    assert registry.serving().version == "v2" and registry.serving().generation == 2


def test_a_refused_model_is_not_promoted_unless_forced_and_the_refusal_is_named(registry):
    _commit(registry, "v1", status="refused", status_reason="NaN in item factors")
    with pytest.raises(PromotionRefusedError, match="NaN in item factors"):
        registry.promote("v1", "nightly", publish=_no_publish)
    assert registry.serving() is None
    _commit(registry, "v2")
    registry.set_status("v2", "refused", "recall@10 5% below serving")
    with pytest.raises(PromotionRefusedError, match="recall@10 5% below serving"):
        registry.promote("v2", "nightly", publish=_no_publish)
    forced = registry.promote("v1", "operator knows best", publish=_no_publish, force=True)
    assert forced.version == "v1" and "forced" in forced.reason


def test_set_status_changes_metadata_only_and_guards_the_serving_version(registry):
    meta = _commit(registry, "v1")
    refused = registry.set_status("v1", "refused", "slice regression: cuisine=thai")
    assert refused.identity() == meta.identity()
    assert (refused.status, refused.status_reason) == ("refused", "slice regression: cuisine=thai")
    with pytest.raises(RegistryError, match="expected one of"):
        registry.set_status("v1", "great", "")
    registry.set_status("v1", "candidate", "re-reviewed")
    registry.promote("v1", "go", publish=_no_publish)
    with pytest.raises(RegistryError, match="is serving"):
        registry.set_status("v1", "retired", "no")


def test_history_is_append_only(registry):
    for version in ["v1", "v2"]:
        _commit(registry, version)
    registry.promote("v1", "a", publish=_no_publish)
    snapshot = registry.history_path.read_bytes()
    registry.promote("v2", "b", publish=_no_publish)
    registry.rollback("c", publish=_no_publish)
    grown = registry.history_path.read_bytes()
    assert grown.startswith(snapshot)
    assert [(p.generation, p.version, p.action) for p in registry.history()] == [
        (1, "v1", "promote"), (2, "v2", "promote"), (3, "v1", "rollback")]


def test_a_crash_after_the_pointer_moved_is_finished_on_the_next_open(registry):
    for version in ["v1", "v2"]:
        _commit(registry, version)
    registry.promote("v1", "a", publish=_no_publish)
    pointer = registry.promote("v2", "b", publish=_no_publish)
    # simulate a crash right after os.replace: history line and statuses not yet written
    lines = registry.history_path.read_bytes().splitlines(keepends=True)
    registry.history_path.write_bytes(lines[0] + b'{"generation": 2, "vers')  # and a torn line
    registry._write_status("v2", "candidate", "")
    registry._write_status("v1", "served", "a")
    _commit(registry, "v3")
    registry._write_status("v3", "served", "a move whose pointer write was lost")
    (registry.root / ".SERVING.tmp-0000").write_text("{")

    Registry(registry.root).open()

    assert [p.generation for p in registry.history()] == [1, 2]
    assert registry.history()[-1] == pointer
    assert [m.status for m in registry.list_versions()] == ["retired", "served", "retired"]
    assert not (registry.root / ".SERVING.tmp-0000").exists()


def test_concurrent_readers_never_see_a_torn_pointer(registry):
    for version in ["v1", "v2"]:
        _commit(registry, version)
    registry.promote("v1", "start", publish=_no_publish)
    stop = threading.Event()
    seen, errors = [], []

    def read():
        while not stop.is_set():
            try:
                pointer = json.loads(registry.pointer_path.read_bytes())
                assert pointer["version"] in ("v1", "v2")
                seen.append(pointer["generation"])
            except Exception as exc:  # noqa: BLE001 - any failure to parse is the bug under test
                errors.append(repr(exc))
            time.sleep(0)  # let the writer have the GIL back promptly

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            registry.promote("v2" if i % 2 == 0 else "v1", f"flip {i}", publish=_no_publish)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(set(seen)) > 20 and seen == sorted(seen)  # reads interleaved; never went backwards
    assert registry.serving().generation == 201 and len(registry.history()) == 201


def test_pointer_watcher_reports_each_move_once_and_again_until_loaded(registry):
    for version in ["v1", "v2"]:
        _commit(registry, version)
    watcher = PointerWatcher(registry.pointer_path)
    assert watcher.poll(None) is None  # nothing promoted yet
    registry.promote("v1", "a", publish=_no_publish)
    first = watcher.poll(None)
    assert first.version == "v1"
    assert watcher.poll(None).version == "v1"  # not loaded yet: offered again
    assert watcher.poll(first.generation) is None
    assert watcher.poll(first.generation) is None
    registry.promote("v2", "b", publish=_no_publish)
    assert watcher.poll(first.generation).version == "v2"


def test_writer_lock_is_exclusive_across_open_file_descriptions(tmp_path):
    with FileLock(tmp_path / "l"), pytest.raises(BlockingIOError):
        FileLock(tmp_path / "l", blocking=False).acquire()


def test_fingerprint_files_depends_on_bytes_and_relative_names_not_location(tmp_path):
    for root in ["a", "b"]:
        (tmp_path / root / "clean").mkdir(parents=True)
        (tmp_path / root / "clean" / "users.parquet").write_bytes(b"123")
        (tmp_path / root / "clean" / "items.parquet").write_bytes(b"456")
    fa = fingerprint_files([tmp_path / "a" / "clean"])
    assert fa == fingerprint_files([tmp_path / "b" / "clean"])
    assert len(fa) == 64
    (tmp_path / "b" / "clean" / "items.parquet").write_bytes(b"457")
    assert fa != fingerprint_files([tmp_path / "b" / "clean"])
    files = [tmp_path / "a" / "clean" / n for n in ["users.parquet", "items.parquet"]]
    assert fingerprint_files(files) == fingerprint_files(files[::-1])
    with pytest.raises(NotFoundError):
        fingerprint_files([tmp_path / "missing"])


def test_fingerprint_frame_is_deterministic_and_sensitive_to_content_not_chunking():
    df = pl.DataFrame({"user_id": [1, 2, None], "w": [0.5, 1.0, 2.0], "cuisine": ["thai", None, "pizza"],
                       "ts": [T0, T0, None], "emb": [[0.1, 0.2], [0.3, 0.4], None]})
    base = fingerprint_frame(df)
    assert base == fingerprint_frame(df.clone())
    assert base == fingerprint_frame(pl.concat([df.head(1), df.tail(2)], rechunk=False))
    assert base != fingerprint_frame(df.with_columns(pl.col("w") * 2))
    assert base != fingerprint_frame(df.reverse())
    assert base != fingerprint_frame(df.rename({"w": "weight"}))
    assert base != fingerprint_frame(df.with_columns(pl.col("user_id").cast(pl.Int32)))
    pdf = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=[10, 11])
    assert fingerprint_frame(pdf) == fingerprint_frame(pdf.reset_index(drop=True))


def test_version_id_is_deterministic_in_its_inputs():
    assert version_id(T0, "d" * 64, "cfg") == version_id(T0, "d" * 64, "cfg")
    assert version_id(T0, "d" * 64, "cfg").startswith("20261028T000000Z-")
    assert version_id(T0, "d" * 64, "cfg") != version_id(T0, "e" * 64, "cfg")


def test_models_cli_lists_shows_promotes_and_rolls_back(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import recsys.cli.models  # noqa: F401 - registers the sub-app
    import recsys.registry.publish as publish_module
    from recsys.cli import app

    published = []
    monkeypatch.setattr(publish_module, "publish_version", lambda config, v: published.append(v))
    registry = Registry(tmp_path / "registry")
    for version in ["v1", "v2"]:
        _commit(registry, version)
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path), "models"]

    result = runner.invoke(app, [*base, "promote", "v1"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "promote", "v2", "--reason", "nightly"])
    assert result.exit_code == 0 and "serving v2" in result.output
    result = runner.invoke(app, [*base, "list"])
    assert result.exit_code == 0 and "recall@10=0.25" in result.output and "serving v2" in result.output
    result = runner.invoke(app, [*base, "show", "v1"])
    assert json.loads(result.output)["status"] == "retired"
    result = runner.invoke(app, [*base, "rollback"])
    assert result.exit_code == 0 and "serving v1" in result.output
    assert published == ["v1", "v2", "v1"]
    result = runner.invoke(app, [*base, "show", "nope"])
    assert isinstance(result.exception, NotFoundError) and result.exit_code != 0


def test_the_nightly_run_id_ignores_sections_no_step_reads(tmp_path):
    from jobs.nightly import run_id_for
    from recsys.config import load_config

    base = load_config(environ={}, data_dir=tmp_path)
    assert run_id_for(base.with_overrides(serving={"epsilon": 0.3}, monitoring={"surprise_z_alert": 5.0})) \
        == run_id_for(base)
    assert run_id_for(base.with_overrides(training={"ranker": {"negative_rate": 0.5}})) != run_id_for(base)
