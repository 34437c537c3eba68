"""A registered model version as an evaluation policy: the server's ranking stages, run offline.

``model:<VERSION>`` (or ``serving``: the version the registry's SERVING pointer names) turns every
request of a log into the list that version would have served at the request's time, with
exploration OFF (epsilon 0: the greedy list, policy propensity 1). Per request of the log:

1. **The online read, rebuilt offline** (what :class:`~recsys.serving.stages.OnlineReader` would
   return, under the same Feast names):

   - model rows from the version's OWN artifacts (``precompute/*.parquet``,
     ``embeddings/*.parquet``, via :func:`~recsys.registry.publish.read_version_outputs`): the
     user's embedding and the restaurant's candidates (menu), the user's precomputed list (feed).
     An entity the version has no row for reads as missing, as online;
   - the ranker's user and restaurant features (``user_stats``, ``user_profile``,
     ``restaurant_stats``, ``restaurant_profile``) point-in-time at the request time: ONE
     ``get_historical_features`` call for the distinct (user, restaurant, ts) of the log;
   - real-time state (``restaurant_realtime``, a push source with no history): missing, which the
     stages read as "available" (the updater only reports what it knows).

2. **The model's in-memory parts**: the version's FAISS index and ``ranker.json``; the item
   feature table (:class:`~recsys.serving.item_features.ItemFeatureTable`) loaded as of the
   request time, one table per distinct combination of item-view snapshots the log's requests
   fall in (a handful: the views are daily), so an item's features are never from after the
   request; opening hours from the clean restaurants table.

3. **The same stages**: :func:`~recsys.serving.stages.rank_menu` /
   :func:`~recsys.serving.stages.rank_feed` with ``Exploration(0, seed)`` and ``k`` = the
   request's logged slots; the hour restaurants must be open at is the request time's UTC hour.
   When the model cannot answer (unknown user, no candidates, ...) the server answers with the
   popularity fallback; so does this policy (``fallback=True``, epsilon 0 too), else the request's
   slots stay empty (reward 0, reported as ``slot_fill``). Who answered each request is in the
   ``answered_by`` column (the version, or ``<reason>:popularity``).

A loop over requests calling the stage functions (the point: the SAME code as the server); the
Feast read and the item tables are batched. Throughput: docs/EVALUATION.md.

Caveats: the version's precomputed rows are those it was published with (trained up to
``trained_until``): on requests before that date the policy has seen their outcomes (evaluate on
a log after ``trained_until`` for an honest number). The fallback's popularity counts are the
whole clean impressions table, as the server loads it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataContractError, NotFoundError
from recsys.evaluation.columns import (
    ENTITY, POLICY_ENTITY, POLICY_PROPENSITY, POSITION, REQ_IDX, REQUEST_ID, RESTAURANT_ID, TS, USER_ID,
)

logger = logging.getLogger("recsys.evaluation.model_policy")

MODEL_PREFIX = "model:"
SERVING = "serving"
ANSWERED_BY = "answered_by"
RANKER_FILE = "ranker.json"  # as recsys.serving.recommender
INDEX_FILE = "index/items.faiss"


@dataclass
class ModelPolicySummary:
    """What one :meth:`ModelPolicy.lists` call did: requests per answer, time."""

    version: str
    surface: str
    requests: int = 0
    answered_by: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def seconds_per_1k(self) -> float:
        """Wall time per 1,000 requests (Feast retrieval and item tables included)."""
        return 1000 * sum(self.seconds.values()) / max(self.requests, 1)


def parse_policy_name(name: str) -> str | None:
    """``model:<VERSION>`` -> VERSION, ``serving`` -> "" (the serving version), else None."""
    if name == SERVING:
        return ""
    if name.startswith(MODEL_PREFIX):
        version = name[len(MODEL_PREFIX):]
        if not version:
            raise NotFoundError(f"policy {name!r}: no model version after {MODEL_PREFIX!r}")
        return version
    return None


def request_table(log: pl.DataFrame) -> pl.DataFrame:
    """One row per request of a checked log (canonical order): request_id, ts, user_id,
    restaurant_id (the opened restaurant on the menu), slots (its logged positions)."""
    return (log.group_by(REQ_IDX, maintain_order=True)
            .agg(pl.col(REQUEST_ID).first(), pl.col(TS).first(), pl.col(USER_ID).first(),
                 pl.col(RESTAURANT_ID).first(), pl.len().alias("slots")))


def _int_ids(series: pl.Series) -> np.ndarray:
    """Ids as int64 (-1 where an id is not an integer: unknown to the model, as the server's parse)."""
    return series.cast(pl.Int64, strict=False).fill_null(-1).to_numpy()


def _plain(value: Any) -> Any:
    """A value as the online read returns it: Python scalars, None for null."""
    if value is None:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value


class ModelPolicy:
    """One registered model version, ranking logged requests offline through the serving stages.

    Parameters
    ----------
    config : the application config (registry, data_dir, feature store, seed).
    version : the model version; None for the registry's serving version.
    fallback : answer the requests the model cannot with the popularity fallback (as the server).
    """

    def __init__(self, config, version: str | None = None, *, fallback: bool = True):
        self.config = config
        self.requested = version
        self.fallback = fallback
        self.version: str | None = None
        self.summary: ModelPolicySummary | None = None
        self._loaded = False

    # ---------------------------------------------------------------- loading
    def load(self) -> "ModelPolicy":
        """Resolve the version and read its artifacts (index, ranker, precomputed rows)."""
        from recsys.ranking.index import ItemIndex
        from recsys.ranking.ranker import LinearRanker
        from recsys.registry import Registry
        from recsys.registry.publish import KEYS, read_version_outputs
        from recsys.serving.recommender import load_opening_hours

        registry = Registry.for_config(self.config).open()
        version = self.requested
        if not version:
            pointer = registry.serving()
            if pointer is None:
                raise NotFoundError(f"policy 'serving': the registry at {registry.root} has no serving version")
            version = pointer.version
        if not registry.exists(version):
            known = ", ".join(m.version for m in registry.list_versions()[-5:]) or "none"
            raise NotFoundError(f"model version {version!r} is not in the registry at {registry.root} "
                                f"(latest: {known})")
        directory = registry.version_dir(version)
        frames = read_version_outputs(registry, version)
        self.version = version
        self.index = ItemIndex.load(directory / INDEX_FILE)
        ranker_path = directory / RANKER_FILE
        self.ranker = LinearRanker.load(ranker_path) if ranker_path.is_file() else None
        self.hours = load_opening_hours(self.config.clean_dir)
        # {view: {entity id: the row's features}}: what the online read would return per entity
        self._rows = {view: {int(row[KEYS[view]]): row for row in frame.iter_rows(named=True)}
                      for view, frame in frames.items() if view != "item_embedding"}
        self._store = None
        self._popularity = None
        self._loaded = True
        return self

    def _feature_store(self):
        if self._store is None:
            from recsys.features.store import open_store

            self._store = open_store(self.config)
        return self._store

    def _fallback(self):
        if self._popularity is None and self.fallback:
            from recsys.serving.fallback import PopularityRecommender
            from recsys.serving.settings import serving_config

            settings = serving_config(self.config).model_copy(update={"epsilon": 0.0})
            self._popularity = PopularityRecommender.for_config(self.config, settings).load()
        return self._popularity

    # ---------------------------------------------------------------- the lists
    def lists(self, log: pl.DataFrame, *, surface: str) -> pl.DataFrame:
        """The version's greedy list for every request of ``log`` (from ``load_log``).

        Returns ``request_id, position, policy_entity, policy_propensity (1.0), answered_by``,
        ids in the log's types.
        """
        if not self._loaded:
            raise ConfigError("ModelPolicy: call load() first")
        if surface not in ("feed", "menu"):
            raise DataContractError(f"surface={surface!r}: expected feed or menu")
        started = time.perf_counter()
        requests = request_table(log)
        summary = ModelPolicySummary(self.version, surface, requests.height)
        if surface == "menu":
            rid, pos, ent, who = self._menu_lists(requests, summary)
        else:
            rid, pos, ent, who = self._feed_lists(requests, summary)
        summary.answered_by.update(who)
        summary.seconds["other"] = time.perf_counter() - started - sum(summary.seconds.values())
        self.summary = summary
        logger.info("model policy lists", extra={"fields": {
            "version": self.version, "surface": surface, "requests": summary.requests,
            "answered_by": dict(summary.answered_by), "seconds": summary.seconds}})
        req_ids = requests[REQUEST_ID].gather(pl.Series(rid, dtype=pl.Int64)) if len(rid) else \
            pl.Series(REQUEST_ID, [], dtype=requests.schema[REQUEST_ID])
        who_per_row = pl.Series(ANSWERED_BY, np.repeat(np.asarray(who, dtype=object), _counts(rid, len(who))),
                                dtype=pl.String)
        return pl.DataFrame({
            REQUEST_ID: req_ids,
            POSITION: pl.Series(pos, dtype=pl.Int32),
            POLICY_ENTITY: pl.Series(ent, dtype=pl.Int64).cast(log.schema[ENTITY]),
            POLICY_PROPENSITY: pl.Series(np.ones(len(rid)), dtype=pl.Float64),
            ANSWERED_BY: who_per_row,
        })

    def _menu_lists(self, requests: pl.DataFrame, summary: ModelPolicySummary):
        from recsys.serving.domain import ItemsRequest, RequestContext
        from recsys.serving.stages import (
            CAND_IDS, CAND_SCORES, CAND_VERSION, CONTEXT_VIEWS, USER_VECTOR, USER_VERSION, Exploration, MenuModel,
            menu_columns, rank_menu,
        )

        t0 = time.perf_counter()
        users, rests = _int_ids(requests[USER_ID]), _int_ids(requests[RESTAURANT_ID])
        ts_list = requests[TS].to_list()
        context_cols = [c for c in menu_columns(self.ranker) if c.partition("__")[0] in CONTEXT_VIEWS]
        context = self._historical_context(users, rests, requests[TS], context_cols)
        tables = self._item_tables(requests[TS])
        summary.seconds["features"] = time.perf_counter() - t0
        emb, cand = self._rows["user_embedding"], self._rows["restaurant_candidates"]
        exploration = Exploration(0.0, self.config.seed)
        models = {key: MenuModel(self.version, self.index, self.ranker, table) for key, table in tables.items()}
        rid, pos, ent, who = [], [], [], []
        slots = requests["slots"].to_list()
        str_ids = requests[REQUEST_ID].cast(pl.String).to_list()
        table_keys = self._table_keys(requests[TS])
        t1 = time.perf_counter()
        for i in range(requests.height):
            u, r, ts = int(users[i]), int(rests[i]), ts_list[i]
            e, c = emb.get(u), cand.get(r)
            row: dict[str, Any] = {
                USER_VECTOR: None if e is None else e["embedding"], USER_VERSION: None if e is None else e["model_version"],
                CAND_IDS: None if c is None else c["item_ids"], CAND_SCORES: None if c is None else c["scores"],
                CAND_VERSION: None if c is None else c["model_version"],
            }
            for col in context_cols:
                row[col] = context[col][i]
            request = ItemsRequest(request_id=str_ids[i], user_id=str(u), restaurant_id=str(r), k=slots[i],
                                   context=RequestContext(request_time=ts, local_hour=ts.hour))
            got = rank_menu(row, models[table_keys[i]], request, ts, exploration) if u >= 0 else "unknown_user"
            self._collect("menu", request, got, i, (rid, pos, ent, who))
        summary.seconds["rank"] = time.perf_counter() - t1
        return np.asarray(rid, np.int64), np.asarray(pos, np.int32), np.asarray(ent, np.int64), who

    def _feed_lists(self, requests: pl.DataFrame, summary: ModelPolicySummary):
        from recsys.serving.domain import RequestContext, RestaurantsRequest
        from recsys.serving.stages import FEED_IDS, FEED_SCORES, FEED_VERSION, Exploration, rank_feed

        top = self._rows["user_top_restaurants"]
        exploration = Exploration(0.0, self.config.seed)
        users = _int_ids(requests[USER_ID])
        ts_list = requests[TS].to_list()
        slots = requests["slots"].to_list()
        str_ids = requests[REQUEST_ID].cast(pl.String).to_list()
        rid, pos, ent, who = [], [], [], []
        t1 = time.perf_counter()
        for i in range(requests.height):
            u, ts = int(users[i]), ts_list[i]
            t = top.get(u)
            row = {} if t is None else {FEED_IDS: t["restaurant_ids"], FEED_SCORES: t["scores"],
                                        FEED_VERSION: t["model_version"]}
            request = RestaurantsRequest(request_id=str_ids[i], user_id=str(u), k=slots[i],
                                         context=RequestContext(request_time=ts, local_hour=ts.hour))
            got = rank_feed(row, self.version, self.hours, request, ts.hour, exploration) if u >= 0 \
                else "unknown_user"
            self._collect("feed", request, got, i, (rid, pos, ent, who))
        summary.seconds["rank"] = time.perf_counter() - t1
        return np.asarray(rid, np.int64), np.asarray(pos, np.int32), np.asarray(ent, np.int64), who

    def _collect(self, surface: str, request, got, i: int, out: tuple[list, list, list, list]) -> None:
        """Append request ``i``'s list (the model's, or the fallback's when ``got`` names a
        reason) to the output columns (request index, position, entity, who answered)."""
        rid, pos, ent, who = out
        if isinstance(got, str):
            got, label = self._fallback_list(surface, request, got)
        else:
            label = self.version
        who.append(label)
        for entry in (got.entries if got is not None else ()):
            rid.append(i)
            pos.append(entry.position)
            ent.append(int(entry.id))

    def _fallback_list(self, surface: str, request, reason: str):
        """The server's answer when the model cannot: popularity (or nothing without fallback)."""
        popularity = self._fallback()
        if popularity is None:
            return None, f"{reason}:none"
        try:
            got = popularity.recommend_items(request) if surface == "menu" else \
                popularity.recommend_restaurants(request)
        except NotFoundError:  # an unknown restaurant: the server answers NOT_FOUND, no list
            return None, f"{reason}:not_found"
        return got, f"{reason}:popularity"

    # ---------------------------------------------------------------- point-in-time features
    def _historical_context(self, users: np.ndarray, rests: np.ndarray, ts: pl.Series,
                            columns: list[str]) -> dict[str, list]:
        """The ranker's user / restaurant features at each request's time (one Feast call)."""
        if not columns:
            return {}
        from recsys.serving.stages import feast_ref

        n = len(users)
        entity = pl.DataFrame({"user_id": users, "restaurant_id": rests, "event_timestamp": ts,
                               "_row": np.arange(n, dtype=np.int64)})
        got = self._feature_store().get_historical_features(
            entity_df=entity.to_pandas(), features=[feast_ref(c) for c in columns], full_feature_names=True).to_df()
        got = pl.from_pandas(got[["_row", *columns]])
        if got["_row"].n_unique() != got.height:
            raise DataContractError("historical features: the entity rows came back repeated")
        # Feast's file offline store drops entity rows older than every feature row (no value yet):
        # they read as null, as the training join (recsys.training.ranker_data.retrieve) reads them.
        frame = entity.select("_row").join(got, on="_row", how="left", maintain_order="left")
        return {c: [_plain(v) for v in frame[c].to_list()] for c in columns}

    def _item_view_snapshots(self) -> dict[str, np.ndarray]:
        """Each item view's snapshot times (its distinct ``event_timestamp``), ascending, in us."""
        from recsys.serving.item_features import ITEM_VIEWS

        store = self._feature_store()
        out = {}
        for view in ITEM_VIEWS:
            source = Path(store.get_feature_view(view).batch_source.path)
            path = source if source.is_absolute() else Path(self.config.data_dir) / source
            if not path.exists():
                raise DataContractError(f"{view}: offline source {path} missing (run `recsys features build`)")
            stamps = (pl.scan_parquet(path).select(pl.col("event_timestamp").cast(pl.Datetime("us", "UTC"))
                                                   .dt.epoch("us").unique().sort()).collect())
            out[view] = stamps["event_timestamp"].to_numpy()
        return out

    def _table_keys(self, ts: pl.Series) -> list[tuple]:
        """Per request, the snapshot each item view has at its time (latest ``<= ts``)."""
        if self.ranker is None:
            return [()] * len(ts)
        if not hasattr(self, "_snapshots"):
            self._snapshots = self._item_view_snapshots()
        us = ts.dt.epoch("us").to_numpy()
        per_view = [np.searchsorted(s, us, side="right") - 1 for s in self._snapshots.values()]
        return list(zip(*(v.tolist() for v in per_view))) if per_view else [()] * len(ts)

    def _item_tables(self, ts: pl.Series) -> dict[tuple, Any]:
        """One item feature table per distinct snapshot combination, loaded as of a request time in it."""
        from recsys.serving.item_features import ITEM_VIEWS, ItemFeatureTable

        if self.ranker is None:
            return {(): ItemFeatureTable(columns=())}
        columns = [c for c in self.ranker.input_columns if c.partition("__")[0] in ITEM_VIEWS]
        keys = self._table_keys(ts)
        first: dict[tuple, datetime] = {}
        for key, t in zip(keys, ts.to_list()):
            first.setdefault(key, t)
        store = self._feature_store()
        return {key: ItemFeatureTable(columns=columns).load(store, self.config.data_dir, as_of=t)
                for key, t in first.items()}


def _counts(rid: np.ndarray, n_requests: int) -> np.ndarray:
    return np.bincount(rid, minlength=n_requests) if len(rid) else np.zeros(n_requests, np.int64)


def model_policy_lists(config, version: str | None, log: pl.DataFrame, *, surface: str,
                       fallback: bool = True) -> tuple[pl.DataFrame, ModelPolicySummary]:
    """The lists of ``version`` (None: serving) for ``log``, and what it took."""
    policy = ModelPolicy(config, version, fallback=fallback).load()
    lists = policy.lists(log, surface=surface)
    return lists, policy.summary

