"""`recsys monitor skew` on a nightly-published tiny world (real Redis, real Feast): feature
samples built by the real serving stages agree with Feast's offline values; one feature computed
differently online is flagged, and only that one.

Time rule: online rows are the latest materialized (the nightly materializes up to
``offline_end``); the offline store's point-in-time value at ``ts`` is the latest snapshot at or
before ``ts``. Sampling at ``offline_end + 1 s`` makes the two the same snapshot (the margin
covers the microseconds retrieval moves tied timestamps earlier).
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.features.store import offline_end
from recsys.monitoring.samples import sample_frame
from recsys.serving.recommender import ModelRecommender
from recsys.serving.settings import ServingConfig
from recsys.serving.stages import BASKET, PRICE, PRICE_VS_BASKET, feature_rows, parse_menu, score_embeddings
from tests.integration.test_online_path import candidates_of, known_users

USER_STAT = "user_stats__menu_dctr_28d"


@pytest.fixture(scope="module")
def world(published):
    config, version = published  # the shared world: read only here
    recommender = ModelRecommender(config, ServingConfig(metrics_port=None), poll_seconds=0).load()
    assert recommender.bundle.menu.ranker is not None, "the nightly shipped no ranker: serving samples need one"
    yield config, version, recommender.bundle
    recommender.close()


def _requests(config, version, bundle) -> list[tuple[int, int, dict]]:
    """Six (user, restaurant, online row): three users with a basket mean, three without (so a
    changed price_vs_basket default shows), each at a restaurant with candidates."""
    cands = candidates_of(config, version)
    restaurants = sorted(cands, key=lambda r: -len(cands[r]))[:6]
    chosen: dict[bool, list[tuple[int, dict]]] = {True: [], False: []}
    for user in known_users(config, version):
        row = bundle.menu_reader.read({"user_id": user, "restaurant_id": restaurants[0]}, timeout=10)
        group = chosen[row[BASKET] is not None]
        if len(group) < 3:
            group.append((user, row))
        if all(len(g) == 3 for g in chosen.values()):
            break
    users = [u for g in chosen.values() for u, _ in g]
    assert len(users) == 6, chosen
    return [(u, r, bundle.menu_reader.read({"user_id": u, "restaurant_id": r}, timeout=10))
            for u, r in zip(users, restaurants)]


def _other_basket_default(rows: dict, row: dict) -> dict:
    """price_vs_basket as a serving mirror with another default (2.0, not 1.0) would compute it."""
    basket = row[BASKET]
    ratio = rows[PRICE] / basket if basket is not None and basket > 0 else np.full(len(rows[PRICE]), np.nan)
    return {**rows, PRICE_VS_BASKET: np.where(np.isnan(ratio), 2.0, ratio)}


def _scaled_user_stat(row: dict) -> dict:
    return {**row, USER_STAT: row[USER_STAT] * 1.1 if row[USER_STAT] is not None else None}


def _sample(world, directory, online=lambda row: row, rows_of=lambda rows, row: rows):
    """Feature samples of the real menu path (read -> parse -> FAISS scores -> ranker rows), written
    as a directory of Parquet files; ``online`` / ``rows_of`` inject a differently computed feature."""
    config, version, bundle = world
    ts = offline_end(config) + timedelta(seconds=1)
    directory.mkdir()
    for i, (user, restaurant, row) in enumerate(_requests(config, version, bundle)):
        row = online(row)
        inputs = parse_menu(row)
        scored, _ = score_embeddings(bundle.menu.index, inputs, keep_unknown=True)
        rows = rows_of(feature_rows(bundle.menu.items, inputs, scored, ts), row)
        sample_frame(request_id=f"req-{i}", ts=ts, model_version=version, user_id=user, restaurant_id=restaurant,
                     item_ids=scored.ids, rows=rows).write_parquet(directory / f"part-{i}.parquet")
    return directory


def _monitor(config, samples, tmp_path):
    from recsys.cli import _register, app

    _register()
    out, prom = tmp_path / "skew.json", tmp_path / "skew.prom"
    result = CliRunner().invoke(app, ["--data-dir", str(config.data_dir), "--online-store", config.online_store,
                                      "monitor", "skew", "--samples", str(samples), "--out", str(out),
                                      "--prometheus", str(prom)], env={"RECSYS_PROJECT": config.project})
    return result, json.loads(out.read_text()), prom.read_text()


def test_samples_of_the_serving_path_agree_with_the_offline_store(world, tmp_path):
    config = world[0]
    samples = _sample(world, tmp_path / "samples")
    result, report, prom = _monitor(config, samples, tmp_path)
    assert result.exit_code == 0, result.output
    sampled = set(pl.read_parquet(samples / "*.parquet")["feature"].unique())
    compared = {f["feature"] for f in report["features"]}
    assert compared == sampled - {"als_score"} and PRICE_VS_BASKET in compared and USER_STAT in compared
    assert set(report["skipped"]) == {"als_score"}
    assert [f["feature"] for f in report["features"] if f["mismatches"]] == []
    assert report["alerts"] == [] and "recsys_skew_ok 1.0" in prom


@pytest.mark.parametrize("injected, feature", [
    ({"online": _scaled_user_stat}, USER_STAT),
    ({"rows_of": _other_basket_default}, PRICE_VS_BASKET),
], ids=["user_stat_scaled", "price_vs_basket_other_default"])
def test_a_feature_computed_differently_online_is_flagged_by_name(world, tmp_path, injected, feature):
    config = world[0]
    samples = _sample(world, tmp_path / "samples", **injected)
    result, report, prom = _monitor(config, samples, tmp_path)
    assert result.exit_code == 1, result.output
    assert report["alerts"] == [feature]
    skewed = next(f for f in report["features"] if f["feature"] == feature)
    assert skewed["mismatch_share"] > 0.3 and skewed["examples"]
    example = skewed["examples"][0]
    assert example["online"] != example["offline"] and {"request_id", "user_id", "item_id", "ts"} <= set(example)
    assert feature in result.output and f'recsys_skew_alert{{feature="{feature}"}} 1.0' in prom
