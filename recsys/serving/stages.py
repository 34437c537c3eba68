"""The online path, top to bottom: small stages with declared inputs and outputs.

RecommendItems (the menu)::

    entity row {user_id, restaurant_id}
      -> OnlineReader.read      ONE Feast online read, O(1) entity rows        -> row (Feast names)
      -> parse_menu             row -> MenuInputs (user vector, candidates, real-time state, context)
      -> menu_fallback_reason   model-version contract, unknown user, no candidates -> reason | None
      -> score_embeddings       FAISS scores of exactly the candidate ids        -> Candidates
      -> rank                   LinearRanker over the training feature names    -> Candidates
      -> drop_unavailable       real-time ``available == 0`` removed            -> Candidates, filters
      -> present                exploration (one scheme, exact propensities), top k -> RankedList

RecommendRestaurants (the feed)::

    {user_id} -> OnlineReader.read -> parse_feed -> feed_fallback_reason -> drop_closed -> present

Everything after the read is a pure function of the row, the loaded model (:class:`MenuModel`),
the request and the exploration settings: :func:`rank_menu` and :func:`rank_feed` are what the
offline evaluator calls with rows it reads offline (``get_historical_features`` under the same
names). With epsilon 0 the lists are the served ones (a test).

Item-level features (``item_stats``, ``item_profile``) are NOT read from Feast per request: they
come from the model version's in-memory :class:`~recsys.serving.item_features.ItemFeatureTable`
(same offline sources and point-in-time rule; see that module). Request-time features are
computed here exactly as the on-demand views of ``feature_repo/on_demand.py`` compute them
(``request_time``: UTC hour and weekday of the request time; ``price_vs_basket``: item price /
the user's 28d basket mean, 1.0 when unknown); a test compares them with
``get_historical_features``.

Missing real-time state (no ``restaurant_realtime`` row, or an item absent from its arrays)
means "available": the updater only reports what it knows.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from recsys.errors import RecsysError
from recsys.ranking.exploration import RequestDraws, explore_top
from recsys.ranking.index import ItemIndex
from recsys.ranking.ranker import ALS_SCORE, HOUR, LinearRanker
from recsys.serving.domain import Entry, Filtered, RankedList
from recsys.serving.item_features import ItemFeatureTable
from recsys.serving.scoring import MenuScorer, Prepared

# ---- the Feast names this path reads ----
USER_VECTOR, USER_VERSION = "user_embedding__embedding", "user_embedding__model_version"
CAND_IDS, CAND_SCORES, CAND_VERSION = ("restaurant_candidates__item_ids", "restaurant_candidates__scores",
                                       "restaurant_candidates__model_version")
RT_IDS, RT_AVAILABLE, RT_CLICKS = ("restaurant_realtime__item_ids", "restaurant_realtime__available",
                                   "restaurant_realtime__clicks_1h")
FEED_IDS, FEED_SCORES, FEED_VERSION = ("user_top_restaurants__restaurant_ids", "user_top_restaurants__scores",
                                       "user_top_restaurants__model_version")
MENU_MODEL_COLUMNS = (USER_VECTOR, USER_VERSION, CAND_IDS, CAND_SCORES, CAND_VERSION, RT_IDS, RT_AVAILABLE,
                      RT_CLICKS)
FEED_COLUMNS = (FEED_IDS, FEED_SCORES, FEED_VERSION)
# Views read per request (one entity row each) for the ranker's user and restaurant features.
CONTEXT_VIEWS = ("user_stats", "user_profile", "restaurant_stats", "restaurant_profile")
# On-demand features computed here (mirrors of feature_repo/on_demand.py).
DAY_OF_WEEK = "request_time__day_of_week"
PRICE_VS_BASKET = "price_vs_basket__price_vs_basket"
PRICE, BASKET = "item_profile__price", "user_stats__avg_basket_price_28d"
DEFAULT_PRICE_RATIO = 1.0  # feature_repo/on_demand.py
# Distinct candidate lists whose plans a model version keeps (~5 KB each at 200 candidates).
PLAN_CACHE_ENTRIES = 4096

# Degraded reasons (the fallback answering follows the colon).
UNKNOWN_USER = "unknown_user"
NO_CANDIDATES = "no_candidates"
VERSION_MISMATCH = "model_version_mismatch"
STORE_UNAVAILABLE = "store_unavailable"

_EMPTY: Mapping[str, float] = MappingProxyType({})


class StoreUnavailableError(RecsysError):
    """The online store failed or did not answer within the deadline."""


def feast_ref(column: str) -> str:
    """``user_stats__menu_ctr_28d`` -> ``user_stats:menu_ctr_28d``."""
    view, _, name = column.partition("__")
    return f"{view}:{name}"


def menu_columns(ranker: LinearRanker | None) -> tuple[str, ...]:
    """Every Feast column the menu read needs: model rows, real-time state, and the ranker's
    user / restaurant features (plus the basket mean when ``price_vs_basket`` is used)."""
    needed = list(ranker.input_columns) if ranker is not None else []
    if PRICE_VS_BASKET in needed:
        needed.append(BASKET)
    context = [c for c in needed if c.partition("__")[0] in CONTEXT_VIEWS]
    return tuple(dict.fromkeys([*MENU_MODEL_COLUMNS, *context]))


# ================================================================ stage 1: the online read
class OnlineReader:
    """One ``get_online_features`` call for one entity row, in a worker with a timeout.

    Input: an entity row (``{"user_id": 3, "restaurant_id": 12}``) and a timeout in seconds.
    Output: ``{full feature name: value}`` (None where the store has no value).
    Raises :class:`StoreUnavailableError` when the store errors or is slower than the timeout;
    the worker thread is left to finish on its own (the executor bounds how many can hang).
    """

    def __init__(self, store, columns: Sequence[str], executor: Executor):
        self.store = store
        self.columns = tuple(columns)
        self.refs = [feast_ref(c) for c in self.columns]
        self.executor = executor

    def _get(self, entity_row: Mapping[str, int]) -> dict[str, Any]:
        got = self.store.get_online_features(features=self.refs, entity_rows=[dict(entity_row)],
                                             full_feature_names=True).to_dict()
        return {c: got[c][0] for c in self.columns}

    def read(self, entity_row: Mapping[str, int], timeout: float) -> dict[str, Any]:
        future = self.executor.submit(self._get, entity_row)
        try:
            return future.result(timeout=max(timeout, 0.0))
        except FutureTimeout:
            future.cancel()
            raise StoreUnavailableError(f"online store: no answer within {timeout * 1000:.0f} ms") from None
        except Exception as exc:  # the store's own errors (redis, sqlite, feast): all mean "unavailable"
            raise StoreUnavailableError(f"online store: {type(exc).__name__}: {exc}") from None


# ================================================================ stage 2: parse the row
@dataclass(frozen=True)
class Realtime:
    """Real-time state of a restaurant's items (one row per restaurant, arrays aligned)."""

    item_ids: np.ndarray
    available: np.ndarray
    clicks_1h: np.ndarray


@dataclass(frozen=True)
class MenuInputs:
    """What one menu request knows after the read.

    ``context`` holds the user and restaurant features by full Feast name (scalars, None = null).
    """

    user_vector: np.ndarray | None
    user_version: str | None
    candidate_ids: np.ndarray  # (n,) int64, empty when the restaurant has no candidates row
    candidate_version: str | None
    realtime: Realtime | None
    context: Mapping[str, Any] = field(default_factory=dict)


def _ids(values) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int64)


def parse_menu(row: Mapping[str, Any]) -> MenuInputs:
    """Input: the row of :meth:`OnlineReader.read` (or the same names read offline)."""
    vector = row.get(USER_VECTOR)
    rt_ids = row.get(RT_IDS)
    realtime = None
    if rt_ids is not None and row.get(RT_AVAILABLE) is not None:
        clicks = row.get(RT_CLICKS)
        realtime = Realtime(_ids(rt_ids), _ids(row[RT_AVAILABLE]),
                            _ids(clicks) if clicks is not None else np.zeros(len(rt_ids), np.int64))
    context = {k: v for k, v in row.items() if k.partition("__")[0] in CONTEXT_VIEWS}
    return MenuInputs(
        user_vector=None if vector is None else np.asarray(vector, dtype=np.float32),
        user_version=row.get(USER_VERSION), candidate_ids=_ids(row.get(CAND_IDS)),
        candidate_version=row.get(CAND_VERSION), realtime=realtime, context=context)


def menu_fallback_reason(inputs: MenuInputs, version: str) -> str | None:
    """None when the model can answer; else why not (model-version contract first: never mixed)."""
    if inputs.user_vector is None:
        return UNKNOWN_USER
    if inputs.user_version != version:
        return VERSION_MISMATCH
    if len(inputs.candidate_ids) == 0:
        return NO_CANDIDATES
    if inputs.candidate_version != version:
        return VERSION_MISMATCH
    return None


# ================================================================ stages 3-5: score, rank, filter
@dataclass(frozen=True)
class Candidates:
    """Candidates with their greedy score (higher first), arrays aligned.

    ``explanation``: per candidate, its score components (only when asked for).
    """

    ids: np.ndarray  # (n,) int64
    score: np.ndarray  # (n,) float64
    embedding_score: np.ndarray  # (n,) float64
    explanation: tuple[Mapping[str, float], ...] | None = None

    def take(self, keep: np.ndarray) -> "Candidates":
        expl = None if self.explanation is None else tuple(self.explanation[i] for i in np.flatnonzero(keep))
        return Candidates(self.ids[keep], self.score[keep], self.embedding_score[keep], expl)


@dataclass(frozen=True)
class CandidatePlan:
    """What depends only on a candidate list and the model version: each candidate's row in the
    FAISS index (-1: not indexed) and in the scorer's item tables (None without a ranker)."""

    positions: np.ndarray
    prepared: Prepared | None


class CandidatePlans:
    """A bounded cache of :class:`CandidatePlan` by candidate list (its bytes: same ids, same plan).

    Why: a restaurant's candidate list is fixed for a model version (the precomputed row is the
    version's, by the model-version contract), and looking its 200 ids up in the index and the item
    table costs ~10 numpy calls per request. Oldest entries are evicted first; a miss computes the
    plan, so the cache changes cost, never results.
    """

    def __init__(self, index: ItemIndex, scorer: MenuScorer | None, capacity: int = PLAN_CACHE_ENTRIES):
        self.index, self.scorer, self.capacity = index, scorer, capacity
        self._plans: dict[bytes, CandidatePlan] = {}
        self._lock = threading.Lock()

    def get(self, ids: np.ndarray) -> CandidatePlan:
        key = ids.tobytes()
        plan = self._plans.get(key)
        if plan is None:
            plan = CandidatePlan(self.index.positions(ids), self.scorer.prepare(ids) if self.scorer else None)
            with self._lock:
                while len(self._plans) >= self.capacity > 0:
                    self._plans.pop(next(iter(self._plans)))
                if self.capacity > 0:
                    self._plans[key] = plan
        return plan

    def __len__(self) -> int:
        return len(self._plans)


@dataclass(frozen=True)
class MenuModel:
    """What the menu stages need from one model version (immutable once loaded, but for the cache
    of candidate plans)."""

    version: str
    index: ItemIndex
    ranker: LinearRanker | None
    items: ItemFeatureTable
    scorer: MenuScorer | None = field(init=False, default=None, repr=False, compare=False)
    plans: CandidatePlans = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ranker is not None:  # computation once per version (no I/O)
            object.__setattr__(self, "scorer", MenuScorer(self.ranker, self.items, CONTEXT_VIEWS,
                                                          (HOUR, DAY_OF_WEEK), row_columns=(PRICE,)))
        object.__setattr__(self, "plans", CandidatePlans(self.index, self.scorer))


def score_embeddings(index: ItemIndex, inputs: MenuInputs, keep_unknown: bool,
                     positions: np.ndarray | None = None) -> tuple[Candidates, tuple[Filtered, ...]]:
    """FAISS inner products of the user vector with exactly the candidate ids (O(n x dim)).

    Candidates the index does not hold (items the ALS model never saw: new or never clicked) get
    a NaN embedding score. ``keep_unknown`` (a ranker follows): they stay, and the ranker reads
    the NaN as a missing ``als_score`` exactly as in training (its default and ``als:is_missing``).
    Otherwise (no ranker) they stay too, after every scored item, in the order of the precomputed
    candidate list (popularity): a new item is still shown, never silently dropped.
    """
    result = index.score(inputs.user_vector, inputs.candidate_ids, positions)
    ids, score = inputs.candidate_ids, result.scores.astype(np.float64)
    if keep_unknown or result.known.all():
        return Candidates(ids, score, score), ()
    floor = float(score[result.known].min()) if result.known.any() else 0.0
    unknown = np.flatnonzero(~result.known)
    greedy = score.copy()
    greedy[unknown] = floor - 1.0 - np.arange(len(unknown)) * 1e-6
    return Candidates(ids, greedy, score), ()


def _broadcast(value: Any, n: int) -> np.ndarray:
    if isinstance(value, str):
        return np.full(n, value, dtype=object)
    return np.full(n, np.nan if value is None else float(value), dtype=np.float64)


def request_columns(request_ts: datetime) -> dict[str, float]:
    """The request-time on-demand features (``request_time``): UTC hour and weekday."""
    return {HOUR: float(request_ts.hour), DAY_OF_WEEK: float(request_ts.weekday())}


def price_vs_basket(price: np.ndarray, basket: Any) -> np.ndarray:
    """Item price / the user's 28d basket mean; the default where either is unknown."""
    basket = np.nan if basket is None or not basket > 0 else float(basket)
    ratio = np.asarray(price, dtype=np.float64) / basket
    return np.where(np.isnan(ratio), DEFAULT_PRICE_RATIO, ratio)


def feature_rows(items: ItemFeatureTable, inputs: MenuInputs, candidates: Candidates,
                 request_ts: datetime) -> dict[str, np.ndarray]:
    """The ranker's input rows for the candidates, under the training names (``ranker_v1``)."""
    n = len(candidates.ids)
    rows: dict[str, np.ndarray] = items.rows(candidates.ids)
    for name, value in {**inputs.context, **request_columns(request_ts)}.items():
        rows[name] = _broadcast(value, n)
    rows[ALS_SCORE] = candidates.embedding_score
    rows[PRICE_VS_BASKET] = price_vs_basket(rows.get(PRICE, np.full(n, np.nan)), inputs.context.get(BASKET))
    return rows


def candidate_columns(model: MenuModel, inputs: MenuInputs, candidates: Candidates, request_ts: datetime,
                      columns: Sequence[str], prepared: Prepared) -> dict[str, np.ndarray]:
    """Only ``columns`` of :func:`feature_rows` (the scorer's per-candidate part asks for these);
    ``prepared``: the candidates as the scorer prepared them (their item prices)."""
    if set(columns) <= {ALS_SCORE, PRICE_VS_BASKET}:
        out: dict[str, np.ndarray] = {ALS_SCORE: candidates.embedding_score}
        if PRICE_VS_BASKET in columns:
            out[PRICE_VS_BASKET] = price_vs_basket(prepared.value(PRICE), inputs.context.get(BASKET))
        return out
    return feature_rows(model.items, inputs, candidates, request_ts)


def rank(model: MenuModel, inputs: MenuInputs, candidates: Candidates, request_ts: datetime,
         explain: bool, prepared: Prepared | None = None) -> Candidates:
    """Greedy scores: the ranker's logit (position fixed at 0), or, for a version without a ranker,
    the embedding score alone (explanation ``ranker_missing = 1``). Without ``explain`` the logit
    comes from the model's :class:`~recsys.serving.scoring.MenuScorer` (the same score, in parts);
    with it, from the full design, whose per-feature contributions the explanation shows."""
    if model.ranker is None:
        expl = tuple(MappingProxyType({"embedding_score": float(e), "ranker_missing": 1.0})
                     for e in candidates.embedding_score) if explain else None
        return replace(candidates, explanation=expl)
    if not explain:
        score = model.scorer.score(
            prepared or model.scorer.prepare(candidates.ids), {**inputs.context, **request_columns(request_ts)},
            request_ts.hour, lambda columns, p: candidate_columns(model, inputs, candidates, request_ts, columns, p))
        return Candidates(candidates.ids, score, candidates.embedding_score)
    X = model.ranker.features_from_rows(feature_rows(model.items, inputs, candidates, request_ts), serving=True)
    score = model.ranker.score(X)
    names = model.ranker.feature_names
    contrib = model.ranker.contributions(X)
    expl = tuple(MappingProxyType({"embedding_score": float(candidates.embedding_score[i]),
                                   "ranker_score": float(score[i]), "ranker_bias": model.ranker.bias,
                                   **{f"contrib:{n}": float(c) for n, c in zip(names, contrib[i])}})
                 for i in range(len(score)))
    return Candidates(candidates.ids, score, candidates.embedding_score, expl)


def drop_unavailable(candidates: Candidates, realtime: Realtime | None) -> tuple[Candidates, tuple[Filtered, ...]]:
    """Remove items whose real-time ``available`` is 0 (unknown state: kept)."""
    if realtime is None or len(realtime.item_ids) == 0:
        return candidates, ()
    off = set(realtime.item_ids[realtime.available == 0].tolist())
    if not off:
        return candidates, ()
    drop = np.fromiter((i in off for i in candidates.ids.tolist()), dtype=bool, count=len(candidates.ids))
    return candidates.take(~drop), tuple(Filtered(str(i), "unavailable") for i in candidates.ids[drop])


def rank_menu_candidates(inputs: MenuInputs, model: MenuModel, request_ts: datetime,
                         explain: bool = False) -> tuple[Candidates, tuple[Filtered, ...]]:
    """Stages 3-5 (inputs already checked by :func:`menu_fallback_reason`)."""
    plan = model.plans.get(inputs.candidate_ids)
    scored, not_indexed = score_embeddings(model.index, inputs, keep_unknown=model.ranker is not None,
                                           positions=plan.positions)
    ranked = rank(model, inputs, scored, request_ts, explain, plan.prepared)
    available, unavailable = drop_unavailable(ranked, inputs.realtime)
    return available, not_indexed + unavailable


# ================================================================ stage 6: explore, top k
@dataclass(frozen=True)
class Exploration:
    """The exploration settings: share epsilon (0 allowed) and the seed of per-request draws."""

    epsilon: float
    seed: int


def present(candidates: Candidates, filters: tuple[Filtered, ...], request, exploration: Exploration, *,
            policy: str, degraded: bool = False, reason: str = "") -> RankedList:
    """Explore (one scheme: a uniform permutation with probability epsilon, exact propensities),
    then the top ``request.k``. ``request``: anything with ``request_id``, ``k`` and ``explain``."""
    shown = explore_top(candidates.score, candidates.ids, exploration.epsilon,
                        RequestDraws(exploration.seed, request.request_id), request.k)
    # Python scalars once per list (tolist), not a numpy scalar conversion per field and entry.
    shown_fields = zip(candidates.ids[shown.index].tolist(), candidates.score[shown.index].tolist(),
                       shown.propensity.tolist())
    if not request.explain:
        entries = tuple(Entry(str(id_), score, position, p, _EMPTY)
                        for position, (id_, score, p) in enumerate(shown_fields))
    else:
        entries = tuple(
            Entry(str(id_), score, position, p, MappingProxyType({
                **(candidates.explanation[i] if candidates.explanation else {}),
                "greedy_rank": float(greedy), "explored": float(shown.explored)}))
            for position, ((id_, score, p), i, greedy) in enumerate(zip(shown_fields, shown.index.tolist(),
                                                                        shown.greedy_rank.tolist())))
    return RankedList(request_id=request.request_id, model_version=policy, entries=entries, degraded=degraded,
                      degraded_reason=reason, filters=filters, n_candidates=len(candidates.ids))


def rank_menu(row: Mapping[str, Any], model: MenuModel, request, request_ts: datetime,
              exploration: Exploration) -> RankedList | str:
    """The whole menu path after the read: a list, or the fallback reason (a str) when the model
    cannot answer. What the offline evaluator calls with rows read offline."""
    inputs = parse_menu(row)
    reason = menu_fallback_reason(inputs, model.version)
    if reason is not None:
        return reason
    candidates, filters = rank_menu_candidates(inputs, model, request_ts, request.explain)
    return present(candidates, filters, request, exploration, policy=model.version)


# ================================================================ the feed
@dataclass(frozen=True)
class OpeningHours:
    """Each restaurant's opening hours [open_hour, close_hour) (the clean restaurants table)."""

    restaurant_ids: np.ndarray  # (R,) int64, ascending
    open_hour: np.ndarray
    close_hour: np.ndarray

    def is_open(self, ids: np.ndarray, hour: int) -> np.ndarray:
        """Unknown restaurants count as open (they are the model's to judge)."""
        at = np.minimum(np.searchsorted(self.restaurant_ids, ids), max(len(self.restaurant_ids) - 1, 0))
        known = self.restaurant_ids[at] == ids if len(self.restaurant_ids) else np.zeros(len(ids), bool)
        inside = (self.open_hour[at] <= hour) & (hour < self.close_hour[at])
        return ~known | inside


@dataclass(frozen=True)
class FeedInputs:
    restaurant_ids: np.ndarray | None  # None: no row for the user
    scores: np.ndarray
    version: str | None


def parse_feed(row: Mapping[str, Any]) -> FeedInputs:
    ids = row.get(FEED_IDS)
    scores = row.get(FEED_SCORES)
    return FeedInputs(None if ids is None else _ids(ids),
                      np.asarray(scores if scores is not None else [], dtype=np.float64), row.get(FEED_VERSION))


def feed_fallback_reason(inputs: FeedInputs, version: str) -> str | None:
    if inputs.restaurant_ids is None or len(inputs.restaurant_ids) == 0:
        return UNKNOWN_USER
    if inputs.version != version:
        return VERSION_MISMATCH
    return None


def drop_closed(inputs: FeedInputs, hours: OpeningHours, hour: int,
                explain: bool) -> tuple[Candidates, tuple[Filtered, ...]]:
    """The precomputed list in its order (its scores are the greedy scores), closed ones removed."""
    ids, scores = inputs.restaurant_ids, inputs.scores
    expl = tuple(MappingProxyType({"precomputed_score": float(s)}) for s in scores) if explain else None
    all_ = Candidates(ids, scores, scores, expl)
    is_open = hours.is_open(ids, hour)
    return all_.take(is_open), tuple(Filtered(str(i), "closed") for i in ids[~is_open])


def rank_feed(row: Mapping[str, Any], version: str, hours: OpeningHours, request, hour: int,
              exploration: Exploration) -> RankedList | str:
    """The whole feed path after the read: a list, or the fallback reason."""
    inputs = parse_feed(row)
    reason = feed_fallback_reason(inputs, version)
    if reason is not None:
        return reason
    candidates, filters = drop_closed(inputs, hours, hour, request.explain)
    return present(candidates, filters, request, exploration, policy=version)


def request_hour(context, request_ts: datetime) -> int:
    """The hour restaurants must be open at: ``context.local_hour``, else the request time's UTC hour."""
    return context.local_hour if context.local_hour is not None else request_ts.hour

