"""The last-resort policy: popularity from the clean tables, with exploration and exact propensities.

- Menu: the restaurant's items by menu clicks (descending, ties by ascending id).
- Feed: restaurants that deliver to the user's cell (``context.cell``, else the user's home
  cell), by clicks from users of that cell, then by clicks overall, then by id; with no cell
  known, or no restaurant delivering there, every restaurant by clicks overall (backoff:
  ``explanation["backoff_global"] == 1``). When ``context.local_hour`` is given, closed
  restaurants are filtered out first (``filters``: reason ``closed``).

The top ``max_candidates`` of the greedy order are the candidates; exploration then follows the
one scheme of :mod:`recsys.ranking.exploration` (a uniformly random permutation with probability
``epsilon``), so ``propensity = (1 - epsilon) * [greedy puts it here] + epsilon / n`` exactly.
The random draw is seeded by (seed, request_id): a request can be replayed. Every list is flagged
``degraded`` with reason ``fallback:popularity``; unknown restaurants raise ``NotFoundError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.errors import DataContractError, NotFoundError
from recsys.serving.domain import (
    FailedPreconditionError, Filtered, InvalidArgumentError, ItemsRequest, RankedList,
    RestaurantsRequest,
)
from recsys.serving.stages import Candidates, Exploration, present

POLICY = "popularity"
REASON = "fallback:popularity"


@dataclass(frozen=True)
class _Tables:
    """Everything a request reads, built once by :meth:`PopularityRecommender.load` (immutable)."""

    rest_ids: np.ndarray  # (R,) int64, ascending
    rest_cell: np.ndarray  # (R,) int64
    open_hour: np.ndarray  # (R,) int64
    close_hour: np.ndarray  # (R,) int64
    rest_clicks: np.ndarray  # (R,) feed clicks overall
    cell_clicks: dict[int, dict[int, int]]  # user cell -> {restaurant index: feed clicks}
    menus: dict[int, tuple[np.ndarray, np.ndarray]]  # restaurant id -> (item ids, menu clicks)
    home_cell: dict[int, int]  # user id -> home cell
    loaded_at: datetime


def _parse_id(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


class PopularityRecommender:
    """Popularity lists from ``clean_dir`` (restaurants, items, users, impressions Parquet).

    Parameters
    ----------
    clean_dir : the validated tables (``Config.clean_dir``).
    grid_size, delivery_radius : the marketplace geometry (a restaurant delivers to cells within
        Chebyshev distance ``delivery_radius`` of its own).
    epsilon : exploration share, 0 allowed.
    max_candidates : candidates explored over (the ``n`` of ``epsilon / n``).
    seed : with the request id, seeds each request's exploration.
    """

    def __init__(self, clean_dir: str | Path, *, grid_size: int, delivery_radius: int, epsilon: float,
                 max_candidates: int = 50, seed: int = 0):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon={epsilon}: expected 0..1")
        self.clean_dir = Path(clean_dir)
        self.grid_size, self.delivery_radius = grid_size, delivery_radius
        self.epsilon, self.max_candidates = epsilon, max_candidates
        self.exploration = Exploration(epsilon, seed)
        self._tables: _Tables | None = None

    @classmethod
    def for_config(cls, config, settings) -> "PopularityRecommender":
        return cls(config.clean_dir, grid_size=config.grid_size, delivery_radius=config.precompute.delivery_radius,
                   epsilon=settings.epsilon, max_candidates=settings.popularity_candidates, seed=config.seed)

    # ---------------------------------------------------------------- loading
    def load(self) -> "PopularityRecommender":
        self._tables = self._read()
        return self

    def _read(self) -> _Tables:
        def table(name: str, columns: list[str]) -> pl.DataFrame:
            path = self.clean_dir / f"{name}.parquet"
            if not path.exists():
                raise DataContractError(f"{path}: missing (run `recsys validate` first)")
            return pl.read_parquet(path, columns=columns)

        rest = table("restaurants", ["restaurant_id", "cell", "open_hour", "close_hour"]).sort("restaurant_id")
        items = table("items", ["item_id", "restaurant_id"])
        users = table("users", ["user_id", "home_cell"])
        clicks = table("impressions", ["user_id", "surface", "restaurant_id", "item_id", "clicked"]).filter("clicked")
        feed = clicks.filter(pl.col("surface") == "feed")
        rest_clicks = (rest.select("restaurant_id")
                       .join(feed.group_by("restaurant_id").len("n"), on="restaurant_id", how="left")
                       ["n"].fill_null(0).to_numpy())
        index = {int(r): i for i, r in enumerate(rest["restaurant_id"].to_list())}
        cell_clicks: dict[int, dict[int, int]] = {}
        by_cell = (feed.join(users, on="user_id").group_by("home_cell", "restaurant_id").len("n"))
        for cell, rid, n in by_cell.iter_rows():
            if rid in index:
                cell_clicks.setdefault(int(cell), {})[index[rid]] = int(n)
        menu_clicks = clicks.filter(pl.col("surface") == "menu").group_by("item_id").len("n")
        menu = (items.join(menu_clicks, on="item_id", how="left").with_columns(pl.col("n").fill_null(0))
                .sort(["restaurant_id", "item_id"]))
        menus = {int(rid): (g["item_id"].to_numpy(), g["n"].to_numpy().astype(np.float64))
                 for (rid,), g in menu.group_by("restaurant_id", maintain_order=True)}
        return _Tables(
            rest_ids=rest["restaurant_id"].to_numpy(), rest_cell=rest["cell"].to_numpy().astype(np.int64),
            open_hour=rest["open_hour"].fill_null(0).to_numpy().astype(np.int64),
            close_hour=rest["close_hour"].fill_null(24).to_numpy().astype(np.int64),
            rest_clicks=rest_clicks.astype(np.float64), cell_clicks=cell_clicks, menus=menus,
            home_cell=dict(zip(users["user_id"].to_list(), users["home_cell"].to_list())),
            loaded_at=datetime.now(timezone.utc),
        )

    @property
    def tables(self) -> _Tables:
        if self._tables is None:
            raise FailedPreconditionError("PopularityRecommender: call load() before serving")
        return self._tables

    # ---------------------------------------------------------------- the Recommender protocol
    def recommend_items(self, request: ItemsRequest) -> RankedList:
        t = self.tables
        rid = _parse_id(request.restaurant_id)
        if rid is None or rid not in t.menus:
            if rid is not None and np.isin(rid, t.rest_ids):
                raise NotFoundError(f"restaurant_id={request.restaurant_id!r} has no items")
            raise NotFoundError(f"restaurant_id={request.restaurant_id!r} not found")
        item_ids, clicks = t.menus[rid]
        explain = [{"clicks": float(c)} for c in clicks] if request.explain else None
        return self._rank(request, item_ids, clicks, explain, ())

    def recommend_restaurants(self, request: RestaurantsRequest) -> RankedList:
        t = self.tables
        cell = request.context.cell
        n_cells = self.grid_size * self.grid_size
        if cell is not None and cell >= n_cells:
            raise InvalidArgumentError("context.cell", f"{cell} outside the {self.grid_size}x{self.grid_size} grid")
        if cell is None:
            uid = _parse_id(request.user_id)
            cell = t.home_cell.get(uid) if uid is not None else None
        candidates = np.arange(len(t.rest_ids))
        backoff = cell is None
        if cell is not None:
            near = np.flatnonzero(self._chebyshev(t.rest_cell, cell) <= self.delivery_radius)
            backoff = len(near) == 0
            candidates = candidates if backoff else near
        filtered: tuple[Filtered, ...] = ()
        hour = request.context.local_hour
        if hour is not None:
            is_open = (t.open_hour[candidates] <= hour) & (hour < t.close_hour[candidates])
            filtered = tuple(Filtered(str(t.rest_ids[i]), "closed") for i in candidates[~is_open])
            candidates = candidates[is_open]
        if len(candidates) == 0:
            raise NotFoundError(f"no restaurant open at hour {hour} delivers to cell {cell}")
        local = t.cell_clicks.get(cell, {}) if cell is not None else {}
        cell_n = np.array([local.get(int(i), 0) for i in candidates], dtype=np.float64)
        global_n = t.rest_clicks[candidates]
        # one score giving the order (cell clicks, then clicks overall): the second is a fraction < 1
        score = cell_n + global_n / (t.rest_clicks.max(initial=0.0) + 1.0)
        explain = [{"cell_clicks": float(c), "global_clicks": float(g), "backoff_global": float(backoff)}
                   for c, g in zip(cell_n, global_n)] if request.explain else None
        return self._rank(request, t.rest_ids[candidates], score, explain, filtered)

    def model_info(self) -> dict[str, str]:
        t = self.tables
        return {"model_version": POLICY, "policy": POLICY, "epsilon": f"{self.epsilon:g}",
                "max_candidates": str(self.max_candidates), "restaurants": str(len(t.rest_ids)),
                "items": str(sum(len(ids) for ids, _ in t.menus.values())),
                "loaded_at": t.loaded_at.isoformat(), "source": str(self.clean_dir)}

    def reload(self) -> str:
        self._tables = self._read()  # one reference swap: requests in flight keep the old tables
        return POLICY

    def rollback(self) -> str:
        raise FailedPreconditionError("the popularity policy has no previous version to roll back to")

    # ---------------------------------------------------------------- ranking
    def _chebyshev(self, cells: np.ndarray, cell: int) -> np.ndarray:
        (r1, c1), (r2, c2) = np.divmod(cells, self.grid_size), divmod(int(cell), self.grid_size)
        return np.maximum(np.abs(r1 - r2), np.abs(c1 - c2))

    def _rank(self, request, ids: np.ndarray, score: np.ndarray, explain: list[dict[str, float]] | None,
              filtered: tuple[Filtered, ...]) -> RankedList:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > self.max_candidates:  # candidates: the greedy top max_candidates
            keep = np.sort(np.lexsort((ids, -score))[:self.max_candidates])
            ids, score = ids[keep], score[keep]
            explain = [explain[i] for i in keep] if explain is not None else None
        expl = tuple(explain) if explain is not None else None
        return present(Candidates(ids, score, score, expl), filtered, request, self.exploration, policy=POLICY,
                       degraded=True, reason=REASON)
