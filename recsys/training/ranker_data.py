"""The ranker's training set: logged menu impressions joined point-in-time with Feast features.

Three time windows (:class:`Windows`), half-open, in order::

    ALS-train [start, t1)    ranker-train [t1, t2)    held-out [t2, end)

* the ALS model whose score the ranker learns from is fitted on ``[start, t1)`` only, so it has
  never seen an impression of the ranker's window (:func:`build_training_set` refuses a model
  whose ``trained_until`` is later than the window's start);
* each impression of ``[t1, t2)`` becomes one row: ``get_historical_features`` of the feature
  service ``ranker_v1`` (full feature names) at the impression's own timestamp, so a feature
  value stamped after the impression cannot reach its row (Feast's point-in-time join: latest
  row with ``event_timestamp <= ts`` within the view's ttl; stats snapshots are stamped at the
  midnight that ends the day they summarise), plus ``als_score``, ``position`` and the labels
  ``clicked`` / ``ordered``;
* held-out rows are built the same way, with the ALS model that serving would use then.

Cost: Feast's file (dask) offline store joins ~5k rows/s here (small world: ~45k ranker-window
impressions, ~10 s). ``negative_rate < 1`` keeps every click and a seeded share of the
non-clicks, with weight ``1 / negative_rate`` on the kept ones, so the weighted loss is unbiased;
the default keeps everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from recsys.simulation.truth import GroundTruth
from recsys.training.als import ALSModel
from recsys.training.errors import TrainingDataError
from recsys.training.interactions import build_interactions
from recsys.training.params import ALSParams, ConfidenceWeights

FEATURE_SERVICE = "ranker_v1"
ENTITY_KEYS = ("user_id", "restaurant_id", "item_id")
_ROW = "_row"
LOG_COLUMNS = ("request_id", "ts", "user_id", "restaurant_id", "item_id", "position", "propensity",
               "clicked", "ordered")


@dataclass(frozen=True)
class Windows:
    """ALS-train [start, t1), ranker-train [t1, t2), held-out [t2, end); all UTC-aware."""

    start: datetime
    t1: datetime
    t2: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "t1", "t2", "end"):
            if getattr(self, name).tzinfo is None:
                raise TrainingDataError(f"windows.{name}={getattr(self, name).isoformat()}: must be timezone-aware")
        if not self.start < self.t1 < self.t2 < self.end:
            raise TrainingDataError(f"windows must satisfy start < t1 < t2 < end, got {self.start.isoformat()}, "
                                    f"{self.t1.isoformat()}, {self.t2.isoformat()}, {self.end.isoformat()}")

    def as_dict(self) -> dict:
        return {k: getattr(self, k).isoformat() for k in ("start", "t1", "t2", "end")}


def menu_impressions(log: pl.LazyFrame | pl.DataFrame, since: datetime, until: datetime) -> pl.DataFrame:
    """Logged menu impressions with ``since <= ts < until``, sorted by (ts, request_id, position)."""
    lf = log.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in LOG_COLUMNS if c not in names]
    if missing:
        raise TrainingDataError(f"impressions log lacks columns {missing}")
    extra = ["n_candidates"] if "n_candidates" in names else []
    return (lf.filter((pl.col("surface") == "menu") & (pl.col("ts") >= since) & (pl.col("ts") < until))
            .select(*LOG_COLUMNS, *extra).sort("ts", "request_id", "position").collect())


def explored_requests(rows: pl.DataFrame) -> pl.Series:
    """Boolean per row: its request showed at least one entry away from the greedy position.

    An off-greedy entry has propensity ``epsilon / n <= 1 / n`` while a greedy one has
    ``(1 - epsilon) + epsilon / n > 1 / n``, so ``propensity * n <= 1`` detects it exactly (without
    knowing epsilon). Those requests showed a uniformly random permutation: position is
    independent of the item, which makes their clicks an unbiased yardstick for rankings.
    """
    if "n_candidates" in rows.columns:
        off = pl.col("propensity") * pl.col("n_candidates").cast(pl.Float64) <= 1.0 + 1e-9
    else:  # without n, any epsilon < 0.5 still separates the two kinds of entries
        off = pl.col("propensity") < 0.5
    return rows.select(off.any().over("request_id").alias("explored"))["explored"]


def sample_negatives(rows: pl.DataFrame, rate: float, seed: int) -> pl.DataFrame:
    """Keep every click and a seeded ``rate`` share of non-clicks; column ``weight`` = 1 or 1/rate."""
    if not 0.0 < rate <= 1.0:
        raise TrainingDataError(f"negative_rate={rate}: must be in (0, 1]")
    if rate == 1.0:
        return rows.with_columns(pl.lit(1.0).alias("weight"))
    keep = rows["clicked"].to_numpy() | (np.random.default_rng(seed).random(rows.height) < rate)
    return rows.filter(pl.Series(keep)).with_columns(
        pl.when(pl.col("clicked")).then(1.0).otherwise(1.0 / rate).alias("weight"))


@dataclass(frozen=True)
class TimedALS:
    """An ALS model and the cutoff of its training data (it saw only events with ts < trained_until)."""

    model: ALSModel
    trained_until: datetime


def fit_als(log: pl.LazyFrame | pl.DataFrame, params: ALSParams, seed: int, until: datetime,
            weights: ConfidenceWeights = ConfidenceWeights(), num_threads: int = 1,
            since: datetime | None = None) -> TimedALS:
    """Menu ALS on the events of ``[since, until)`` only (the time split the ranker relies on)."""
    data = build_interactions(log, "menu", weights, since=since, until=until)
    return TimedALS(ALSModel(params, seed=seed, num_threads=num_threads).fit(data), until)


def _unique_asof(ts: pl.Series) -> pl.Series:
    """Strictly increasing as-of times, each <= its ``ts`` (``ts`` sorted ascending).

    ``t'_i = i + min_{j >= i} (t_j - j)`` in microseconds: rows that share a timestamp are moved a
    few microseconds EARLIER, never later, so a point-in-time join at ``t'`` can never see a value
    stamped after the impression.
    """
    us = ts.dt.epoch("us").to_numpy().astype(np.int64)
    idx = np.arange(len(us), dtype=np.int64)
    asof = idx + np.minimum.accumulate((us - idx)[::-1])[::-1]
    return pl.Series("event_timestamp", asof).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


@dataclass(frozen=True)
class RetrievalCall:
    """One ``get_historical_features`` call: feature refs, the entity keys they need, and the
    column prefix (``<view>__``) whose columns this call is trusted for."""

    refs: tuple[str, ...]
    keys: tuple[str, ...]
    prefix: str


def retrieval_calls(store, service: str = FEATURE_SERVICE) -> list[RetrievalCall]:
    """The service split into one call per view (an on-demand view brings its source features).

    Why not one call for the whole service: Feast's file (dask) offline store drops the entity
    rows of a view that has rows for the entity but none inside [ts - ttl, ts] (for every view
    of the call, not just that one), and collapses entity rows that share the view's join keys
    and timestamp (items of one request). Per view, a missing value is just that view's null.
    """
    projections = store.get_feature_service(service).feature_view_projections
    odfvs = {v.name for v in store.list_on_demand_feature_views()}
    views = {p.name: store.get_feature_view(p.name) for p in projections if p.name not in odfvs}
    smallest = min(views, key=lambda n: len(views[n].features))
    calls = []
    for p in projections:
        own = tuple(f"{p.name_to_use()}:{f.name}" for f in p.features)
        if p.name in views:
            calls.append(RetrievalCall(own, tuple(views[p.name].join_keys), f"{p.name_to_use()}__"))
            continue
        sources = store.get_on_demand_feature_view(p.name).source_feature_view_projections
        if not sources:  # request-only on-demand views need a view in the call: take the smallest
            sources = {smallest: views[smallest].projection}
        refs = own + tuple(f"{n}:{f.name}" for n, sp in sources.items() for f in sp.features)
        keys = tuple(dict.fromkeys(k for n in sources for k in views[n].join_keys))
        calls.append(RetrievalCall(refs, keys, f"{p.name_to_use()}__"))
    return calls


def historical_features(store, rows: pl.DataFrame, service: str = FEATURE_SERVICE) -> tuple[pl.DataFrame, float]:
    """``rows`` (user_id, restaurant_id, item_id, ts, ...) with every feature of ``service`` as of
    each row's ``ts`` (point-in-time), full feature names, nulls where a view has no value within
    its ttl; same rows, same order. Returns (frame, seconds spent in Feast).

    Each call sends the distinct (keys, ts) of the rows once (a request's items share the user
    and restaurant rows), as of times made unique by :func:`_unique_asof`; ``request_ts`` is the
    impression's own timestamp.
    """
    seconds = 0.0
    out = rows.with_columns(*(pl.col(k).cast(pl.Int64) for k in ENTITY_KEYS))
    for call in retrieval_calls(store, service):
        values, spent = retrieve(store, out, call)
        seconds += spent
        out = out.join(values, on=[*call.keys, "ts"], how="left", maintain_order="left")
    if out.height != rows.height:
        raise TrainingDataError(f"historical retrieval returned {out.height} rows for {rows.height}")
    return out, seconds


def retrieve(store, rows: pl.DataFrame, call: RetrievalCall) -> tuple[pl.DataFrame, float]:
    """One call for the distinct (keys, ts) of ``rows``: a frame keys, ts, <view>__* and the seconds."""
    keys = list(call.keys)
    distinct = rows.select(*keys, "ts").unique(maintain_order=True).sort("ts", *keys)
    entity = distinct.select(*keys, _unique_asof(distinct["ts"]), pl.col("ts").alias("request_ts"),
                             pl.int_range(distinct.height, dtype=pl.Int64).alias(_ROW))
    started = time.perf_counter()
    job = store.get_historical_features(entity_df=entity.to_pandas(), features=list(call.refs),
                                        full_feature_names=True)
    got = pl.from_pandas(job.to_df())
    seconds = time.perf_counter() - started
    if _ROW not in got.columns or got[_ROW].n_unique() != got.height:
        raise TrainingDataError(f"historical retrieval of {call.prefix[:-2]} lost its row ids")
    cols = [c for c in got.columns if c.startswith(call.prefix)]
    values = distinct.with_columns(pl.int_range(distinct.height, dtype=pl.Int64).alias(_ROW)).join(
        got.select(_ROW, *cols), on=_ROW, how="left").drop(_ROW)
    return values, seconds


def add_als_score(rows: pl.DataFrame, als: ALSModel) -> pl.DataFrame:
    """Column ``als_score``: <x_u, y_i> of ``als``, null where the user or the item is unknown to it."""
    score = als.score(rows["user_id"].to_numpy(), rows["item_id"].to_numpy()).astype(np.float64)
    return rows.with_columns(pl.Series("als_score", score).fill_nan(None))


@dataclass(frozen=True)
class RankerRows:
    """Feature rows of logged impressions (or of candidates), ready for ``features_from_rows``."""

    frame: pl.DataFrame
    since: datetime
    until: datetime
    als_trained_until: datetime
    retrieval_seconds: float
    negative_rate: float = 1.0

    @property
    def n(self) -> int:
        return self.frame.height


def build_training_set(store, log: pl.LazyFrame | pl.DataFrame, als: TimedALS, since: datetime, until: datetime,
                       negative_rate: float = 1.0, seed: int = 0) -> RankerRows:
    """Menu impressions of ``[since, until)`` with Feast features, ``als_score``, ``weight`` and labels.

    Raises TrainingDataError if ``als`` was trained on data after ``since`` (it would have seen
    the impressions it scores) or if the window has no impressions.
    """
    trained_until = als.trained_until
    if trained_until > since:
        raise TrainingDataError(f"ALS trained until {trained_until.isoformat()} has seen impressions of the ranker "
                                f"window starting {since.isoformat()}: refit it on data before {since.isoformat()}")
    rows = menu_impressions(log, since, until)
    if rows.height == 0:
        raise TrainingDataError(f"no menu impressions in [{since.isoformat()}, {until.isoformat()})")
    rows = rows.with_columns(explored_requests(rows))
    rows = sample_negatives(rows, negative_rate, seed)
    rows, seconds = historical_features(store, rows)
    return RankerRows(add_als_score(rows, als.model), since, until, trained_until, seconds, negative_rate)


def menu_requests(log: pl.LazyFrame | pl.DataFrame, since: datetime, until: datetime, sample: int = 0,
                  seed: int = 0) -> pl.DataFrame:
    """Distinct menu requests (request_id, ts, user_id, restaurant_id) of a window, a seeded sample if > 0."""
    req = (log.lazy().filter((pl.col("surface") == "menu") & (pl.col("ts") >= since) & (pl.col("ts") < until))
           .group_by("request_id").agg(pl.col("ts").first(), pl.col("user_id").first(), pl.col("restaurant_id").first())
           .sort("request_id").collect())
    if sample and req.height > sample:
        pick = np.sort(np.random.default_rng(seed).choice(req.height, sample, replace=False))
        req = req[pick]
    return req


def candidate_rows(truth: GroundTruth, requests: pl.DataFrame) -> pl.DataFrame:
    """Every candidate of each menu request (all the restaurant's items): request_id, ts, user_id,
    restaurant_id, item_id, ``group`` (the request's index), in request order."""
    user = requests["user_id"].to_numpy().astype(np.int64)
    ts = requests["ts"].dt.epoch("us").to_numpy()
    rest = requests["restaurant_id"].to_numpy().astype(np.int64)
    group, item = truth.candidates("menu", user, ts, rest)
    return pl.DataFrame({"request_id": requests["request_id"].to_numpy()[group], "ts": requests["ts"].gather(group),
                         "user_id": user[group], "restaurant_id": rest[group], "item_id": item.astype(np.int64),
                         "group": group})


def rows_dict(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Columns as numpy: numbers as float64 with NaN for null, strings as object arrays (None = null)."""
    out: dict[str, np.ndarray] = {}
    for name, dtype in frame.schema.items():
        s = frame[name]
        if dtype.is_numeric() or dtype == pl.Boolean:
            out[name] = s.cast(pl.Float64).to_numpy()
        elif dtype == pl.Utf8:
            out[name] = np.asarray(s.to_list(), dtype=object)
    return out
