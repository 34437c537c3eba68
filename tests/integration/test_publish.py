"""Publishing a model version, online (Redis and SQLite through Feast) and to the offline audit
copy, and the rollback contract: after publishing A then B, republishing A brings A's rows back."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import Config
from recsys.features import store as fstore
from recsys.precompute import CellClicks, FeedScorer, PrecomputeInputs, Vectors, precompute
from recsys.registry import Registry, RegistryError
from recsys.registry.publish import ARTIFACTS, publish_version, write_version_outputs

UTC = timezone.utc
RUN = datetime(2026, 10, 15, tzinfo=UTC)
T1 = datetime(2030, 1, 1, tzinfo=UTC)  # publish times later than any row other tests wrote


def _inputs(world: Config, models, distance_weight: float) -> PrecomputeInputs:
    raw = world.raw_dir
    users = pl.read_parquet(raw / "users.parquet", columns=["user_id", "home_cell"])
    restaurants = pl.read_parquet(raw / "restaurants.parquet", columns=["restaurant_id", "cell", "created_ts"])
    items = pl.read_parquet(raw / "items.parquet", columns=["item_id", "restaurant_id"])
    feed, menu = models["feed"], models["menu"]
    item_vectors = Vectors.from_model(menu, "entities")
    rest = Vectors.from_model(feed, "entities")
    return PrecomputeInputs(
        users=users, restaurants=restaurants, items=items,
        feed_scorer=FeedScorer(Vectors.from_model(feed, "users"), rest,
                               restaurant_bias=np.linalg.norm(rest.vectors, axis=1), distance_weight=distance_weight),
        item_ids=item_vectors.ids, item_score=np.linalg.norm(item_vectors.vectors, axis=1),
        user_embeddings=Vectors.from_model(menu, "users"), item_embeddings=item_vectors,
        cell_clicks=CellClicks.from_log(pl.scan_parquet(raw / "impressions.parquet"), users))


@pytest.fixture(scope="module")
def versions(tiny_world, tiny_models):
    """Two versions' precomputed frames: A (no distance penalty) and B (a strong one)."""
    out = {}
    for version, weight in (("A-20261015", 0.0), ("B-20261016", 2.0)):
        out[version] = precompute(_inputs(tiny_world, tiny_models, weight), tiny_world, version, RUN).frames()
    assert not out["A-20261015"]["user_top_restaurants"]["restaurant_ids"].equals(
        out["B-20261016"]["user_top_restaurants"]["restaurant_ids"])
    return out


def _setup(tmp: Path, online_store: str, tiny_world: Config, versions) -> tuple[Config, object, Registry]:
    config = tiny_world.model_copy(update={"data_dir": tmp, "online_store": online_store,
                                           "project": f"p_{uuid.uuid4().hex[:10]}"})
    fs = fstore.open_store(config)
    fstore.apply(config, store=fs)
    registry = Registry.for_config(config).open()
    for version, frames in versions.items():
        with registry.stage(version) as area:
            write_version_outputs(area, frames)
            area.commit(trained_until=RUN, data_fingerprint="test", feature_definitions_hash="test")
    return config, fs, registry


SAMPLE = 60


def _assert_online(fs, frames: dict[str, pl.DataFrame], version: str) -> None:
    top = frames["user_top_restaurants"].head(SAMPLE)
    got = fs.get_online_features(
        features=["user_top_restaurants:restaurant_ids", "user_top_restaurants:scores",
                  "user_top_restaurants:model_version", "user_embedding:embedding", "user_embedding:model_version"],
        entity_rows=[{"user_id": int(u)} for u in top["user_id"]], full_feature_names=True).to_dict()
    emb = frames["user_embedding"].join(top.select("user_id"), on="user_id", how="right")
    assert got["user_top_restaurants__model_version"] == [version] * top.height
    assert all(v == version for v, e in zip(got["user_embedding__model_version"], emb["embedding"]) if e is not None)
    for i, row in enumerate(top.iter_rows(named=True)):
        assert list(got["user_top_restaurants__restaurant_ids"][i] or []) == row["restaurant_ids"]
        assert np.array_equal(np.asarray(got["user_top_restaurants__scores"][i] or [], np.float32),
                              np.asarray(row["scores"], np.float32))
    for i, vec in enumerate(emb["embedding"]):
        if vec is not None:
            assert np.array_equal(np.asarray(got["user_embedding__embedding"][i], np.float32), np.asarray(vec, np.float32))
    cand = frames["restaurant_candidates"].head(SAMPLE)
    got = fs.get_online_features(
        features=["restaurant_candidates:item_ids", "restaurant_candidates:scores", "restaurant_candidates:model_version"],
        entity_rows=[{"restaurant_id": int(r)} for r in cand["restaurant_id"]]).to_dict()
    assert got["model_version"] == [version] * cand.height
    assert [list(x) for x in got["item_ids"]] == cand["item_ids"].to_list()
    items = frames["item_embedding"].head(SAMPLE)
    got = fs.get_online_features(features=["item_embedding:embedding", "item_embedding:model_version"],
                                 entity_rows=[{"item_id": int(i)} for i in items["item_id"]]).to_dict()
    assert got["model_version"] == [version] * items.height
    assert np.array_equal(np.asarray(got["embedding"], np.float32), np.stack(items["embedding"].to_list()))


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_publish_then_rollback_restores_the_previous_versions_rows(backend, tmp_path, tiny_world, versions, redis_url):
    config, fs, _ = _setup(tmp_path, redis_url if backend == "redis" else "sqlite", tiny_world, versions)
    a, b = "A-20261015", "B-20261016"
    report = publish_version(config, a, now=T1, store=fs)
    assert report.rows["user_top_restaurants"] == versions[a]["user_top_restaurants"].height
    _assert_online(fs, versions[a], a)
    publish_version(config, b, now=T1 + timedelta(hours=1), store=fs)
    _assert_online(fs, versions[b], b)
    publish_version(config, a, now=T1 + timedelta(hours=2), store=fs)  # rollback: A again, newer
    _assert_online(fs, versions[a], a)
    # the audit copy: one immutable file per publish at the view's FileSource path
    audit = config.data_dir / "offline" / "user_top_restaurants.parquet"
    assert audit.is_dir() and len(list(audit.glob("*.parquet"))) == 3 and not list(audit.glob(".*"))
    rows = pl.read_parquet(audit / "*.parquet")
    assert rows.group_by("model_version").len().sort("model_version")["len"].to_list() == [
        2 * versions[a]["user_top_restaurants"].height, versions[b]["user_top_restaurants"].height]
    assert set(rows["event_timestamp"].unique().to_list()) == {T1, T1 + timedelta(hours=1), T1 + timedelta(hours=2)}


def test_registry_promote_and_rollback_move_online_rows_with_the_pointer(tmp_path, tiny_world, versions, redis_url):
    config, fs, registry = _setup(tmp_path, redis_url, tiny_world, versions)
    a, b = "A-20261015", "B-20261016"

    def hook(version: str) -> None:  # the wall clock: newer at each call
        publish_version(config, version, store=fs)

    registry.promote(a, "nightly", publish=hook)
    registry.promote(b, "nightly", publish=hook)
    _assert_online(fs, versions[b], b)
    pointer = registry.rollback("bad model", publish=hook)
    assert pointer.version == a
    _assert_online(fs, versions[a], a)


def test_publishing_twice_is_harmless_and_a_stale_publish_time_is_refused(tmp_path, tiny_world, versions, redis_url):
    config, fs, _ = _setup(tmp_path, redis_url, tiny_world, versions)
    a, b = "A-20261015", "B-20261016"
    publish_version(config, a, now=T1, store=fs)
    publish_version(config, a, now=T1 + timedelta(minutes=1), store=fs)
    _assert_online(fs, versions[a], a)
    with pytest.raises(RegistryError, match="not written online"):
        publish_version(config, b, now=T1, store=fs)  # not newer than the stored rows


def test_the_audit_copy_answers_point_in_time_queries_through_feast(tmp_path, tiny_world, versions):
    config, fs, _ = _setup(tmp_path, "sqlite", tiny_world, versions)
    a, b = "A-20261015", "B-20261016"
    publish_version(config, a, now=T1, store=fs)
    publish_version(config, b, now=T1 + timedelta(hours=1), store=fs)
    user = int(versions[a]["user_top_restaurants"]["user_id"][0])
    entity_df = pl.DataFrame({"user_id": [user, user],
                              "event_timestamp": [T1 + timedelta(minutes=30), T1 + timedelta(hours=2)]}).to_pandas()
    got = fs.get_historical_features(entity_df=entity_df,
                                     features=["user_top_restaurants:model_version"]).to_df()
    assert got.sort_values("event_timestamp")["model_version"].tolist() == [a, b]


def test_a_version_without_precomputed_outputs_cannot_be_published(tmp_path, tiny_world):
    config = tiny_world.model_copy(update={"data_dir": tmp_path})
    registry = Registry.for_config(config).open()
    with registry.stage("bare") as area:
        area.write_json("params.json", {})
        area.commit(trained_until=RUN, data_fingerprint="x", feature_definitions_hash="y")
    from recsys.errors import NotFoundError

    with pytest.raises(NotFoundError, match=ARTIFACTS["item_embedding"]):
        publish_version(config, "bare", now=T1)
