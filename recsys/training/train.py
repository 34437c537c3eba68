"""The training step of the nightly pipeline, per surface:

time split -> hyperparameter search on the validation window -> the evaluation model (best
params, trained before the cutoff) measured on the held-out window, overall and per slice, beside
the popularity baseline -> the serving model (best params, trained on everything up to the end).

Slices (the gate's important slices): new users (signed up within ``NEW_USER_DAYS`` of the
held-out window), each cell band (rings of Chebyshev distance from the grid's centre), and each
cuisine (of the restaurant, or of the item's restaurant on the menu).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from recsys.config import Config
from recsys.simulation.truth import Surface
from recsys.training.als import ALSModel
from recsys.training.baselines import Popularity
from recsys.training.gate import slice_recall
from recsys.training.interactions import InteractionMatrix, build_interactions
from recsys.training.search import SearchResult, search, time_split

NEW_USER_DAYS = 14
CELL_BANDS = 3


@dataclass(frozen=True)
class SurfaceResult:
    surface: Surface
    model: ALSModel  # the serving model, trained on everything up to ``end``
    search: SearchResult
    metrics: dict[str, dict[str, float]]  # slice -> {"recall", "users"} of the evaluation model
    popularity: dict[str, float]  # overall {"recall", "users"} of popularity on the same window
    cutoff: Any
    end: Any

    def summary(self) -> dict[str, Any]:
        return {"params": self.model.hyper.model_dump(), "cutoff": self.cutoff.isoformat(),
                "end": self.end.isoformat(), "recall": self.metrics["overall"]["recall"],
                "popularity_recall": self.popularity["recall"]}


def cell_band(cells: np.ndarray, grid_size: int) -> np.ndarray:
    """0 (centre) .. CELL_BANDS-1 (outskirts): rings of Chebyshev distance from the centre."""
    row, col = np.divmod(np.asarray(cells), grid_size)
    centre = (grid_size - 1) / 2
    ring = np.maximum(abs(row - centre), abs(col - centre)) / max(centre, 1)
    return np.minimum((ring * CELL_BANDS).astype(int), CELL_BANDS - 1)


def _slices(config: Config, heldout: InteractionMatrix, surface: Surface, users: pl.DataFrame,
            restaurants: pl.DataFrame, items: pl.DataFrame, cutoff) -> tuple[dict, dict]:
    u = pl.DataFrame({"user_id": heldout.users.ids}).join(users, on="user_id", how="left", maintain_order="left")
    new = (u["signup_ts"] >= cutoff - timedelta(days=NEW_USER_DAYS)).fill_null(False).to_numpy()
    bands = cell_band(u["home_cell"].fill_null(0).to_numpy(), config.grid_size)
    user_slices = {"new_users": new, **{f"cell_band={b}": bands == b for b in range(CELL_BANDS)}}
    entity = pl.DataFrame({"id": heldout.entities.ids})
    if surface == "menu":
        entity = entity.join(items.select(pl.col("item_id").alias("id"), "restaurant_id"), on="id", how="left",
                             maintain_order="left")
    else:
        entity = entity.with_columns(restaurant_id=pl.col("id"))
    cuisine = entity.join(restaurants.select("restaurant_id", "cuisine"), on="restaurant_id", how="left",
                          maintain_order="left")["cuisine"].fill_null("unknown").to_numpy()
    entity_slices = {f"cuisine={c}": cuisine == c for c in sorted(set(cuisine))}
    return user_slices, entity_slices


def train_surface(config: Config, impressions: pl.LazyFrame, surface: Surface, users: pl.DataFrame,
                  restaurants: pl.DataFrame, items: pl.DataFrame) -> SurfaceResult:
    cfg = config.training
    split = time_split(impressions, surface, cfg.validation_days, cfg.weights)
    found = search(split, cfg.search, config.seed, cfg.k, cfg.num_threads, cfg.eval_users, cfg.shard_users)
    evaluation = ALSModel(found.best, config.seed, cfg.num_threads).fit(split.train)
    candidates = split.valid.entities.ids
    user_slices, entity_slices = _slices(config, split.valid, surface, users, restaurants, items, split.cutoff)
    metrics = slice_recall(evaluation, split.valid, config.gate.k, candidates, user_slices, entity_slices,
                           cfg.shard_users)
    popularity = Popularity().fit(split.train)
    pop = slice_recall(popularity, split.valid, config.gate.k, candidates, {}, {}, cfg.shard_users)["overall"]
    everything = build_interactions(impressions, surface, cfg.weights, until=split.end,
                                    user_ids=split.train.users.ids, entity_ids=split.train.entities.ids)
    final = ALSModel(found.best, config.seed, cfg.num_threads).fit(everything)
    return SurfaceResult(surface, final, found, metrics, pop, split.cutoff, split.end)
