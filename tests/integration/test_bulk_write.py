"""Bulk online writes against real Feast stores: read-back is exact, layout is Feast's own,
and only strictly newer rows replace stored ones (Feast's Redis semantics)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import Config
from recsys.features import store as fstore
from recsys.features.bulk_write import encode_column, write_online

UTC = timezone.utc
T0 = datetime(2026, 10, 10, tzinfo=UTC)
DIM = 16




def _store(tmp: Path, online_store: str):
    config = Config(data_dir=tmp, online_store=online_store, project=f"b_{uuid.uuid4().hex[:10]}")
    fs = fstore.open_store(config)
    fstore.apply(config, store=fs)
    return config, fs


def embeddings(ids: np.ndarray, seed: int, ts: datetime, version: str = "m1") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "user_id": ids.astype(np.int64),
        "embedding": pl.Series(list(rng.standard_normal((len(ids), DIM)).astype(np.float32)), dtype=pl.List(pl.Float32)),
        "model_version": [version] * len(ids),
        "event_timestamp": [ts] * len(ids),
    })


def top_lists(ids: np.ndarray, seed: int, ts: datetime) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, len(ids))  # includes empty lists
    return pl.DataFrame({
        "user_id": ids.astype(np.int64),
        "restaurant_ids": [rng.integers(0, 2**40, n).tolist() for n in lengths],
        "scores": pl.Series([rng.random(n).astype(np.float32).tolist() for n in lengths], dtype=pl.List(pl.Float32)),
        "model_version": rng.choice(["m1", "m2"], len(ids)).tolist(),
        "event_timestamp": [ts] * len(ids),
    }, schema_overrides={"restaurant_ids": pl.List(pl.Int64)})


def read_back(fs, view: str, features: list[str], key: str, ids) -> dict[str, list]:
    return fs.get_online_features(
        features=[f"{view}:{f}" for f in features], entity_rows=[{key: int(i)} for i in ids]
    ).to_dict()


def assert_embeddings_equal(got: dict, frame: pl.DataFrame) -> None:
    for row, emb, version in zip(frame.iter_rows(named=True), got["embedding"], got["model_version"]):
        assert np.array_equal(np.asarray(emb, dtype=np.float32), np.asarray(row["embedding"], dtype=np.float32))
        assert version == row["model_version"]


def assert_top_lists_equal(got: dict, frame: pl.DataFrame) -> None:
    for i, row in enumerate(frame.iter_rows(named=True)):
        assert list(got["restaurant_ids"][i] or []) == row["restaurant_ids"]
        assert np.array_equal(np.asarray(got["scores"][i] or [], dtype=np.float32), np.asarray(row["scores"], dtype=np.float32))
        assert got["model_version"][i] == row["model_version"]


# ---------------------------------------------------------------- encoding

def test_encoded_values_are_byte_identical_to_feasts_conversion():
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    cases = [
        (pl.Series(list(np.random.default_rng(0).random((50, 8)).astype(np.float32)), dtype=pl.List(pl.Float32)), ValueType.FLOAT_LIST),
        (pl.Series([[1, 2**40], [], [-3]] * 5, dtype=pl.List(pl.Int64)), ValueType.INT64_LIST),
        (pl.Series(["m1"] * 40 + ["m2"]), ValueType.STRING),
        (pl.Series([1.5, None, 2.25] * 4), ValueType.DOUBLE),
        (pl.Series(np.arange(30), dtype=pl.Int64), ValueType.INT64),
        (pl.Series([[0.5, 1.0], None], dtype=pl.List(pl.Float32)), ValueType.FLOAT_LIST),
    ]
    for series, value_type in cases:
        expected = [
            v.SerializeToString()
            for v in python_values_to_proto_values(series.to_arrow().to_numpy(zero_copy_only=False), value_type)
        ]
        assert encode_column(series, value_type) == expected, value_type


# ---------------------------------------------------------------- Redis

@pytest.mark.redis
def test_redis_bulk_write_reads_back_exactly(tmp_path, redis_url):
    config, fs = _store(tmp_path, redis_url)
    ids = np.arange(500) * 7 + 3
    emb = embeddings(ids, seed=1, ts=T0)
    assert write_online(fs, "user_embedding", emb, batch_size=128) == 500
    assert_embeddings_equal(read_back(fs, "user_embedding", ["embedding", "model_version"], "user_id", ids), emb)

    tops = top_lists(ids, seed=2, ts=T0)
    assert write_online(fs, "user_top_restaurants", tops) == 500
    got = read_back(fs, "user_top_restaurants", ["restaurant_ids", "scores", "model_version"], "user_id", ids)
    assert_top_lists_equal(got, tops)


@pytest.mark.redis
def test_redis_layout_is_byte_identical_to_feasts_own_write(tmp_path, redis_url):
    import redis

    config, fs = _store(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    ids = np.arange(20)
    frame = top_lists(ids, seed=3, ts=T0 + timedelta(microseconds=123))
    feast_frame = frame.with_columns(pl.col("event_timestamp").alias("created_timestamp"))
    fs.write_to_online_store("user_top_restaurants", df=feast_frame.to_pandas())
    keys = sorted(k for k in client.scan_iter(count=1000) if k.endswith(config.project.encode()))
    assert len(keys) == 20
    feast_layout = {k: client.hgetall(k) for k in keys}
    client.delete(*keys)
    assert write_online(fs, "user_top_restaurants", frame) == 20
    assert {k: client.hgetall(k) for k in keys} == feast_layout


@pytest.mark.redis
def test_redis_bulk_write_skips_rows_not_newer_than_stored(tmp_path, redis_url):
    config, fs = _store(tmp_path, redis_url)
    ids = np.arange(10)
    first = embeddings(ids, seed=1, ts=T0, version="m1")
    write_online(fs, "user_embedding", first)
    same_time = embeddings(ids, seed=2, ts=T0, version="m2")
    older = embeddings(ids, seed=3, ts=T0 - timedelta(days=1), version="m0")
    assert write_online(fs, "user_embedding", same_time) == 0
    assert write_online(fs, "user_embedding", older) == 0
    assert_embeddings_equal(read_back(fs, "user_embedding", ["embedding", "model_version"], "user_id", ids), first)
    # Within one frame the latest row of an entity wins.
    newer = embeddings(ids[:5], seed=4, ts=T0 + timedelta(hours=1), version="m3")
    assert write_online(fs, "user_embedding", pl.concat([newer, older.head(5)])) == 5
    assert read_back(fs, "user_embedding", ["model_version"], "user_id", ids)["model_version"] == ["m3"] * 5 + ["m1"] * 5
    # Overwrite on demand (rollback without a newer timestamp).
    assert write_online(fs, "user_embedding", older, only_newer=False) == 10
    assert_embeddings_equal(read_back(fs, "user_embedding", ["embedding", "model_version"], "user_id", ids), older)


@pytest.mark.redis
def test_redis_bulk_write_int_arrays_of_realtime_view(tmp_path, redis_url):
    config, fs = _store(tmp_path, redis_url)
    frame = pl.DataFrame({
        "restaurant_id": [1, 2],
        "item_ids": [[10, 11, 12], [20]],
        "available": [[1, 0, 1], [0]],
        "clicks_1h": [[5, 0, 2**33], [0]],
        "event_timestamp": [T0, T0],
    })
    assert write_online(fs, "restaurant_realtime", frame) == 2
    got = read_back(fs, "restaurant_realtime", ["item_ids", "available", "clicks_1h"], "restaurant_id", [1, 2])
    assert got["clicks_1h"] == [[5, 0, 2**33], [0]] and got["available"] == [[1, 0, 1], [0]]


# ---------------------------------------------------------------- SQLite

def test_sqlite_bulk_write_reads_back_exactly_and_skips_not_newer(tmp_path):
    config, fs = _store(tmp_path, "sqlite")
    ids = np.arange(60)
    emb = embeddings(ids, seed=5, ts=T0)
    assert write_online(fs, "user_embedding", emb, batch_size=25) == 60
    assert_embeddings_equal(read_back(fs, "user_embedding", ["embedding", "model_version"], "user_id", ids), emb)
    tops = top_lists(ids, seed=6, ts=T0)
    assert write_online(fs, "user_top_restaurants", tops) == 60
    assert_top_lists_equal(
        read_back(fs, "user_top_restaurants", ["restaurant_ids", "scores", "model_version"], "user_id", ids), tops
    )
    assert write_online(fs, "user_embedding", embeddings(ids, seed=7, ts=T0, version="x")) == 0
    assert set(read_back(fs, "user_embedding", ["model_version"], "user_id", ids)["model_version"]) == {"m1"}
