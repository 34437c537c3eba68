"""Monitoring scenarios over 20 simulated worlds (issue 6): an injected skew is flagged and names the
feature, an injected NaN/inf embedding is flagged, a changed feature definition is notified and
named; the clean path raises nothing. The CI-sized versions are tests/integration/test_skew.py,
test_changes.py and test_monitor_drift.py (health); drift and seasonality are bench_drift.py's.

Per seed, a fresh tiny world: ``recsys simulate`` (size tiny, the seed's own world) and the nightly
(the integration tests' published-world training settings) on one Redis shared by the run, each
seed under its own Feast project. A version the gate refuses is promoted anyway (``force``): what
is measured is monitoring, not the gate (``gate_passed`` is kept per seed). Then:

1. Skew (``recsys monitor skew``). Feature samples of the real menu path (online read -> parse ->
   FAISS scores -> ranker rows), as test_skew.py builds them: ``--requests`` requests, half of
   users with a 28-day basket mean and half without, the users and restaurants drawn by the seed,
   sampled one second after the materialized snapshot (the time rule of test_skew.py). Checked by
   the CLI (CliRunner, in process) against Feast ``get_historical_features``:

   - clean: no alert expected;
   - ``user_stat_scaled``: ``user_stats__menu_dctr_28d`` multiplied online by a seed-drawn factor
     in [1.01, 1.5] (test_skew.py: 1.1);
   - ``price_vs_basket_default``: the on-demand ``price_vs_basket`` computed online with another
     default for users without a basket (seed-drawn in [0.5, 3], not 1.0; test_skew.py: 2.0);
   - rotation: every compared ranker input in turn computed online as ``v * s + (s - 1)`` (s
     seed-drawn in [1.01, 1.5]: every present value changes, zeros included). The offline side
     does not depend on the online values, so the rotation joins Feast's values once per seed and
     re-runs the comparison (:func:`recsys.monitoring.skew.compare`) per feature; on the first
     seed, three rotated features also go through the full check, which must agree.

   Rates over injections: detected (the feature alerts), named exactly (the alerts are that
   feature and no other), false alerts (another feature alerts); over clean samples: false alerts.
   A seed whose nightly shipped no menu ranker (it did not beat ALS-only) has no skew check:
   serving logs feature samples of the ranker's inputs only. The seed is listed as skipped, and
   worlds are drawn until ``--seeds`` of them have a skew check (at most twice as many).

2. Health (``recsys monitor health``; :func:`recsys.monitoring.health.check_version` on a copy of
   the version's four artifacts per injection): one seed-drawn user's (item's) embedding gets a
   NaN (an inf) at a seed-drawn dimension, or becomes 1e6 times longer (the norm check);
   also a NaN feed score, an inf candidate score and an emptied candidate list. Flagged means: one
   alert, of the expected check and artifact, naming the row's id. The clean version must raise
   none. Once per
   seed the CLI runs on the serving version and on a registered copy with a NaN user embedding
   (``--max-age-hours`` large: the simulated world's dates are months old, the age check is not the
   subject).

3. Changed definitions (``recsys monitor changes``, CLI): every edit of :data:`EDITS` (a field's
   dtype, a ttl, a removed or added field, an on-demand constant or transform, a feature service's
   features, tags, an entity's value type, a source), on a copy of feature_repo/, the seed drawing
   the target and the new value of each; expected: exactly the named objects, and a detail naming
   what changed. Controls that must not notify: an unchanged copy, an edited comment, an edited
   description.

Cost: seconds per check (the CLI's, in process), and the world's setup per seed.

Usage: ``python -m benchmarks.bench_monitor_scenarios [--seeds 20]``; writes
benchmarks/results/monitor_scenarios.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.common import RESULTS_DIR, peak_rss_mb, write_result
from recsys.config import PROJECT_ROOT, Config, load_config
from recsys.errors import RecsysError

# The integration tests' published world (tests/integration/conftest.py): one small ALS grid point,
# ranker windows that fit the tiny world's 14 days.
TRAINING = {
    "search": {"factors": [8], "regularization": [0.1], "alpha": [2.0], "iterations": [5], "trials": 1},
    "ranker": {"window_days": 3, "heldout_days": 3, "negative_rate": 1.0, "eval_requests": 2000},
}
USER_STAT = "user_stats__menu_dctr_28d"
SCALE = (1.01, 1.5)
REPO = PROJECT_ROOT / "feature_repo"


@dataclass(frozen=True)
class World:
    config: Config
    version: str
    gate_passed: bool
    seconds: float


def build_world(root: Path, seed: int, redis_url: str) -> World:
    """Simulate the seed's tiny world and run the nightly; serve its version (forced past a refusing gate)."""
    from rich.console import Console

    from jobs.nightly import run_nightly
    from recsys.registry import Registry
    from recsys.registry.publish import publish_version
    from recsys.simulation.run import simulate

    started = time.perf_counter()
    config = load_config(environ={}, data_dir=root / f"world_{seed}", seed=seed).with_overrides(
        sim={"size": "tiny"}, online_store=redis_url, project=f"bms_{seed}_{uuid.uuid4().hex[:6]}",
        training=TRAINING)
    simulate(config)
    summary = run_nightly(config, console=Console(file=io.StringIO(), width=200))
    version = summary["steps"]["register"]["version"]
    published = summary["steps"]["publish"]["published"]
    if not published:
        Registry.for_config(config).open().promote(version, "bench_monitor_scenarios: monitoring, not the gate",
                                                   publish=lambda v: publish_version(config, v), force=True)
    return World(config, version, published, time.perf_counter() - started)


def cli(args: list[str], env: dict[str, str] | None = None):
    from typer.testing import CliRunner

    from recsys.cli import _register, app

    _register()
    started = time.perf_counter()
    result = CliRunner().invoke(app, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result, time.perf_counter() - started


# ================================================================ 1. skew
def skew_requests(world: World, bundle, rng: np.random.Generator, n: int) -> list[tuple[int, int, dict]]:
    """``n`` (user, restaurant, online row): half of users with a basket mean, half without, at
    seed-drawn restaurants that have candidates."""
    from recsys.registry import Registry
    from recsys.registry.publish import read_version_outputs
    from recsys.serving.stages import BASKET

    frames = read_version_outputs(Registry.for_config(world.config).open(), world.version)
    cands = frames["restaurant_candidates"].filter(pl.col("item_ids").list.len() > 0)
    restaurants = [int(r) for r in rng.permutation(cands["restaurant_id"].to_numpy())[:n]]
    users = rng.permutation(frames["user_embedding"]["user_id"].to_numpy())
    chosen: dict[bool, list[tuple[int, dict]]] = {True: [], False: []}
    want = {True: n - n // 2, False: n // 2}
    for user in users:
        row = bundle.menu_reader.read({"user_id": int(user), "restaurant_id": restaurants[0]}, timeout=10)
        group = chosen[row[BASKET] is not None]
        if len(group) < want[row[BASKET] is not None]:
            group.append((int(user), row))
        if all(len(chosen[k]) == want[k] for k in chosen):
            break
    picked = [u for g in chosen.values() for u, _ in g]
    if len(picked) != n:
        raise RuntimeError(f"seed world has too few users with/without a basket: {[len(g) for g in chosen.values()]}")
    return [(u, r, bundle.menu_reader.read({"user_id": u, "restaurant_id": r}, timeout=10))
            for u, r in zip(picked, restaurants)]


def skew_sample(world: World, bundle, requests, ts, online: Callable = lambda row: row,
                rows_of: Callable = lambda rows, row: rows) -> pl.DataFrame:
    """The real menu path's feature rows of ``requests`` (test_skew.py's ``_sample``), one frame."""
    from recsys.monitoring.samples import sample_frame
    from recsys.serving.stages import feature_rows, parse_menu, score_embeddings

    parts = []
    for i, (user, restaurant, row) in enumerate(requests):
        row = online(row)
        inputs = parse_menu(row)
        scored, _ = score_embeddings(bundle.menu.index, inputs, keep_unknown=True)
        rows = rows_of(feature_rows(bundle.menu.items, inputs, scored, ts), row)
        parts.append(sample_frame(request_id=f"req-{i}", ts=ts, model_version=world.version, user_id=user,
                                  restaurant_id=restaurant, item_ids=scored.ids, rows=rows))
    return pl.concat(parts)


def skew_cli(world: World, sample: pl.DataFrame, directory: Path) -> tuple[dict, int, float]:
    directory.mkdir(parents=True)
    (directory / "samples").mkdir()
    sample.write_parquet(directory / "samples" / "part-0.parquet")
    out = directory / "skew.json"
    config = world.config
    result, seconds = cli(["--data-dir", str(config.data_dir), "--online-store", config.online_store, "monitor",
                           "skew", "--samples", str(directory / "samples"), "--out", str(out)],
                          env={"RECSYS_PROJECT": config.project})
    return json.loads(out.read_text()), result.exit_code, seconds


def rotated(frame: pl.DataFrame, feature: str, s: float) -> pl.DataFrame:
    """``feature``'s online values as ``v * s + (s - 1)`` (every present value changes, zeros too)."""
    return frame.with_columns(pl.when(pl.col("feature") == feature).then(pl.col("value") * s + (s - 1))
                              .otherwise(pl.col("value")).alias("value"))


def verdict(alerts: list[str], feature: str | None) -> dict:
    if feature is None:
        return {"alerts": alerts, "false_alert": bool(alerts)}
    return {"feature": feature, "alerts": alerts, "detected": feature in alerts, "named_exactly": alerts == [feature],
            "false_alert": any(a != feature for a in alerts)}


def skew_scenario(world: World, rng: np.random.Generator, tmp: Path, n_requests: int, check_cache: bool) -> dict:
    from recsys.features.store import offline_end, open_store
    from recsys.monitoring.skew import SkewThresholds, check_skew, compare, offline_values, retrieval_plan
    from recsys.serving.recommender import ModelRecommender
    from recsys.serving.settings import ServingConfig
    from recsys.serving.stages import BASKET, PRICE, PRICE_VS_BASKET

    factor, default, s = float(rng.uniform(*SCALE)), float(rng.uniform(0.5, 3.0)), float(rng.uniform(*SCALE))
    recommender = ModelRecommender(world.config, ServingConfig(metrics_port=None), poll_seconds=0).load()
    try:
        bundle = recommender.bundle
        if bundle.menu.ranker is None:  # serving then logs no feature samples: nothing to compare
            return {"skipped": "the nightly shipped no menu ranker (it did not beat ALS-only)"}
        requests = skew_requests(world, bundle, rng, n_requests)
        ts = offline_end(world.config) + timedelta(seconds=1)

        def scaled(row):
            return {**row, USER_STAT: row[USER_STAT] * factor if row[USER_STAT] is not None else None}

        def other_default(rows, row):
            basket = row[BASKET]
            ratio = rows[PRICE] / basket if basket is not None and basket > 0 else np.full(len(rows[PRICE]), np.nan)
            return {**rows, PRICE_VS_BASKET: np.where(np.isnan(ratio), default, ratio)}

        clean = skew_sample(world, bundle, requests, ts)
        injected = {"user_stat_scaled": (skew_sample(world, bundle, requests, ts, online=scaled), USER_STAT),
                    "price_vs_basket_default": (skew_sample(world, bundle, requests, ts, rows_of=other_default),
                                                PRICE_VS_BASKET)}
    finally:
        recommender.close()
    out: dict = {"requests": len(requests), "vectors": clean.select("request_id", "item_id").n_unique(),
                 "user_stat_factor": factor, "price_vs_basket_default": default, "rotation_scale": s,
                 "cli_seconds": []}
    report, code, seconds = skew_cli(world, clean, tmp / "clean")
    out["cli_seconds"].append(seconds)
    out["clean"] = {**verdict(report["alerts"], None), "exit_code": code, "compared": len(report["features"]),
                    "mismatched": [f["feature"] for f in report["features"] if f["mismatches"]]}
    out["injected"] = {}
    for name, (sample, feature) in injected.items():
        report, code, seconds = skew_cli(world, sample, tmp / name)
        out["cli_seconds"].append(seconds)
        skewed = next((f for f in report["features"] if f["feature"] == feature), {})
        out["injected"][name] = {**verdict(report["alerts"], feature), "exit_code": code,
                                 "mismatch_share": skewed.get("mismatch_share")}

    # Rotation: Feast's values joined once, the comparison re-run per rotated feature.
    thresholds = SkewThresholds()
    store = open_store(world.config)
    started = time.perf_counter()
    calls, skipped = retrieval_plan(store, clean["feature"].unique().to_list())
    joined = offline_values(store, clean.filter(~pl.col("feature").is_in(list(skipped))), calls)
    out["offline_join_seconds"] = time.perf_counter() - started
    features = sorted(joined["feature"].unique().to_list())
    present = {f: float(v) for f, v in joined.group_by("feature").agg(
        (pl.col("value").is_not_nan() & pl.col("value").is_not_null()).mean()).iter_rows()}
    started = time.perf_counter()
    out["rotation"] = [{**verdict([f.feature for f in compare(rotated(joined, feature, s), thresholds) if f.alert],
                                  feature), "present_share": present[feature]} for feature in features]
    out["rotation_compare_seconds"] = (time.perf_counter() - started) / len(features)
    if check_cache:  # the cached comparison against the full check on the rotated sample itself
        picks = [features[i] for i in rng.choice(len(features), size=3, replace=False)]
        full = {f: check_skew(store, rotated(clean, f, s), thresholds).alerts for f in picks}
        cached = {r["feature"]: r["alerts"] for r in out["rotation"]}
        out["rotation_cache_check"] = {f: full[f] == cached[f] for f in picks}
    return out


# ================================================================ 2. health
# injection -> (artifact, list column, what is put in, expected check)
HEALTH_INJECTIONS = {
    "user_embedding_nan": ("user_embedding", "embedding", float("nan"), "non_finite"),
    "item_embedding_nan": ("item_embedding", "embedding", float("nan"), "non_finite"),
    "user_embedding_inf": ("user_embedding", "embedding", float("inf"), "non_finite"),
    "item_embedding_neg_inf": ("item_embedding", "embedding", float("-inf"), "non_finite"),
    "feed_score_nan": ("user_top_restaurants", "scores", float("nan"), "non_finite"),
    "candidate_score_inf": ("restaurant_candidates", "scores", float("inf"), "non_finite"),
    "candidate_list_empty": ("restaurant_candidates", "item_ids", "empty", "empty_list"),
    "user_embedding_huge": ("user_embedding", "embedding", "huge", "norm"),
    "item_embedding_huge": ("item_embedding", "embedding", "huge", "norm"),
}


def corrupt(frame: pl.DataFrame, column: str, what, rng: np.random.Generator) -> tuple[pl.DataFrame, int]:
    """``frame`` with one seed-drawn row's list ``column`` changed (one element, or the whole list);
    the row's key is returned."""
    lengths = frame[column].list.len().to_numpy()
    eligible = lengths > 0
    if what == "huge":  # a zero row (ALS's for an entity without interactions) stays zero when scaled
        eligible &= frame[column].list.eval(pl.element() != 0).list.any().to_numpy()
    row = int(rng.choice(np.flatnonzero(eligible)))
    values = frame[column].to_list()
    if what == "empty":
        values[row] = []
        if column == "item_ids" and "scores" in frame.columns:  # keep the aligned scores aligned
            scores = frame["scores"].to_list()
            scores[row] = []
            frame = frame.with_columns(pl.Series("scores", scores, dtype=frame.schema["scores"]))
    elif what == "huge":
        values[row] = [v * 1e6 for v in values[row]]
    else:
        values[row][int(rng.integers(len(values[row])))] = what
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column])), row


def health_scenario(world: World, rng: np.random.Generator, tmp: Path) -> dict:
    from recsys.monitoring.health import check_version
    from recsys.registry import Registry
    from recsys.registry.publish import ARTIFACTS, KEYS, read_version_outputs, write_version_outputs

    registry = Registry.for_config(world.config).open()
    frames = read_version_outputs(registry, world.version)

    def check(changed: dict[str, pl.DataFrame], name: str) -> tuple[list, float]:
        directory = tmp / f"health_{name}"
        for view, frame in {**frames, **changed}.items():
            path = directory / ARTIFACTS[view]
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(path)
        started = time.perf_counter()
        alerts = check_version(directory)
        return alerts, time.perf_counter() - started

    alerts, seconds = check({}, "clean")
    out: dict = {"clean": {"alerts": [a.message for a in alerts], "false_alert": bool(alerts)}, "injected": {},
                 "check_seconds": [seconds]}
    for name, (view, column, what, expected) in HEALTH_INJECTIONS.items():
        frame, row = corrupt(frames[view], column, what, rng)
        key = int(frame[KEYS[view]][row])
        alerts, seconds = check({view: frame}, name)
        out["check_seconds"].append(seconds)
        hit = [a for a in alerts if a.source == ARTIFACTS[view] and a.check == expected and key in a.examples]
        out["injected"][name] = {"key": key, "alerts": [a.message for a in alerts], "flagged": bool(alerts),
                                 "named_exactly": len(alerts) == 1 and len(hit) == 1}

    # The CLI: the serving version, then a registered copy with a NaN user embedding.
    bad = f"{world.version}-nan"
    frame, row = corrupt(frames["user_embedding"], "embedding", float("nan"), rng)
    meta, src = registry.show(world.version), registry.version_dir(world.version)
    with registry.stage(bad) as area:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            rel = path.relative_to(src).as_posix()
            if rel not in ("metadata.json", *ARTIFACTS.values()):
                shutil.copyfile(path, area.artifact(rel))
        write_version_outputs(area, {view: f.with_columns(model_version=pl.lit(bad)) for view, f in
                                     {**frames, "user_embedding": frame}.items()})
        area.commit(trained_until=meta.trained_until, data_fingerprint=meta.data_fingerprint,
                    feature_definitions_hash=meta.feature_definitions_hash, params={"corrupted": "one NaN"})
    out["cli"] = {}
    for name, version in (("clean", world.version), ("user_embedding_nan", bad)):
        path = tmp / f"health_{name}.json"
        result, seconds = cli(["--data-dir", str(world.config.data_dir), "monitor", "health", "--version", version,
                               "--max-age-hours", "1e6", "--out", str(path)])
        report = json.loads(path.read_text())
        out["cli"][name] = {"exit_code": result.exit_code, "checks": [(a["check"], a["source"], a["examples"])
                                                                      for a in report["alerts"]], "seconds": seconds}
    key = int(frame["user_id"][row])
    out["cli"]["user_embedding_nan"]["named"] = out["cli"]["user_embedding_nan"]["checks"] == [
        ("non_finite", ARTIFACTS["user_embedding"], [key])]
    return out


# ================================================================ 3. changed definitions
@dataclass(frozen=True)
class Edit:
    """A replacement of ``old`` by ``new`` in ``module`` of feature_repo/, the objects expected named
    (``kind:name``) and ``detail``, a text the details of each of them must contain (a field's
    name, the ttl, the constant's old and new values...)."""

    name: str
    module: str
    old: str
    new: str
    expected: frozenset[str]
    detail: str


STATS = ("user_stats", "restaurant_stats", "item_stats", "user_cuisine_affinity")
PROFILES = ("user_profile", "restaurant_profile", "item_profile")
MODELS = ("user_embedding", "item_embedding", "user_top_restaurants", "restaurant_candidates")
DTYPES = ("Float32", "Float64", "Int32", "Int64")


def _fv(*names: str) -> frozenset[str]:
    return frozenset(f"feature_view:{n}" for n in names)


def edits(rng: np.random.Generator) -> list[Edit]:
    """One edit per kind, the seed drawing its target and new value."""
    def pick(options):
        return options[int(rng.integers(len(options)))]

    # (text before the dtype, dtype, module, the objects it is in)
    field, dtype, module, owners = pick([
        ('Field(name="price", dtype=', "Float32", "views.py", _fv("item_profile")),
        ('Field(name="home_cell", dtype=', "Int32", "views.py", _fv("user_profile")),
        ('Field(name="rating", dtype=', "Float32", "views.py", _fv("restaurant_profile")),
        ('Field(name="price_level", dtype=', "Int32", "views.py", _fv("restaurant_profile")),
        ('Field(name="restaurant_id", dtype=', "Int64", "views.py", _fv("item_profile")),
        ('Field(name=f"{surface}_clicks_{w}d", dtype=', "Int64", "views.py",
         _fv("user_stats", "restaurant_stats", "item_stats")),
        ('Field(name="hour_of_day", dtype=', "Int64", "on_demand.py", frozenset({"on_demand_feature_view:request_time"})),
    ])
    # on_demand.py imports Float64 and Int64 only (a dtype it does not import would not load)
    new_dtype = pick([d for d in (DTYPES if module == "views.py" else ("Float64", "Int64")) if d != dtype])
    ttl_name, ttl_old, unit, views = pick([("STATS_TTL", 2, "days", STATS), ("PROFILE_TTL", 3650, "days", PROFILES),
                                           ("MODEL_TTL", 7, "days", MODELS), ("REALTIME_TTL", 2, "hours",
                                                                              ("restaurant_realtime",))])
    ttl_new = pick([k for k in range(1, 15) if k != ttl_old])
    removed, removed_from = pick([
        ('        Field(name="platform", dtype=String),\n', _fv("user_profile") | {"feature_service:ranker_v1"}),
        ('        Field(name="restaurant_id", dtype=Int64),\n', _fv("item_profile")),
        (('        Field(name="clicks_28d", dtype=Int64, description="Clicks counted in shares (restaurants of a '
          'known cuisine)"),\n'), _fv("user_cuisine_affinity")),
        ('        Field(name="clicks_1h", dtype=Array(Int64), description="aligned with item_ids"),\n',
         _fv("restaurant_realtime")),
    ])
    after, added_to = pick([
        ('        Field(name="home_cell", dtype=Int32),\n', _fv("user_profile") | {"feature_service:ranker_v1"}),
        ('        Field(name="rating", dtype=Float32),\n', _fv("restaurant_profile") | {"feature_service:ranker_v1"}),
        ('        Field(name="category", dtype=String),\n', _fv("item_profile")),
    ])
    ratio = pick([0.0, 0.5, 1.5, 2.0, 3.0])
    transform_old, transform_new, odfv = pick([
        ('out["hour_of_day"] = ts.dt.hour.astype("int64")',
         f'out["hour_of_day"] = ((ts.dt.hour + {int(rng.integers(1, 24))}) % 24).astype("int64")', "request_time"),
        ("ratio = price / basket.where(basket > 0)", "ratio = price / basket.where(basket > 1)", "price_vs_basket"),
    ])
    service_old, service_new, service = pick([
        ('item_profile[["category", "price"]]', 'item_profile[["price"]]', "ranker_v1"),
        ("        item_stats,\n", "", "ranker_v1"),
        ('restaurant_stats[["feed_dctr_28d"]]', 'restaurant_stats[["feed_ctr_28d"]]', "feed_ranker_v1"),
        ('user_profile[["home_cell"]]', 'user_profile[["home_cell", "platform"]]', "feed_ranker_v1"),
    ])
    tag_module, tag_old, tagged = pick([
        ("services.py", 'tags={"owner": "ranking", "surface": "menu"}', "feature_service:ranker_v1"),
        ("services.py", 'tags={"owner": "ranking", "surface": "feed"}', "feature_service:feed_ranker_v1"),
        ("views.py", 'tags={"owner": "online_updater", "surface": "menu", "kind": "realtime"}',
         "feature_view:restaurant_realtime"),
        ("on_demand.py", 'tags={"owner": "features", "surface": "menu", "kind": "request_time"}',
         "on_demand_feature_view:price_vs_basket"),
    ])
    entity = pick(["user", "restaurant", "item"])
    source = pick([*STATS, *PROFILES, *MODELS, "restaurant_realtime"])
    return [
        Edit("field_dtype", module, f"{field}{dtype}", f"{field}{new_dtype}", owners, f"dtype {dtype} -> {new_dtype}"),
        Edit("ttl", "views.py", f"{ttl_name} = timedelta({unit}={ttl_old})", f"{ttl_name} = timedelta({unit}={ttl_new})",
             _fv(*views), "ttl: "),
        Edit("field_removed", "views.py", removed, "", removed_from, removed.split('"')[1]),
        Edit("field_added", "views.py", after, after + '        Field(name="bench_extra", dtype=Float32),\n', added_to,
             "bench_extra"),
        Edit("on_demand_constant", "on_demand.py", "DEFAULT_PRICE_RATIO = 1.0", f"DEFAULT_PRICE_RATIO = {ratio}",
             frozenset({"on_demand_feature_view:price_vs_basket"}), f"DEFAULT_PRICE_RATIO: 1.0 -> {ratio}"),
        Edit("on_demand_transform", "on_demand.py", transform_old, transform_new,
             frozenset({f"on_demand_feature_view:{odfv}"}), "transform"),
        Edit("service_features", "services.py", service_old, service_new,
             frozenset({f"feature_service:{service}"}), "features."),
        Edit("tags", tag_module, tag_old, tag_old.replace('"owner": ', '"owner": "bench", "was": '),
             frozenset({tagged}), "tags."),
        Edit("entity_value_type", "entities.py", f'join_keys=["{entity}_id"],\n    value_type=ValueType.INT64',
             f'join_keys=["{entity}_id"],\n    value_type=ValueType.INT32', frozenset({f"entity:{entity}"}),
             "value_type: INT64 -> INT32"),
        Edit("source", "sources.py", f'{source}_source = _parquet("{source}")' if source != "restaurant_realtime"
             else 'restaurant_realtime_batch_source = _parquet("restaurant_realtime")',
             f'{source}_source = _parquet("{source}_v2")' if source != "restaurant_realtime"
             else 'restaurant_realtime_batch_source = _parquet("restaurant_realtime_v2")', _fv(source), "source"),
    ]


CONTROLS = [
    Edit("unchanged", "", "", "", frozenset(), ""),
    Edit("comment", "views.py", "# Daily snapshots", "# Daily snapshots (reworded)", frozenset(), ""),
    Edit("description", "entities.py", 'description="A marketplace customer."',
         'description="A customer of the marketplace."', frozenset(), ""),
]


def edited_repo(directory: Path, edit: Edit) -> Path:
    repo = directory / "feature_repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    if edit.module:
        path = repo / edit.module
        text = path.read_text()
        if text.count(edit.old) != 1:
            raise RuntimeError(f"edit {edit.name}: {edit.old!r} is not once in {edit.module}")
        path.write_text(text.replace(edit.old, edit.new))
    return repo


def changes_scenario(world: World, rng: np.random.Generator, tmp: Path) -> dict:
    out: dict = {"edits": [], "controls": []}
    for group, todo in (("edits", edits(rng)), ("controls", CONTROLS)):
        for edit in todo:
            directory = tmp / f"changes_{edit.name}"
            repo = edited_repo(directory, edit)
            path = directory / "changes.json"
            result, seconds = cli(["--data-dir", str(world.config.data_dir), "monitor", "changes", "--feature-repo",
                                   str(repo), "--out", str(path)])
            report = json.loads(path.read_text())
            named = {f"{c['kind']}:{c['name']}" for c in report["changes"]}
            row = {"edit": edit.name, "old": edit.old, "new": edit.new, "exit_code": result.exit_code,
                   "notified": result.exit_code == 1 and bool(report["changes"]),
                   "changes": [c["text"] for c in report["changes"]], "seconds": seconds}
            if group == "edits":
                row |= {"expected": sorted(edit.expected), "named_exactly": named == edit.expected,
                        "detail_named": all(any(edit.detail in d for d in c["details"]) for c in report["changes"]
                                            if f"{c['kind']}:{c['name']}" in edit.expected)}
            out[group].append(row)
    return out


# ================================================================ the run
def one_seed(root: Path, seed: int, redis_url: str, n_requests: int, first: bool) -> dict:
    world = build_world(root, seed, redis_url)
    out: dict = {"seed": seed, "version": world.version, "gate_passed": world.gate_passed,
                 "world_seconds": world.seconds}
    for k, (name, run) in enumerate((
            ("skew", lambda rng: skew_scenario(world, rng, root / "skew", n_requests, first)),
            ("health", lambda rng: health_scenario(world, rng, root)),
            ("changes", lambda rng: changes_scenario(world, rng, root)))):
        started = time.perf_counter()
        out[name] = run(np.random.default_rng([seed, k]))
        out[f"{name}_seconds"] = time.perf_counter() - started
    return out


def rate(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def summary(all_runs: list[dict]) -> dict:
    runs = [r for r in all_runs if "world_error" not in r]
    skewed = [r for r in runs if "skipped" not in r["skew"]]
    skew_ci = [i | {"name": n} for r in skewed for n, i in r["skew"]["injected"].items()]
    rotation = [x for r in skewed for x in r["skew"]["rotation"]]
    applicable = [x for x in rotation if x["present_share"] > 0.01]
    missed = sorted({x["feature"] for x in applicable if not x["detected"]})
    health = [x for r in runs for x in r["health"]["injected"].values()]
    edits_ = [x for r in runs for x in r["changes"]["edits"]]
    controls = [x for r in runs for x in r["changes"]["controls"]]

    def seconds(key, among=runs) -> float | None:
        values = [s for r in among for s in key(r)]
        return float(np.mean(values)) if values else None

    return {
        "seeds": len(all_runs), "worlds": len(runs), "gate_passed": sum(r["gate_passed"] for r in runs),
        "world_errors": {r["seed"]: r["world_error"] for r in all_runs if "world_error" in r},
        "skew": {
            "seeds": len(skewed), "skipped": {r["seed"]: r["skew"]["skipped"] for r in runs if r not in skewed},
            "clean_false_alert_rate": rate(r["skew"]["clean"]["false_alert"] for r in skewed),
            "injected": {name: {"detection_rate": rate(x["detected"] for x in skew_ci if x["name"] == name),
                                "named_exactly_rate": rate(x["named_exactly"] for x in skew_ci if x["name"] == name),
                                "false_alert_rate": rate(x["false_alert"] for x in skew_ci if x["name"] == name)}
                         for name in ("user_stat_scaled", "price_vs_basket_default")},
            "rotation": {"injections": len(rotation), "features": len({x["feature"] for x in rotation}),
                         "applicable": len(applicable),
                         "detection_rate": rate(x["detected"] for x in applicable),
                         "named_exactly_rate": rate(x["named_exactly"] for x in applicable),
                         "false_alert_rate": rate(x["false_alert"] for x in rotation),
                         "missed_features": missed,
                         "not_applicable": sorted({x["feature"] for x in rotation if x["present_share"] <= 0.01})},
            "rotation_cache_check_agrees": rate(v for r in skewed for v in r["skew"].get("rotation_cache_check",
                                                                                         {}).values()),
            "cli_seconds_per_check": seconds(lambda r: r["skew"]["cli_seconds"], skewed),
            "offline_join_seconds": seconds(lambda r: [r["skew"]["offline_join_seconds"]], skewed),
            "rotation_compare_seconds": seconds(lambda r: [r["skew"]["rotation_compare_seconds"]], skewed),
        },
        "health": {
            "clean_false_alert_rate": rate(r["health"]["clean"]["false_alert"] for r in runs),
            "detection_rate": rate(x["flagged"] for x in health),
            "named_exactly_rate": rate(x["named_exactly"] for x in health),
            "per_injection": {n: rate(r["health"]["injected"][n]["named_exactly"] for r in runs)
                              for n in HEALTH_INJECTIONS},
            "cli_clean_exit_0": rate(r["health"]["cli"]["clean"]["exit_code"] == 0 for r in runs),
            "cli_nan_flagged_and_named": rate(r["health"]["cli"]["user_embedding_nan"]["exit_code"] == 1
                                              and r["health"]["cli"]["user_embedding_nan"]["named"] for r in runs),
            "seconds_per_check": seconds(lambda r: r["health"]["check_seconds"]),
            "cli_seconds_per_check": seconds(lambda r: [c["seconds"] for c in r["health"]["cli"].values()]),
        },
        "changes": {
            "detection_rate": rate(x["notified"] for x in edits_),
            "named_exactly_rate": rate(x["named_exactly"] for x in edits_),
            "detail_named_rate": rate(x["detail_named"] for x in edits_),
            "per_edit": {e: rate(x["named_exactly"] and x["detail_named"] for x in edits_ if x["edit"] == e)
                         for e in dict.fromkeys(x["edit"] for x in edits_)},
            "control_false_alert_rate": rate(x["notified"] for x in controls),
            "distinct_edits": len({(x["edit"], x["new"]) for x in edits_}),
            "cli_seconds_per_check": seconds(lambda r: [x["seconds"] for x in r["changes"]["edits"]
                                                        + r["changes"]["controls"]]),
        },
        "world_seconds": seconds(lambda r: [r["world_seconds"]]),
    }


def print_seed(r: dict) -> None:
    if "world_error" in r:
        print(f"seed {r['seed']:2d}: no world: {r['world_error']}", flush=True)
        return
    sk, he, ch = r["skew"], r["health"], r["changes"]
    if "skipped" in sk:
        skew = f"skipped: {sk['skipped']}"
    else:
        rot = sk["rotation"]
        skew = (f"clean alerts {sk['clean']['alerts']}, "
                + ", ".join(f"{n} -> {i['alerts']}" for n, i in sk["injected"].items())
                + f", rotation {sum(x['named_exactly'] for x in rot)}/{len(rot)} named exactly"
                + (f" (missed {[x['feature'] for x in rot if not x['detected']]})"
                   if not all(x["detected"] for x in rot) else ""))
    print(f"seed {r['seed']:2d} (world {r['world_seconds']:.0f}s, gate {'passed' if r['gate_passed'] else 'refused'})"
          f" | skew: {skew}"
          f" | health: clean {len(he['clean']['alerts'])} alerts, "
          f"{sum(x['named_exactly'] for x in he['injected'].values())}/{len(he['injected'])} named"
          f" | changes: {sum(x['named_exactly'] and x['detail_named'] for x in ch['edits'])}/{len(ch['edits'])} "
          f"named, controls notified {sum(x['notified'] for x in ch['controls'])}", flush=True)
    for x in ch["edits"]:
        if not (x["named_exactly"] and x["detail_named"]):
            print(f"    changes {x['edit']}: expected {x['expected']}, got {x['changes']}", flush=True)


def print_summary(s: dict) -> None:
    sk, he, ch = s["skew"], s["health"], s["changes"]
    rot = sk["rotation"]
    print(f"\n{s['seeds']} seeds, {s['worlds']} worlds built (errors: {s['world_errors']}; gate passed in "
          f"{s['gate_passed']}; world setup {s['world_seconds']:.1f} s/seed)")
    print(f"skew ({sk['seeds']} seeds with a menu ranker; skipped {sk['skipped']}): clean samples false alerts "
          f"{pct(sk['clean_false_alert_rate'])}; "
          + "; ".join(f"{n}: detected {pct(i['detection_rate'])}, named exactly {pct(i['named_exactly_rate'])}, "
                      f"false alerts {pct(i['false_alert_rate'])}" for n, i in sk["injected"].items()))
    print(f"      rotation over {rot['features']} features ({rot['applicable']} injections with values): detected "
          f"{pct(rot['detection_rate'])}, named exactly {pct(rot['named_exactly_rate'])}, false alerts "
          f"{pct(rot['false_alert_rate'])}; missed {rot['missed_features']}; without values in the sample "
          f"{rot['not_applicable']}")
    if sk["seeds"]:
        print(f"      cost: {sk['cli_seconds_per_check']:.2f} s per `monitor skew` (CLI, in process); offline join "
              f"{sk['offline_join_seconds']:.2f} s, then {sk['rotation_compare_seconds'] * 1000:.1f} ms per compare "
              f"(agrees with the full check: {pct(sk['rotation_cache_check_agrees'])})")
    print(f"health: clean false alerts {pct(he['clean_false_alert_rate'])}; injections flagged "
          f"{pct(he['detection_rate'])}, named exactly {pct(he['named_exactly_rate'])} "
          f"({', '.join(f'{n} {pct(v)}' for n, v in he['per_injection'].items())}); CLI clean exit 0 "
          f"{pct(he['cli_clean_exit_0'])}, NaN copy flagged and named {pct(he['cli_nan_flagged_and_named'])}; cost "
          f"{he['seconds_per_check'] * 1000:.0f} ms per check, {he['cli_seconds_per_check']:.2f} s per CLI run")
    print(f"changes: notified {pct(ch['detection_rate'])}, named exactly {pct(ch['named_exactly_rate'])}, detail "
          f"named {pct(ch['detail_named_rate'])} ({ch['distinct_edits']} distinct edits); controls notified "
          f"{pct(ch['control_false_alert_rate'])}; {ch['cli_seconds_per_check']:.2f} s per `monitor changes` (CLI)")
    print("      per edit kind (named exactly and detail named): "
          + ", ".join(f"{e} {pct(v)}" for e, v in ch["per_edit"].items()))


def main() -> None:
    from recsys.testing import LocalRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=6, help="Sampled menu requests per skew check.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    started = time.perf_counter()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_monitor_") as tmp:
        (Path(tmp) / "redis").mkdir()
        with LocalRedis(Path(tmp) / "redis") as redis:
            # Worlds are drawn until --seeds of them have a skew check (a seed whose nightly shipped
            # no menu ranker has none), at most twice as many: every scenario then has --seeds worlds.
            for seed in range(args.first_seed, args.first_seed + 2 * args.seeds):
                if sum("skew" in r and "skipped" not in r["skew"] for r in runs) >= args.seeds:
                    break
                root = Path(tmp) / f"seed_{seed}"
                checked = any("rotation_cache_check" in r.get("skew", {}) for r in runs)
                try:
                    runs.append(one_seed(root, seed, redis.url, args.requests, first=not checked))
                except RecsysError as exc:  # the seed's world could not be built: a finding, kept
                    runs.append({"seed": seed, "world_error": f"{type(exc).__name__}: {exc}"})
                shutil.rmtree(root, ignore_errors=True)
                print_seed(runs[-1])
                write(args, runs, started)  # after every seed: a long run keeps what it measured
    print_summary(summary(runs))
    print(f"wrote {RESULTS_DIR / 'monitor_scenarios.json'} ({time.perf_counter() - started:.0f} s)")


def write(args, runs: list[dict], started: float) -> None:
    from recsys.monitoring.skew import SkewThresholds

    write_result("monitor_scenarios", {
        "settings": {"seeds": args.seeds, "first_seed": args.first_seed, "world": {"size": "tiny"},
                     "training": TRAINING, "skew_requests": args.requests, "skew_thresholds":
                     SkewThresholds().__dict__, "user_stat": USER_STAT, "scale_range": SCALE,
                     "health_injections": list(HEALTH_INJECTIONS),
                     "change_controls": [c.name for c in CONTROLS]},
        "summary": summary(runs), "runs": runs,
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
