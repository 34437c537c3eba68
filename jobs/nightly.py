"""`recsys nightly`: validate -> features -> apply -> materialize -> train -> feed_ranker ->
ranker -> monitoring -> gate -> precompute -> register -> publish. Each step is timed and resumable
(jobs/runner.py); the run id names the raw data, the configuration and the code it ran with, so
the same run started again resumes, and anything changed starts a new run.

Steps hand over through files in the run directory (``artifacts/``). The model version is derived
from the data's end time, the clean data's fingerprint, the training configuration, the seed and
the code version, so a re-run names (and idempotently re-commits) the same version. A model the
gate refuses is registered with its report and status ``refused``, never served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from jobs.runner import RunContext, Step, run_steps
from recsys.config import Config

RAW_TABLES = ("users", "restaurants", "items", "impressions")


# Config sections no nightly step reads: changing them must not restart a finished run.
NOT_NIGHTLY_INPUTS = {"serving", "monitoring"}


def run_id_for(config: Config) -> str:
    """A short id of the run's inputs: the raw tables (names, sizes, modification times), the
    configuration (but the serving and monitoring sections) and the code version."""
    from recsys.registry import code_version

    inputs = config.model_dump(mode="json", exclude=NOT_NIGHTLY_INPUTS)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    digest.update(code_version().encode())
    for table in RAW_TABLES:
        path = config.raw_dir / f"{table}.parquet"
        stat = path.stat() if path.exists() else None
        digest.update(f"{table}:{stat.st_size if stat else -1}:{stat.st_mtime_ns if stat else -1};".encode())
    return digest.hexdigest()[:12]


def step_validate(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.contracts.validate import validate_dataset

    report = validate_dataset(config)
    return {"tables": {t.table: {"rows": t.rows, "bad_rows": t.bad_rows} for t in report.tables},
            "bad_rows": sum(t.bad_rows for t in report.tables)}


def step_features(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.stats import build_features

    paths = build_features(config)
    return {"tables": len(paths), "paths": {k: str(v) for k, v in paths.items()}}


def step_apply(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.store import apply

    summary = apply(config)
    return {"applied": len(summary.applied), "deleted": len(summary.deleted)}


def step_materialize(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.features.store import materialize, offline_end

    end = offline_end(config)
    windows = materialize(config, end)
    return {"end": end.isoformat(), "views": len(windows)}


SURFACES = ("feed", "menu")


def _artifacts(ctx: RunContext) -> Path:
    path = ctx.run_dir / "artifacts"
    path.mkdir(exist_ok=True)
    return path


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str, sort_keys=True) + "\n")
    tmp.replace(path)


def step_train(config: Config, ctx: RunContext) -> dict[str, Any]:
    import polars as pl

    from recsys.training.interactions import scan_impressions
    from recsys.training.train import train_surface

    out = _artifacts(ctx)
    impressions = scan_impressions(config.clean_dir)
    tables = {t: pl.read_parquet(config.clean_dir / f"{t}.parquet") for t in ("users", "restaurants", "items")}
    summary, metrics, popularity, trials = {}, {}, {}, {}
    for surface in SURFACES:
        result = train_surface(config, impressions, surface, tables["users"], tables["restaurants"], tables["items"])
        result.model.save(out / f"{surface}_als.npz")
        summary[surface] = result.summary()
        metrics[surface], popularity[surface] = result.metrics, result.popularity
        trials[surface] = result.search.trials
    trained_until = max(datetime.fromisoformat(s["end"]) for s in summary.values())
    start = impressions.select(pl.col("ts").min()).collect().item()
    _write_json(out / "search.json", trials)
    _write_json(out / "train.json", {"surfaces": summary, "metrics": metrics, "popularity": popularity,
                                     "trained_until": trained_until.isoformat(), "start": start.isoformat()})
    return {s: {"recall": round(v["recall"], 4), "popularity": round(v["popularity_recall"], 4)}
            for s, v in summary.items()} | {"trained_until": trained_until.isoformat()}


def _ship(path: Path, result) -> dict[str, Any]:
    """Save a ranker that earned shipping; remove one an earlier attempt of this step saved."""
    if result.ships:
        result.ranker.save(path)
    elif path.exists():
        path.unlink()
    return {"ships": result.ships, "reason": result.reason}


def step_ranker(config: Config, ctx: RunContext) -> dict[str, Any]:
    """The menu ranker over ALS scores and Feast features; it ships only if it beats ALS-only."""
    from recsys.features.store import open_store
    from recsys.training.params import ALSParams
    from recsys.training.ranker_fit import train_ranker

    out = _artifacts(ctx)
    train = json.loads((out / "train.json").read_text())
    settings = config.training.ranker
    end = datetime.fromisoformat(train["surfaces"]["menu"]["end"])
    t1, t2 = _ranker_windows(config, datetime.fromisoformat(train["start"]), end)
    result = train_ranker(config, open_store(config), config.clean_dir,
                          ALSParams(**train["surfaces"]["menu"]["params"]), config.seed, t1, t2, end,
                          truth=_truth(config), settings=settings, weights=config.training.weights)
    _write_json(out / "ranker_report.json", {"ships": result.ships, "reason": result.reason,
                                             "metrics": result.metrics, "timings": result.timings})
    _write_json(out / "feature_report.json", result.feature_report)
    return _ship(out / "ranker.json", result)


def step_monitoring(config: Config, ctx: RunContext) -> dict[str, Any]:
    """What monitoring compares serving with, saved as artifacts of the version: the reference
    profile of the menu ranker's training rows and of the model's scores on them, and the manifest
    of the feature definitions and upstream schemas the model was trained with.

    The training rows are rebuilt with the ranker's own public functions (same windows, ALS
    parameters and seed; every impression, as the profile describes the logged traffic).
    """
    from recsys.features.store import open_store
    from recsys.monitoring.changes import definitions_manifest, save_manifest
    from recsys.monitoring.profile import save_profile
    from recsys.monitoring.reference import reference_profile
    from recsys.ranking.ranker import LinearRanker
    from recsys.registry.publish import DEFINITIONS_MANIFEST, REFERENCE_PROFILE
    from recsys.training.interactions import scan_impressions
    from recsys.training.params import ALSParams
    from recsys.training.ranker_data import build_training_set, fit_als

    out = _artifacts(ctx)
    train = json.loads((out / "train.json").read_text())
    start, end = datetime.fromisoformat(train["start"]), datetime.fromisoformat(train["surfaces"]["menu"]["end"])
    t1, t2 = _ranker_windows(config, start, end)
    log = scan_impressions(config.clean_dir)
    als = fit_als(log, ALSParams(**train["surfaces"]["menu"]["params"]), config.seed, until=t1,
                  weights=config.training.weights, num_threads=config.training.num_threads, since=start)
    rows = build_training_set(open_store(config), log, als, t1, t2)
    ranker = LinearRanker.load(out / "ranker.json") if (out / "ranker.json").exists() else None
    profile = reference_profile(rows.frame, ranker, (t1, t2), log_start=start, seed=config.seed)
    save_profile(profile, out / REFERENCE_PROFILE)
    manifest = definitions_manifest(config)
    save_manifest(manifest, out / DEFINITIONS_MANIFEST)
    return {"profiled": len(profile.features), "rows": rows.n, "scores": profile.meta["scores"],
            "definitions": len(manifest["objects"])}


def _ranker_windows(config: Config, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """(t1, t2): the ranker trains on [t1, t2), is judged on [t2, end), and learns from ALS scores
    of a model trained before t1. Each window takes its configured days, at most a quarter of the
    data's span, so a short history still leaves half of it to the ALS model."""
    from datetime import timedelta

    settings, quarter = config.training.ranker, (end - start) / 4
    t2 = end - min(timedelta(days=settings.heldout_days), quarter)
    return t2 - min(timedelta(days=settings.window_days), quarter), t2


def _truth(config: Config):
    """The simulator's ground truth when the data is simulated (adds true-CTR checks), else None."""
    from recsys.simulation.run import load_truth, world_path

    return load_truth(config) if world_path(config).exists() else None


def step_feed_ranker(config: Config, ctx: RunContext) -> dict[str, Any]:
    """The feed blend (ALS, cuisine affinity, debiased restaurant CTR, rating, price, distance);
    it ships only if it beats ALS-only on held-out explored requests."""
    from recsys.features.store import open_store
    from recsys.training.feed_ranker import train_feed_ranker
    from recsys.training.interactions import scan_impressions
    from recsys.training.params import ALSParams

    out = _artifacts(ctx)
    train = json.loads((out / "train.json").read_text())
    end = datetime.fromisoformat(train["surfaces"]["feed"]["end"])
    t1, t2 = _ranker_windows(config, datetime.fromisoformat(train["start"]), end)
    result = train_feed_ranker(config, open_store(config), scan_impressions(config.clean_dir),
                               ALSParams(**train["surfaces"]["feed"]["params"]), config.seed, t1, t2, end,
                               truth=_truth(config))
    _write_json(out / "feed_ranker_report.json", {"ships": result.ships, "reason": result.reason,
                                                  "metrics": result.metrics})
    return _ship(out / "feed_ranker.json", result)


def _feed_scorer(config: Config, out: Path, feed_model, trained_until: datetime):
    """The learned feed blend when it shipped, else ALS alone."""
    import polars as pl

    from recsys.precompute.inputs import FeedScorer, Vectors
    from recsys.training.feed_ranker import FeedRanker, latest

    if not (out / "feed_ranker.json").exists():
        return FeedScorer(Vectors.from_model(feed_model, "users"), Vectors.from_model(feed_model, "entities"))
    ranker = FeedRanker.load(out / "feed_ranker.json")
    shares = latest(config.offline_dir / "user_cuisine_affinity.parquet", "user_id", trained_until, ["shares"])
    stats = latest(config.offline_dir / "restaurant_stats.parquet", "restaurant_id", trained_until,
                   ["feed_dctr_28d"]).rename({"feed_dctr_28d": "dctr"})
    profile = pl.read_parquet(config.clean_dir / "restaurants.parquet",
                              columns=["restaurant_id", "cuisine", "rating", "price_level"])
    return ranker.scorer(feed_model, shares, profile.join(stats, on="restaurant_id", how="left"))


def _serving_record(config: Config) -> dict[str, Any] | None:
    from recsys.registry import Registry

    registry = Registry.for_config(config).open()
    pointer = registry.serving()
    if pointer is None:
        return None
    meta = registry.show(pointer.version)
    return {"version": meta.version, "trained_until": meta.trained_until, "metrics": meta.metrics.get("gate", {})}


def step_gate(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.training.als import ALSModel
    from recsys.training.gate import run_gate

    out = _artifacts(ctx)
    train = json.loads((out / "train.json").read_text())
    factors = {}
    for surface in SURFACES:
        model = ALSModel.load(out / f"{surface}_als.npz")
        factors[f"{surface}.user_factors"] = model.user_factors
        factors[f"{surface}.entity_factors"] = model.item_factors
    serving = _serving_record(config)
    report = run_gate(train["metrics"], train["popularity"], factors,
                      datetime.fromisoformat(train["trained_until"]), config.gate, serving)
    _write_json(out / "gate.json", report.to_dict() | {"serving": serving and serving["version"]})
    return {"passed": report.passed, "summary": report.summary(), "against": serving and serving["version"]}


class _OutputDir:
    """The run's artifact directory, shaped like a registry staging area for the writers."""

    def __init__(self, root: Path, version: str):
        self.root, self.version = root, version

    def artifact(self, relative: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def step_precompute(config: Config, ctx: RunContext) -> dict[str, Any]:
    """Batch predictions of the serving models: each user's restaurants (feed), each restaurant's
    candidate items (menu), the embeddings serving reads, and the FAISS item index."""
    import numpy as np
    import polars as pl

    from recsys.precompute.inputs import CellClicks, Vectors
    from recsys.precompute.run import PrecomputeInputs, precompute
    from recsys.ranking.index import ItemIndex
    from recsys.registry.publish import write_version_outputs
    from recsys.training.als import ALSModel
    from recsys.training.interactions import scan_impressions

    out = _artifacts(ctx)
    version = model_version(config, ctx)
    trained_until = datetime.fromisoformat(json.loads((out / "train.json").read_text())["trained_until"])
    feed, menu = ALSModel.load(out / "feed_als.npz"), ALSModel.load(out / "menu_als.npz")
    users = pl.read_parquet(config.clean_dir / "users.parquet", columns=["user_id", "home_cell"])
    restaurants = pl.read_parquet(config.clean_dir / "restaurants.parquet", columns=["restaurant_id", "cell", "created_ts"])
    items = pl.read_parquet(config.clean_dir / "items.parquet", columns=["item_id", "restaurant_id"])
    impressions = scan_impressions(config.clean_dir).filter(pl.col("ts") < trained_until)
    # Menu candidates are capped by click popularity; the online ranker orders them per request.
    clicks = (impressions.filter((pl.col("surface") == "menu") & pl.col("clicked")).group_by("item_id")
              .agg(pl.len().alias("clicks")).collect())
    item_score = (items.select("item_id").join(clicks, on="item_id", how="left")["clicks"].fill_null(0)
                  .to_numpy().astype(np.float64))
    item_vectors = Vectors.from_model(menu, "entities")
    outputs = precompute(PrecomputeInputs(
        users=users, restaurants=restaurants, items=items,
        feed_scorer=_feed_scorer(config, out, feed, trained_until),
        item_ids=items["item_id"].to_numpy(), item_score=item_score,
        user_embeddings=Vectors.from_model(menu, "users"), item_embeddings=item_vectors,
        cell_clicks=CellClicks.from_log(impressions, users, until=trained_until),
    ), config, version, run_ts=trained_until)
    target = _OutputDir(out, version)
    write_version_outputs(target, outputs.frames())
    ItemIndex.build(item_vectors.vectors, item_vectors.ids).save(target.artifact("index/items.faiss"))
    frames = outputs.frames()
    return {"version": version, "users": frames["user_top_restaurants"].height,
            "cold_start_users": int(frames["user_top_restaurants"]["cold_start"].sum()),
            "restaurants": frames["restaurant_candidates"].height, "items_indexed": len(item_vectors.ids)}


def model_version(config: Config, ctx: RunContext) -> str:
    """<trained_until>-<hash of the clean data, the training config, the seed and the code>: a re-run
    of the same code on the same inputs names (and idempotently re-commits) the same version."""
    from recsys.registry import code_version, fingerprint_files, version_id

    train = json.loads((_artifacts(ctx) / "train.json").read_text())
    data = fingerprint_files(sorted(config.clean_dir.glob("*.parquet")))
    settings = hashlib.sha256(json.dumps(config.training.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return version_id(datetime.fromisoformat(train["trained_until"]), data, settings, str(config.seed),
                      code_version())


def step_register(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.registry import Registry, code_version, feature_definitions_hash, fingerprint_files

    out = _artifacts(ctx)
    train = json.loads((out / "train.json").read_text())
    gate = json.loads((out / "gate.json").read_text())
    version = model_version(config, ctx)
    registry = Registry.for_config(config).open()
    if registry.exists(version):
        return {"version": version, "status": registry.show(version).status, "new": False}
    with registry.stage(version) as area:
        for path in sorted(out.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                shutil.copyfile(path, area.artifact(str(path.relative_to(out))))
        meta = area.commit(
            trained_until=datetime.fromisoformat(train["trained_until"]),
            data_fingerprint=fingerprint_files(sorted(config.clean_dir.glob("*.parquet"))),
            feature_definitions_hash=feature_definitions_hash(config.feature_repo),
            params={s: v["params"] for s, v in train["surfaces"].items()},
            metrics={**{f"{s}_recall@{config.gate.k}": m["overall"]["recall"] for s, m in train["metrics"].items()},
                     "gate": train["metrics"], "popularity": train["popularity"]},
            gate=gate,
            status="candidate" if gate["passed"] else "refused",
            status_reason="" if gate["passed"] else "; ".join(gate["reasons"]),
            code_version=code_version(),
        )
    return {"version": version, "status": meta.status, "new": True}


def step_publish(config: Config, ctx: RunContext) -> dict[str, Any]:
    from recsys.registry import Registry
    from recsys.registry.publish import publish_version

    version = ctx.results["register"]["version"]
    registry = Registry.for_config(config).open()
    if registry.show(version).status == "refused":
        serving = registry.serving()
        return {"published": False, "serving": serving and serving.version, "reason": "refused by the gate"}
    pointer = registry.promote(version, "nightly", publish=lambda v: publish_version(config, v))
    return {"published": True, "serving": pointer.version, "generation": pointer.generation}


STEPS = [
    Step("validate", step_validate, "data contracts, quarantine, PII"),
    Step("features", step_features, "window stats and profiles (polars)"),
    Step("apply", step_apply, "Feast registry"),
    Step("materialize", step_materialize, "offline -> online store"),
    Step("train", step_train, "ALS search, evaluation and serving models (implicit)"),
    Step("feed_ranker", step_feed_ranker, "feed blend on Feast point-in-time features"),
    Step("ranker", step_ranker, "menu ranker on Feast point-in-time features"),
    Step("monitoring", step_monitoring, "reference profile and definitions manifest for monitoring"),
    Step("gate", step_gate, "quality gate against popularity and the serving model"),
    Step("precompute", step_precompute, "users' restaurants, restaurants' items, embeddings, FAISS index"),
    Step("register", step_register, "versioned model directory in the registry"),
    Step("publish", step_publish, "online rows, then the serving pointer"),
]


def run_nightly(config: Config, console: Console | None = None, resume: bool = True,
                stop_after: str | None = None) -> dict[str, Any]:
    return run_steps(config, "nightly", run_id_for(config), STEPS, console=console, resume=resume,
                     stop_after=stop_after)
