"""The Feast repo against a real Feast store (SQLite and Redis): apply, PII refusal, and
training/serving skew: get_historical_features at t == get_online_features after materialize(t).
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from recsys.config import Config
from recsys.errors import ForbiddenAttributeError
from recsys.features import stats, store as fstore

UTC = timezone.utc
D0 = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 8


# ---------------------------------------------------------------- a tiny world

def write_clean_world(clean: Path, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_rest, n_items = 25, 5, 20
    clean.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({
        "user_id": np.arange(n_users, dtype=np.int64),
        "home_cell": pl.Series(rng.integers(0, 36, n_users), dtype=pl.Int32),
        "signup_ts": [D0 - timedelta(days=int(d)) for d in rng.integers(1, 90, n_users)],
        "platform": rng.choice(["ios", "android", "web"], n_users).tolist(),
    }).write_parquet(clean / "users.parquet")
    pl.DataFrame({
        "restaurant_id": np.arange(n_rest, dtype=np.int64),
        "cell": pl.Series(rng.integers(0, 36, n_rest), dtype=pl.Int32),
        "cuisine": rng.choice(["thai", "pizza", "sushi"], n_rest).tolist(),
        "price_level": pl.Series(rng.integers(1, 5, n_rest), dtype=pl.Int8),
        "rating": pl.Series(rng.uniform(1, 5, n_rest), dtype=pl.Float32),
        "open_hour": pl.Series([8] * n_rest, dtype=pl.Int8),
        "close_hour": pl.Series([23] * n_rest, dtype=pl.Int8),
        "created_ts": [D0 - timedelta(days=200)] * n_rest,
    }).write_parquet(clean / "restaurants.parquet")
    item_rest = rng.integers(0, n_rest, n_items)
    pl.DataFrame({
        "item_id": np.arange(n_items, dtype=np.int64) + 1000,
        "restaurant_id": item_rest.astype(np.int64),
        "category": rng.choice(["main", "drink", "dessert"], n_items).tolist(),
        "price": pl.Series(rng.uniform(2, 30, n_items), dtype=pl.Float32),
    }).write_parquet(clean / "items.parquet")
    n = 1500
    menu = rng.random(n) < 0.5
    item = rng.integers(0, n_items, n)
    clicked = rng.random(n) < 0.3
    pl.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "ts": [D0 + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, DAYS * 86400, n))],
        "user_id": rng.integers(0, n_users - 3, n).astype(np.int64),  # 3 users never seen
        "surface": np.where(menu, "menu", "feed").tolist(),
        "restaurant_id": np.where(menu, item_rest[item], rng.integers(0, n_rest, n)).astype(np.int64),
        "item_id": pl.Series(np.where(menu, item + 1000, -1)).replace(-1, None),
        "position": pl.Series(np.zeros(n), dtype=pl.Int16),
        "propensity": np.ones(n),
        "policy": ["random"] * n,
        "clicked": clicked,
        "ordered": clicked & (rng.random(n) < 0.4),
    }).write_parquet(clean / "impressions.parquet")


def make_config(tmp: Path, online_store: str = "sqlite") -> Config:
    # A unique project per config: tests sharing one Redis never see each other's keys.
    return Config(data_dir=tmp, online_store=online_store, project=f"t_{uuid.uuid4().hex[:10]}")


# ---------------------------------------------------------------- apply

def test_redis_url_is_translated_to_feast_connection_string():
    assert fstore.redis_connection_string("redis://h:6380/2") == "h:6380,db=2"
    assert fstore.redis_connection_string("redis://:s3cret@h:6379") == "h:6379,password=s3cret"
    assert fstore.redis_connection_string("h:1,ssl=true") == "h:1,ssl=true"


def test_apply_registers_every_view_and_service(tmp_path):
    config = make_config(tmp_path)
    summary = fstore.apply(config)
    fs = fstore.open_store(config)
    views = {v.name for v in fs.list_feature_views()}
    assert {"user_stats", "restaurant_stats", "item_stats", "user_profile", "restaurant_profile", "item_profile",
            "user_embedding", "item_embedding", "user_top_restaurants", "restaurant_candidates",
            "restaurant_realtime"} <= views
    assert {v.name for v in fs.list_on_demand_feature_views()} == {"request_time", "price_vs_basket"}
    assert fs.get_feature_service("ranker_v1")
    for view in fs.list_feature_views():
        assert view.ttl and view.ttl > timedelta(0), view.name
        assert {"owner", "surface"} <= set(view.tags), view.name
    assert "ranker_v1" in summary.applied
    # Idempotent: applying again deletes nothing.
    assert fstore.apply(config).deleted == ()


def test_apply_refuses_a_view_with_a_forbidden_attribute_and_names_it(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(Config().feature_repo, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (repo / "bad.py").write_text(
        "from datetime import timedelta\n"
        "from feast import FeatureView, Field\n"
        "from feast.types import Int64\n"
        "from entities import user\n"
        "from sources import user_profile_source\n"
        "user_demographics = FeatureView(name='user_demographics', entities=[user], ttl=timedelta(days=1),\n"
        "    schema=[Field(name='user_age', dtype=Int64)], source=user_profile_source,\n"
        "    tags={'owner': 'x', 'surface': 'feed'})\n"
    )
    config = make_config(tmp_path / "data").model_copy(update={"feature_repo": repo})
    with pytest.raises(ForbiddenAttributeError, match="user_demographics.*user_age|user_age.*user_demographics"):
        fstore.apply(config)
    assert not (tmp_path / "data" / "registry.db").exists(), "nothing may be registered"


# ---------------------------------------------------------------- training / serving skew

FLOAT32_FEATURES = {"restaurant_profile__rating", "item_profile__price"}


def _same(a, b, name: str) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)) or a is pd.NA:
        return b is None or (isinstance(b, float) and np.isnan(b))
    if name in FLOAT32_FEATURES:
        return np.float32(a) == np.float32(b)
    if isinstance(a, (float, np.floating)):
        return b is not None and float(a) == pytest.approx(float(b), rel=1e-12, abs=1e-12)
    return a == b


def _world(tmp: Path, online_store: str) -> tuple[Config, object]:
    config = make_config(tmp, online_store)
    write_clean_world(config.clean_dir)
    stats.build_features(config)
    fs = fstore.open_store(config)
    fstore.apply(config, store=fs)
    return config, fs


def _assert_no_skew(config: Config, fs, t: datetime) -> None:
    rng = np.random.default_rng(1)
    users = rng.choice(25, 10, replace=False)  # includes never-seen users 22..24 sometimes
    rows = pd.DataFrame({
        "user_id": users.astype("int64"),
        "restaurant_id": rng.integers(0, 5, len(users)).astype("int64"),
        "item_id": (rng.integers(0, 20, len(users)) + 1000).astype("int64"),
    })
    rows["request_ts"] = pd.Timestamp(t) + pd.Timedelta(minutes=37)
    rows["event_timestamp"] = pd.Timestamp(t)
    service = fs.get_feature_service("ranker_v1")
    hist = fs.get_historical_features(entity_df=rows, features=service, full_feature_names=True).to_df()
    fstore.materialize(config, end=t, store=fs)
    online = fs.get_online_features(
        features=service,
        entity_rows=rows.drop(columns="event_timestamp").to_dict("records"),
        full_feature_names=True,
    ).to_dict()
    hist = hist.sort_values(["user_id", "restaurant_id", "item_id"]).reset_index(drop=True)
    order = np.lexsort((online["item_id"], online["restaurant_id"], online["user_id"]))
    names = [c for c in hist.columns if "__" in c]
    assert len(names) > 60
    assert any(v is not None for v in online["user_stats__feed_ctr_7d"])
    mismatches = [
        (name, i, hist[name][i], online[name][j])
        for name in names
        for i, j in enumerate(order)
        if not _same(hist[name][i], online[name][j], name)
    ]
    assert not mismatches, mismatches[:10]


def test_online_features_equal_historical_at_t_on_sqlite(tmp_path):
    config, fs = _world(tmp_path, "sqlite")
    _assert_no_skew(config, fs, D0 + timedelta(days=5))


@pytest.mark.redis
def test_online_features_equal_historical_at_t_on_redis(tmp_path, redis_url):
    config, fs = _world(tmp_path, redis_url)
    _assert_no_skew(config, fs, D0 + timedelta(days=5, hours=13))


def _assert_affinity_no_skew(config: Config, fs, t: datetime) -> None:
    users = np.arange(25, dtype="int64")  # 22..24 never seen: null shares on both paths
    refs = ["user_cuisine_affinity:shares", "user_cuisine_affinity:clicks_28d"]
    rows = pd.DataFrame({"user_id": users, "event_timestamp": pd.Timestamp(t)})
    hist = fs.get_historical_features(entity_df=rows, features=refs, full_feature_names=True).to_df()
    hist = hist.sort_values("user_id").reset_index(drop=True)
    fstore.materialize(config, end=t, store=fs, views=("user_cuisine_affinity",))
    online = fs.get_online_features(features=refs, entity_rows=[{"user_id": int(u)} for u in users],
                                    full_feature_names=True).to_dict()
    seen = 0
    for i, u in enumerate(hist["user_id"]):
        j = online["user_id"].index(u)
        h, o = hist["user_cuisine_affinity__shares"][i], online["user_cuisine_affinity__shares"][j]
        if h is None or (isinstance(h, float) and np.isnan(h)):
            assert o is None, u
            continue
        seen += 1
        assert len(h) == 12 and np.float32(np.sum(h)) == pytest.approx(1.0, rel=1e-5)
        assert np.array_equal(np.asarray(h, np.float32), np.asarray(o, np.float32)), u
        assert hist["user_cuisine_affinity__clicks_28d"][i] == online["user_cuisine_affinity__clicks_28d"][j]
    assert seen >= 15


def test_cuisine_affinity_online_equals_historical_at_t_on_sqlite(tmp_path):
    config, fs = _world(tmp_path, "sqlite")
    _assert_affinity_no_skew(config, fs, D0 + timedelta(days=5))


@pytest.mark.redis
def test_cuisine_affinity_online_equals_historical_at_t_on_redis(tmp_path, redis_url):
    config, fs = _world(tmp_path, redis_url)
    _assert_affinity_no_skew(config, fs, D0 + timedelta(days=5, hours=13))
