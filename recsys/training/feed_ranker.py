"""The feed ranker: which restaurants a user sees, as a linear blend that batch precompute can
evaluate with one matrix product per cell.

    logit = w_als * <u, r> + w_aff * log share_u[cuisine_r] + w_ctr * dctr_r + w_rating * rating_r
            + w_price * price_level_r - w_dist * distance(u, r)  [+ w_pos * log1p(position) in training]

trained with logistic regression on logged feed impressions in the ranker window, with features
read point-in-time through Feast (``feed_ranker_v1``) and ALS scores from a model trained before
the window. Position is a training feature only (examination bias), fixed at serving. Because the
score is linear, :meth:`FeedRanker.scorer` folds it into the precompute's ``FeedScorer``:
user vectors ``[w_als u, w_aff log share_u]``, restaurant vectors ``[r, onehot(cuisine_r)]``, a
per-restaurant bias and a distance weight: the same ranking, at matrix-product cost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

from recsys.contracts.schemas import CUISINES
from recsys.precompute.inputs import FeedScorer, Vectors
from recsys.training.als import ALSModel

FEATURES = ("als", "cuisine_affinity", "restaurant_dctr", "rating", "price_level", "distance")
SERVICE = "feed_ranker_v1"
AFFINITY = "user_cuisine_affinity__shares"
DCTR = "restaurant_stats__feed_dctr_28d"
RATING = "restaurant_profile__rating"
PRICE = "restaurant_profile__price_level"
CUISINE = "restaurant_profile__cuisine"
CELL = "restaurant_profile__cell"
HOME = "user_profile__home_cell"
_CUISINE_INDEX = {c: i for i, c in enumerate(CUISINES)}
_FLOOR = 1e-4  # floor of shares and CTRs before the log


def cell_distance(a: np.ndarray, b: np.ndarray, grid_size: int) -> np.ndarray:
    """Euclidean distance in cells between cell ids on a grid_size x grid_size grid."""
    ar, ac = np.divmod(np.asarray(a, np.int64), grid_size)
    br, bc = np.divmod(np.asarray(b, np.int64), grid_size)
    return np.hypot(ar - br, ac - bc)


def cuisine_index(cuisines) -> np.ndarray:
    """Index of each cuisine in CUISINES order; -1 for unknown or null."""
    return np.array([_CUISINE_INDEX.get(c, -1) for c in cuisines], dtype=np.int64)


def log_affinity(shares, cuisine_idx: np.ndarray) -> np.ndarray:
    """log of each row's share of its restaurant's cuisine; uniform 1/len(CUISINES) when unknown."""
    out = np.full(len(cuisine_idx), np.log(1.0 / len(CUISINES)))
    for i, (row, c) in enumerate(zip(shares, cuisine_idx)):
        if row is not None and c >= 0 and len(row) > c:
            out[i] = np.log(max(float(row[c]), _FLOOR))
    return out


def design(rows: pl.DataFrame, als_scores: np.ndarray, grid_size: int, prior_ctr: float) -> np.ndarray:
    """The feature matrix (n, len(FEATURES)) from Feast rows (full feature names) and ALS scores."""
    c_idx = cuisine_index(rows[CUISINE].fill_null("unknown").to_list())
    dctr = rows[DCTR].fill_null(prior_ctr).to_numpy().astype(np.float64)
    return np.column_stack([
        np.nan_to_num(als_scores.astype(np.float64)),
        log_affinity(rows[AFFINITY].to_list(), c_idx),
        np.log(np.maximum(dctr, _FLOOR)),
        rows[RATING].fill_null(4.0).to_numpy().astype(np.float64),
        rows[PRICE].fill_null(2).to_numpy().astype(np.float64),
        cell_distance(rows[HOME].fill_null(0).to_numpy(), rows[CELL].fill_null(0).to_numpy(), grid_size),
    ])


@dataclass(frozen=True)
class FeedRanker:
    """Weights on the raw (unstandardised) features of :data:`FEATURES`; position excluded."""

    weights: dict[str, float]
    prior_ctr: float
    trained_until: str

    def score(self, X: np.ndarray) -> np.ndarray:
        return X @ np.array([self.weights[f] for f in FEATURES])

    def scorer(self, als: ALSModel, user_shares: pl.DataFrame, restaurants: pl.DataFrame) -> FeedScorer:
        """The precompute's FeedScorer ranking exactly as :meth:`score` (constants dropped).

        user_shares: user_id, shares (CUISINES order; null = unknown). restaurants: restaurant_id,
        cuisine, rating, price_level, dctr (null = prior).
        """
        w = self.weights
        users, rests = Vectors.from_model(als, "users"), Vectors.from_model(als, "entities")
        shares = (pl.DataFrame({"user_id": users.ids}).join(user_shares, on="user_id", how="left",
                                                              maintain_order="left")["shares"].to_list())
        uniform = np.full(len(CUISINES), 1.0 / len(CUISINES))
        log_shares = np.log(np.maximum(np.array([uniform if s is None else np.asarray(s, np.float64)
                                                 for s in shares]).reshape(len(users.ids), len(CUISINES)), _FLOOR))
        info = (pl.DataFrame({"restaurant_id": rests.ids}).join(restaurants, on="restaurant_id", how="left",
                                                                maintain_order="left"))
        c_idx = cuisine_index(info["cuisine"].fill_null("unknown").to_list())
        onehot = np.zeros((len(rests.ids), len(CUISINES)))
        known = c_idx >= 0
        onehot[np.flatnonzero(known), c_idx[known]] = 1.0
        # Unknown cuisine: the uniform log share, as in training, through the bias.
        dctr = np.log(np.maximum(info["dctr"].fill_null(self.prior_ctr).to_numpy().astype(np.float64), _FLOOR))
        bias = (w["restaurant_dctr"] * dctr + w["rating"] * info["rating"].fill_null(4.0).to_numpy()
                + w["price_level"] * info["price_level"].fill_null(2).to_numpy()
                + np.where(known, 0.0, w["cuisine_affinity"] * np.log(1.0 / len(CUISINES))))
        user_vectors = np.hstack([w["als"] * users.vectors.astype(np.float64), w["cuisine_affinity"] * log_shares])
        rest_vectors = np.hstack([rests.vectors.astype(np.float64), onehot])
        return FeedScorer(Vectors(users.ids, user_vectors.astype(np.float32)),
                          Vectors(rests.ids, rest_vectors.astype(np.float32)),
                          restaurant_bias=bias.astype(np.float64), distance_weight=-w["distance"])

    def save(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "FeedRanker":
        return cls(**json.loads(Path(path).read_text()))


def fit_feed_ranker(X: np.ndarray, position: np.ndarray, clicked: np.ndarray, seed: int,
                    trained_until: datetime, prior_ctr: float, c: float = 1.0,
                    sample_weight: np.ndarray | None = None) -> FeedRanker:
    """Logistic regression on standardised features + log1p(position); weights mapped back to the
    raw scale (the position term is dropped: serving fixes position)."""
    full = np.column_stack([X, np.log1p(position)])
    mean, scale = full.mean(axis=0), full.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit((full - mean) / scale, clicked,
                                                                       sample_weight=sample_weight)
    raw = model.coef_[0] / scale
    return FeedRanker({f: float(raw[i]) for i, f in enumerate(FEATURES)}, float(prior_ctr), trained_until.isoformat())


# ---------------------------------------------------------------- training and evaluation
@dataclass(frozen=True)
class FeedRankerResult:
    ranker: FeedRanker
    metrics: dict
    ships: bool
    reason: str


def _feed_rows(log: pl.LazyFrame, since: datetime, until: datetime) -> pl.DataFrame:
    return (log.filter((pl.col("surface") == "feed") & (pl.col("ts") >= since) & (pl.col("ts") < until))
            .select("request_id", "ts", "user_id", "restaurant_id", "position", "propensity", "n_candidates",
                    "clicked").collect().with_columns(item_id=pl.lit(None, dtype=pl.Int64)))


def _auc_per_request(scores: np.ndarray, clicked: np.ndarray, request: np.ndarray) -> float:
    """Mean over requests with both outcomes of the probability that a click outranks a non-click."""
    frame = pl.DataFrame({"r": request, "s": scores, "y": clicked.astype(np.int8)})
    frame = frame.with_columns(rank=pl.col("s").rank("average").over("r"))
    per = frame.group_by("r").agg(pos=pl.col("y").sum(), n=pl.len(), rank_sum=(pl.col("rank") * pl.col("y")).sum())
    per = per.filter((pl.col("pos") > 0) & (pl.col("pos") < pl.col("n")))
    neg = per["n"] - per["pos"]
    auc = (per["rank_sum"] - per["pos"] * (per["pos"] + 1) / 2) / (per["pos"] * neg)
    return float(auc.mean()) if len(auc) else float("nan")


def _true_ctr(truth, store, log: pl.LazyFrame, ranker: FeedRanker, als: ALSModel, grid_size: int, since, end,
              sample: int, seed: int) -> dict:
    """True CTR of the blend and of ALS-only on held-out feed requests, beside random, popularity
    (click counts before ``since``) and the oracle: each request's true candidates, ranked."""
    from recsys.ranking.exploration import rank_within_groups
    from recsys.simulation.calibration import popularity_scores
    from recsys.training.ranker_data import historical_features

    requests = (log.filter((pl.col("surface") == "feed") & (pl.col("ts") >= since) & (pl.col("ts") < end))
                .select("request_id", "ts", "user_id", "restaurant_id").unique("request_id").sort("request_id")
                .collect())
    if sample and requests.height > sample:
        requests = requests.sample(sample, seed=seed).sort("request_id")
    user, ts = requests["user_id"].to_numpy(), requests["ts"].dt.epoch("us").to_numpy()
    group, rest = truth.candidates("feed", user, ts)
    rows = pl.DataFrame({"user_id": user[group], "restaurant_id": rest, "item_id": pl.Series([None] * len(rest), dtype=pl.Int64),
                         "ts": pl.Series(ts[group]).cast(pl.Datetime("us", "UTC"))})
    rows, _ = historical_features(store, rows, SERVICE)
    als_scores = np.nan_to_num(als.score(user[group], rest))
    history = log.filter(pl.col("ts") < since).collect()
    scores = {
        "feed_ranker": ranker.score(design(rows, als_scores, grid_size, ranker.prior_ctr)),
        "als": als_scores,
        "popularity": popularity_scores(history, "feed", truth.world.n_restaurants)[rest],
    }
    out = {"requests": requests.height, "random": truth.random_reward(requests, "feed", 10),
           "oracle": truth.expected_reward(truth.oracle_lists(requests, "feed", 10), requests, "feed")}
    rid = requests["request_id"].to_numpy()
    for name, score in scores.items():
        rank = rank_within_groups(group, -score, rest)
        keep = rank < 10
        lists = pl.DataFrame({"request_id": rid[group[keep]], "position": rank[keep], "restaurant_id": rest[keep]})
        out[name] = truth.expected_reward(lists, requests, "feed")
    gap = out["oracle"] - out["popularity"]
    out["gap_closed"] = {n: (out[n] - out["popularity"]) / gap for n in ("feed_ranker", "als")}
    return out


def train_feed_ranker(config, store, log: pl.LazyFrame, als_params, seed: int, t1: datetime, t2: datetime,
                      end: datetime, truth=None) -> FeedRankerResult:
    """ALS before t1 -> blend trained on feed impressions in [t1, t2) with point-in-time features
    -> judged on [t2, end) against ALS-only (ALS before t2): per-request AUC on explored requests
    (positions there do not depend on the restaurant) and, on the simulator, true CTR."""
    from recsys.training.interactions import build_interactions
    from recsys.training.ranker_data import historical_features, sample_negatives

    weights, grid, settings = config.training.weights, config.grid_size, config.training.ranker
    als_t1 = ALSModel(als_params, seed, config.training.num_threads).fit(
        build_interactions(log, "feed", weights, until=t1))
    # Non-clicks sampled at settings.negative_rate and weighted back: Feast's point-in-time
    # retrieval is the cost of this step and grows with rows.
    rows = sample_negatives(_feed_rows(log, t1, t2), settings.negative_rate, seed)
    train, _ = historical_features(store, rows, SERVICE)
    prior = float(train[DCTR].mean() or 0.05)
    X = design(train, als_t1.score(train["user_id"].to_numpy(), train["restaurant_id"].to_numpy()), grid, prior)
    ranker = fit_feed_ranker(X, train["position"].to_numpy(), train["clicked"].to_numpy(), seed, t2, prior,
                             sample_weight=train["weight"].to_numpy())

    als_t2 = ALSModel(als_params, seed, config.training.num_threads).fit(
        build_interactions(log, "feed", weights, until=t2))
    held = _feed_rows(log, t2, end)
    held = held.filter(pl.col("propensity") * pl.col("n_candidates") <= 1.0 + 1e-9)  # explored entries
    held, _ = historical_features(store, held, SERVICE)
    als_scores = np.nan_to_num(als_t2.score(held["user_id"].to_numpy(), held["restaurant_id"].to_numpy()))
    request, clicked = held["request_id"].to_numpy(), held["clicked"].to_numpy()
    metrics = {"windows": {"t1": t1.isoformat(), "t2": t2.isoformat(), "end": end.isoformat()},
               "weights": ranker.weights, "heldout_rows": held.height,
               "auc": {"feed_ranker": _auc_per_request(ranker.score(design(held, als_scores, grid, prior)), clicked, request),
                       "als": _auc_per_request(als_scores, clicked, request)}}
    if truth is not None:
        metrics["true_ctr"] = _true_ctr(truth, store, log, ranker, als_t2, grid, t2, end,
                                        settings.eval_requests, seed)
    ships = metrics["auc"]["feed_ranker"] > metrics["auc"]["als"]
    reason = (f"held-out AUC {metrics['auc']['feed_ranker']:.4f} vs ALS-only {metrics['auc']['als']:.4f}"
              + (f"; true CTR gap closed {metrics['true_ctr']['gap_closed']['feed_ranker']:.0%} vs ALS-only "
                 f"{metrics['true_ctr']['gap_closed']['als']:.0%}" if truth is not None else ""))
    return FeedRankerResult(ranker, metrics, ships, reason)


def latest(path: Path, key: str, until: datetime, columns: list[str]) -> pl.DataFrame:
    """Each entity's latest row of an offline source stamped at or before ``until`` (what the online
    store holds after materializing up to ``until``)."""
    return (pl.scan_parquet(path).filter(pl.col("event_timestamp") <= until)
            .sort("event_timestamp").group_by(key).last().select(key, *columns).collect())
