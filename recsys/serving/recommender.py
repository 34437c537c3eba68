"""The model policy: :class:`ModelRecommender`, the registry's serving version behind the stages.

``ModelRecommender(config)`` stores settings only; :meth:`~ModelRecommender.load` opens the Feast
store, loads the popularity fallback and the serving version into an immutable
:class:`Bundle` (FAISS index, ranker if the version has ``ranker.json``, the in-memory item
feature table, opening hours, the online readers), and starts a thread that polls the registry
pointer (:class:`~recsys.registry.PointerWatcher`, one ``stat`` per poll) and reloads when it moves.
A request takes ``self._bundle`` once and uses only that: a reload builds a new bundle and swaps
the reference, so requests in flight finish on the old one and none is dropped.

Every answer the model cannot give is a flagged fallback (``degraded=True``, reason
``<why>:<what answered>``), never an error:

| situation | answer | reason |
| --- | --- | --- |
| user without a (current) embedding / precomputed list | popularity (restaurant's menu / user's cell) | ``unknown_user:popularity`` |
| restaurant without candidates | the restaurant's menu by popularity | ``no_candidates:popularity`` |
| an online row of another model version than the loaded one | popularity (never mixed) | ``model_version_mismatch:popularity`` |
| online store down or slower than the deadline | the last list computed for (user, restaurant) by this version (bounded LRU), re-explored | ``store_unavailable:last_known_good`` |
| ... and none kept | popularity | ``store_unavailable:popularity`` |

Unknown restaurants are NOT_FOUND (from the popularity tables), as in the fallback policy. Each
request retries the store, so the service recovers by itself when it is back.

A/B arms (``serving.ab_version``, ``ab_share``, ``ab_salt``): a second registry version, loaded
once beside the serving one (its rows in memory, see :mod:`recsys.serving.arms`), answers the
users of the treatment arm; the control follows the pointer with hot reload. Each arm has the
fallbacks above; a list carries its user's ``arm`` whichever policy answered it, and its
``model_version`` is the one that did. Feature sampling (``serving.feature_sample_rate``): a menu
request answered by a version with a ranker and chosen by :func:`~recsys.monitoring.samples.is_sampled`
carries a :class:`~recsys.serving.domain.FeatureSample` the servicer logs off the critical path.
For other requests, arm choice and sampling cost one hash and a branch each.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import ConfigError, DataContractError, NotFoundError
from recsys.monitoring.samples import is_sampled
from recsys.ranking.index import ItemIndex
from recsys.ranking.ranker import LinearRanker
from recsys.serving.arms import VERSION_COLUMNS, Split, VersionReader, VersionRows
from recsys.serving.domain import (
    CONTROL, TREATMENT, Arm, FailedPreconditionError, FeatureSample, ItemsRequest, RankedList, RestaurantsRequest,
)
from recsys.serving.fallback import PopularityRecommender
from recsys.serving.item_features import ITEM_VIEWS, ItemFeatureTable
from recsys.serving.settings import ServingConfig, serving_config
from recsys.serving.stages import (
    FEED_COLUMNS, STORE_UNAVAILABLE, Candidates, Exploration, MenuInputs, MenuModel, OnlineReader, OpeningHours,
    StoreUnavailableError, drop_closed, feature_rows, feed_fallback_reason, menu_columns, menu_fallback_reason,
    parse_feed, parse_menu, present, rank_menu_candidates, request_hour, score_embeddings,
)

logger = logging.getLogger("recsys.serving.model")
POLICY = "model"
RANKER_FILE = "ranker.json"
INDEX_FILE = "index/items.faiss"


@dataclass(frozen=True)
class Bundle:
    """One loaded model version: everything a request reads besides the online store."""

    version: str
    generation: int
    menu: MenuModel
    hours: OpeningHours
    menu_reader: OnlineReader | VersionReader
    feed_reader: OnlineReader | VersionReader
    loaded_at: datetime


class LastKnownGood:
    """A bounded LRU of the last greedy candidates computed per key, with the version that made them."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: OrderedDict[tuple, tuple[str, Candidates]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: tuple, version: str, candidates: Candidates) -> None:
        if self.capacity <= 0:
            return
        stripped = candidates if candidates.explanation is None else replace(candidates, explanation=None)
        with self._lock:
            self._data[key] = (version, stripped)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def get(self, key: tuple, version: str) -> Candidates | None:
        with self._lock:
            got = self._data.get(key)
            if got is not None:
                self._data.move_to_end(key)
        return got[1] if got is not None and got[0] == version else None

    def __len__(self) -> int:
        return len(self._data)


def _parse_id(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _user_key(user_id: str, uid: int | None) -> str:
    """The id the A/B split hashes: the integer's canonical form (``"042"`` is user 42)."""
    return user_id if uid is None else str(uid)


def _feature_sample(bundle: Bundle, inputs: MenuInputs, ranked: RankedList, request_ts: datetime, uid: int,
                    rid: int) -> FeatureSample:
    """The ranker's input rows of the items this request showed, in position order, computed when
    the sampler gets to it: the same stages (FAISS scores, then :func:`feature_rows`) on the same
    immutable inputs. Shown items, not every candidate: the reference profile's rows are logged
    impressions, so the sample is the same population (and 20x less to log)."""
    inputs = replace(inputs, candidate_ids=np.array([int(e.id) for e in ranked.entries], dtype=np.int64))

    def compute():
        scored, _ = score_embeddings(bundle.menu.index, inputs, keep_unknown=True)
        return scored.ids, feature_rows(bundle.menu.items, inputs, scored, request_ts)
    return FeatureSample(model_version=bundle.version, user_id=uid, restaurant_id=rid, ts=request_ts, compute=compute)


def load_opening_hours(clean_dir: Path) -> OpeningHours:
    path = Path(clean_dir) / "restaurants.parquet"
    if not path.exists():
        raise DataContractError(f"{path}: missing (run `recsys validate` first)")
    rest = pl.read_parquet(path, columns=["restaurant_id", "open_hour", "close_hour"]).sort("restaurant_id")
    return OpeningHours(rest["restaurant_id"].to_numpy().astype(np.int64),
                        rest["open_hour"].fill_null(0).to_numpy().astype(np.int64),
                        rest["close_hour"].fill_null(24).to_numpy().astype(np.int64))


class ModelRecommender:
    """The registry's serving version answering both surfaces (the Recommender protocol).

    Parameters
    ----------
    config : the application config (data_dir, online store, registry, serving section).
    settings : the serving section (default ``config.serving``): epsilon, threads.
    store_timeout : seconds the online read may take when the call has no (shorter) deadline.
    poll_seconds : how often the registry pointer is checked (0: no watcher thread).
    last_known_good : entries of the last-known-good LRU.
    store : an opened Feast store to use (default: ``open_store(config)`` in :meth:`load`).
    """

    def __init__(self, config, settings: ServingConfig | None = None, *, store_timeout: float | None = None,
                 poll_seconds: float | None = None, last_known_good: int | None = None, store=None):
        self.config = config
        self.settings = settings or serving_config(config)
        self.exploration = Exploration(self.settings.epsilon, config.seed)
        self.store_timeout = self.settings.store_timeout_ms / 1000 if store_timeout is None else store_timeout
        self.poll_seconds = self.settings.reload_poll_seconds if poll_seconds is None else poll_seconds
        self.last_good = LastKnownGood(self.settings.last_known_good_entries if last_known_good is None
                                       else last_known_good)
        self._store = store
        self.split = Split(self.settings.ab_share, self.settings.ab_key) if self.settings.ab_version else None
        self.sample_rate = self.settings.feature_sample_rate
        self._bundle: Bundle | None = None
        self._treatment: Bundle | None = None
        self._popularity: PopularityRecommender | None = None
        self._registry = None
        self._executor: ThreadPoolExecutor | None = None
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reload_errors = 0

    # ---------------------------------------------------------------- loading
    def load(self) -> "ModelRecommender":
        from recsys.features.store import open_store
        from recsys.registry import Registry

        self._registry = Registry.for_config(self.config).open()
        if self._registry.serving() is None:
            raise FailedPreconditionError(f"no serving model version in {self._registry.root}: run `recsys nightly` "
                                          "or serve with --policy popularity")
        if self.split is not None:
            self._require_version(self.settings.ab_version)
        self._store = self._store or open_store(self.config)
        self._executor = ThreadPoolExecutor(max_workers=max(4, self.settings.threads),
                                            thread_name_prefix="feast-read")
        self._popularity = PopularityRecommender.for_config(self.config, self.settings).load()
        self.reload()
        if self.split is not None:
            self._treatment = self._load_treatment(self.settings.ab_version)
        if self.poll_seconds > 0:
            self._watcher = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
            self._watcher.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _build(self, version: str, generation: int, rows: VersionRows | None = None) -> Bundle:
        """The version's bundle; with ``rows``, its model-derived columns come from them, not the store."""
        directory = self._registry.version_dir(version)
        index = ItemIndex.load(directory / INDEX_FILE)
        ranker_path = directory / RANKER_FILE
        ranker = LinearRanker.load(ranker_path) if ranker_path.is_file() else None
        item_columns = [c for c in (ranker.input_columns if ranker else ()) if c.partition("__")[0] in ITEM_VIEWS]
        items = ItemFeatureTable(columns=item_columns).load(self._store, self.config.data_dir) if ranker \
            else ItemFeatureTable(columns=())
        menu_reader = OnlineReader(self._store, menu_columns(ranker), self._executor)
        feed_reader = OnlineReader(self._store, FEED_COLUMNS, self._executor)
        if rows is not None:
            store_columns = [c for c in menu_reader.columns if c not in VERSION_COLUMNS]
            menu_reader = VersionReader(OnlineReader(self._store, store_columns, self._executor), rows.menu)
            feed_reader = VersionReader(None, rows.feed_row)
        return Bundle(version=version, generation=generation,
                      menu=MenuModel(version, index, ranker, items),
                      hours=load_opening_hours(self.config.clean_dir),
                      menu_reader=menu_reader, feed_reader=feed_reader,
                      loaded_at=datetime.now(timezone.utc))

    def _require_version(self, version: str) -> None:
        from recsys.registry.errors import RegistryError

        try:
            exists = self._registry.exists(version)
        except RegistryError as exc:  # not a well-formed version id
            raise ConfigError(f"serving.ab_version: {exc}") from None
        if not exists:
            known = [m.version for m in self._registry.list_versions()][-5:]
            raise ConfigError(f"serving.ab_version={version!r}: no such version in {self._registry.models_dir} "
                              f"(latest: {', '.join(known) or 'none'})")

    def _load_treatment(self, version: str) -> Bundle:
        """The treatment arm's bundle: ``version`` from the registry, its rows for its users in memory."""
        rows = VersionRows.load(self._registry.version_dir(version), version,
                                lambda uid: self.split.is_treatment(str(uid)))
        bundle = self._build(version, generation=-1, rows=rows)
        self._warm_up(bundle)
        logger.info("A/B treatment loaded", extra={"fields": {"ab_version": version, "ab_share": self.split.share,
                                                              "treatment_users": len(rows.users)}})
        return bundle

    def _warm_up(self, bundle: Bundle) -> None:
        """One read per reader (Feast loads its registry on the first call); failures are fine."""
        for reader, row in ((bundle.menu_reader, {"user_id": -1, "restaurant_id": -1}),
                            (bundle.feed_reader, {"user_id": -1})):
            try:
                reader.read(row, timeout=30.0)
            except StoreUnavailableError as exc:
                logger.warning("warm-up read failed", extra={"fields": {"error": str(exc)}})

    @property
    def bundle(self) -> Bundle:
        if self._bundle is None:
            raise FailedPreconditionError("ModelRecommender: call load() before serving")
        return self._bundle

    # ---------------------------------------------------------------- the Recommender protocol
    def _arm(self, user_id: str, uid: int | None) -> tuple[Bundle, Arm]:
        """This request's version and arm (whatever reloads happen meanwhile, it keeps them)."""
        if self._treatment is not None and self.split.is_treatment(_user_key(user_id, uid)):
            return self._treatment, TREATMENT
        return self.bundle, CONTROL

    def recommend_items(self, request: ItemsRequest) -> RankedList:
        rid, uid = _parse_id(request.restaurant_id), _parse_id(request.user_id)
        if rid is None:
            raise NotFoundError(f"restaurant_id={request.restaurant_id!r} not found")
        bundle, arm = self._arm(request.user_id, uid)
        ranked = self._items(bundle, request, uid, rid)
        return ranked if arm == CONTROL else replace(ranked, arm=arm)

    def _items(self, bundle: Bundle, request: ItemsRequest, uid: int | None, rid: int) -> RankedList:
        if uid is None:
            return self._popular_items(request, "unknown_user")
        request_ts = request.context.request_time or datetime.now(timezone.utc)
        try:
            row = bundle.menu_reader.read({"user_id": uid, "restaurant_id": rid}, self._timeout(request))
        except StoreUnavailableError as exc:
            logger.warning("online store unavailable", extra={"fields": {"request_id": request.request_id,
                                                                         "error": str(exc)}})
            kept = self.last_good.get(("menu", uid, rid), bundle.version)
            if kept is not None:
                return present(kept, (), request, self.exploration, policy=bundle.version, degraded=True,
                               reason=f"{STORE_UNAVAILABLE}:last_known_good")
            return self._popular_items(request, STORE_UNAVAILABLE)
        inputs = parse_menu(row)
        reason = menu_fallback_reason(inputs, bundle.version)
        if reason is not None:
            return self._popular_items(request, reason)
        candidates, filters = rank_menu_candidates(inputs, bundle.menu, request_ts, request.explain)
        self.last_good.put(("menu", uid, rid), bundle.version, candidates)
        ranked = present(candidates, filters, request, self.exploration, policy=bundle.version)
        if self.sample_rate > 0 and bundle.menu.ranker is not None and is_sampled(request.request_id,
                                                                                  self.sample_rate):
            ranked = replace(ranked, feature_sample=_feature_sample(bundle, inputs, ranked, request_ts, uid, rid))
        return ranked

    def recommend_restaurants(self, request: RestaurantsRequest) -> RankedList:
        uid = _parse_id(request.user_id)
        bundle, arm = self._arm(request.user_id, uid)
        ranked = self._restaurants(bundle, request, uid)
        return ranked if arm == CONTROL else replace(ranked, arm=arm)

    def _restaurants(self, bundle: Bundle, request: RestaurantsRequest, uid: int | None) -> RankedList:
        if uid is None:
            return self._popular_restaurants(request, "unknown_user")
        request_ts = request.context.request_time or datetime.now(timezone.utc)
        hour = request_hour(request.context, request_ts)
        try:
            row = bundle.feed_reader.read({"user_id": uid}, self._timeout(request))
        except StoreUnavailableError as exc:
            logger.warning("online store unavailable", extra={"fields": {"request_id": request.request_id,
                                                                         "error": str(exc)}})
            kept = self.last_good.get(("feed", uid), bundle.version)
            if kept is not None:
                is_open = bundle.hours.is_open(kept.ids, hour)
                return present(kept.take(is_open), (), request, self.exploration, policy=bundle.version,
                               degraded=True, reason=f"{STORE_UNAVAILABLE}:last_known_good")
            return self._popular_restaurants(request, STORE_UNAVAILABLE)
        inputs = parse_feed(row)
        reason = feed_fallback_reason(inputs, bundle.version)
        if reason is not None:
            return self._popular_restaurants(request, reason)
        self.last_good.put(("feed", uid), bundle.version,
                           Candidates(inputs.restaurant_ids, inputs.scores, inputs.scores))
        candidates, filters = drop_closed(inputs, bundle.hours, hour, request.explain)
        return present(candidates, filters, request, self.exploration, policy=bundle.version)

    def model_info(self) -> dict[str, str]:
        b = self.bundle
        info = {"model_version": b.version, "policy": POLICY, "generation": str(b.generation),
                "ranker": "linear" if b.menu.ranker is not None else "none (embedding score)",
                "epsilon": f"{self.exploration.epsilon:g}", "items_indexed": str(len(b.menu.index)),
                "item_feature_rows": str(len(b.menu.items)), "loaded_at": b.loaded_at.isoformat(),
                "last_known_good_entries": str(len(self.last_good)), "reload_errors": str(self.reload_errors)}
        for view, snap in b.menu.items.snapshots.items():
            info[f"snapshot:{view}"] = snap.snapshot.isoformat() if snap.snapshot else "none"
        info["feature_sample_rate"] = f"{self.sample_rate:g}"
        if self._treatment is not None:
            info.update({"arm:control": b.version, "arm:treatment": self._treatment.version,
                         "ab_share": f"{self.split.share:g}", "ab_salt": self.split.salt})
        return info

    def reload(self) -> str:
        """Load the version the pointer names now (if not loaded yet) and swap it in atomically."""
        with self._reload_lock:
            pointer = self._registry.serving()
            if pointer is None:
                raise FailedPreconditionError("the registry has no serving version any more")
            current = self._bundle
            if current is not None and current.generation == pointer.generation:
                return current.version
            if current is not None and current.version == pointer.version:
                self._bundle = replace(current, generation=pointer.generation)
                return pointer.version
            bundle = self._build(pointer.version, pointer.generation)
            self._warm_up(bundle)
            self._bundle = bundle  # one reference swap: requests in flight keep the old bundle
            logger.info("model loaded", extra={"fields": {"model_version": bundle.version,
                                                          "generation": bundle.generation}})
            return bundle.version

    def rollback(self) -> str:
        """Republish the previous version's rows, move the pointer back, load it."""
        from recsys.registry.errors import RegistryError
        from recsys.registry.publish import publish_version

        try:
            self._registry.rollback("admin rollback", publish=lambda v: publish_version(self.config, v,
                                                                                         store=self._store))
        except RegistryError as exc:
            raise FailedPreconditionError(str(exc)) from None
        return self.reload()

    # ---------------------------------------------------------------- helpers
    def _timeout(self, request) -> float:
        left = request.time_left()
        return self.store_timeout if left is None else max(0.0, min(self.store_timeout, left * 0.8))

    def _popular_items(self, request: ItemsRequest, why: str) -> RankedList:
        ranked = self._popularity.recommend_items(request)
        return replace(ranked, degraded=True, degraded_reason=f"{why}:popularity")

    def _popular_restaurants(self, request: RestaurantsRequest, why: str) -> RankedList:
        ranked = self._popularity.recommend_restaurants(request)
        return replace(ranked, degraded=True, degraded_reason=f"{why}:popularity")

    def _watch(self) -> None:
        from recsys.registry import PointerWatcher

        watcher = PointerWatcher(self._registry.pointer_path)
        while not self._stop.wait(self.poll_seconds):
            try:
                if watcher.poll(self.bundle.generation) is not None:
                    self.reload()
            except Exception as exc:  # keep serving the loaded version; try again at the next poll
                self.reload_errors += 1
                logger.error("reload failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
