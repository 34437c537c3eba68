"""How hard is the simulated world? True values of reference policies, from the ground truth.

The simulator is tuned so that baselines mean something: a popularity policy should earn 30-60%
of the oracle's true-CTR lift over random, on both surfaces. :func:`reference_values` measures it
on the requests of a log (popularity counted on the log's first half, scored on its second half).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from recsys.ranking.exploration import rank_within_groups
from recsys.simulation.truth import GroundTruth, Surface

ENTITY = {"feed": "restaurant_id", "menu": "item_id"}


@dataclass(frozen=True)
class ReferenceValues:
    surface: str
    requests: int
    random: float
    popularity: float
    logging: float
    oracle: float

    @property
    def popularity_lift_share(self) -> float:
        """(popularity - random) / (oracle - random): the share of the oracle's lift."""
        return (self.popularity - self.random) / (self.oracle - self.random)

    def as_dict(self) -> dict:
        return {**asdict(self), "popularity_lift_share": self.popularity_lift_share}


def ranked_lists(truth: GroundTruth, requests: pl.DataFrame, surface: Surface, slots: int,
                 score_by_entity: np.ndarray) -> pl.DataFrame:
    """Lists ranking each request's true candidates by a per-entity score (higher first)."""
    requests = requests.unique("request_id", keep="first", maintain_order=True)
    user = requests["user_id"].to_numpy()
    ts = requests["ts"].dt.epoch("us").to_numpy()
    rest = requests["restaurant_id"].to_numpy() if surface == "menu" else None
    group, entity = truth.candidates(surface, user, ts, rest)
    rank = rank_within_groups(group, -score_by_entity[entity], entity)
    keep = rank < slots
    return pl.DataFrame({"request_id": requests["request_id"].to_numpy()[group[keep]],
                         "position": rank[keep].astype(np.int16), ENTITY[surface]: entity[keep]})


def popularity_scores(log: pl.DataFrame, surface: Surface, n_entities: int) -> np.ndarray:
    """Click counts per entity on one surface (the global popularity baseline)."""
    counts = (log.filter(pl.col("surface") == surface).group_by(ENTITY[surface])
              .agg(pl.col("clicked").sum().alias("clicks")))
    out = np.zeros(n_entities)
    out[counts[ENTITY[surface]].to_numpy()] = counts["clicks"].to_numpy()
    return out


def reference_values(truth: GroundTruth, log: pl.DataFrame, surface: Surface, slots: int) -> ReferenceValues:
    """True CTR per shown slot of random, popularity, the logged lists, and the oracle."""
    cut = log["ts"].min() + (log["ts"].max() - log["ts"].min()) / 2
    history, test = log.filter(pl.col("ts") < cut), log.filter((pl.col("ts") >= cut) & (pl.col("surface") == surface))
    requests = test.select("request_id", "ts", "user_id", "restaurant_id").unique("request_id", keep="first").sort("request_id")
    n_entities = truth.world.n_restaurants if surface == "feed" else truth.world.n_items
    popular = ranked_lists(truth, requests, surface, slots, popularity_scores(history, surface, n_entities))
    logged = test.select("request_id", "position", ENTITY[surface])
    return ReferenceValues(
        surface=surface,
        requests=requests.height,
        random=truth.random_reward(requests, surface, slots),
        popularity=truth.expected_reward(popular, requests, surface),
        logging=truth.expected_reward(logged, requests, surface),
        oracle=truth.expected_reward(truth.oracle_lists(requests, surface, slots), requests, surface),
    )
