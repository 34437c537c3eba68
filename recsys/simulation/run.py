"""`recsys simulate`: build a world, write its public tables and an impressions log as Parquet.

Outputs (config.raw_dir): users.parquet (with raw PII, as upstream exports have it),
restaurants.parquet, items.parquet, impressions.parquet; and config.data_dir/truth/world.npz, the
hidden parameters the ground-truth API needs. Same config and seed, same bytes. Every file is
written to a temporary name and renamed, so a killed run leaves no half-written table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from recsys.config import Config
from recsys.simulation.sampler import LoggingSettings, draw_feed_requests, sample_impressions
from recsys.simulation.truth import GroundTruth
from recsys.simulation.world import World, build_world, items_table, restaurants_table, users_table


@dataclass(frozen=True)
class SimulationSummary:
    users: int
    restaurants: int
    items: int
    feed_requests: int
    impressions: int
    clicks: int
    orders: int
    seconds: float
    raw_dir: Path

    @property
    def events_per_second(self) -> float:
        return self.impressions / self.seconds if self.seconds else float("nan")


def world_path(config: Config) -> Path:
    return config.data_dir / "truth" / "world.npz"


def make_world(config: Config) -> World:
    sim = config.sim.resolved()
    return build_world(
        seed=config.seed,
        n_users=sim["n_users"],
        n_restaurants=sim["n_restaurants"],
        items_per_restaurant=sim["items_per_restaurant"],
        days=sim["days"],
        grid_size=sim["grid_size"],
        start_date=config.sim.start_date,
        taste_dim=config.sim.taste_dim,
        drift_day=config.sim.drift_day,
        drift_share=config.sim.drift_share,
        delivery_radius=config.sim.delivery_radius,
    )


def load_truth(config: Config) -> GroundTruth:
    """The ground truth of the world that `recsys simulate` wrote under config.data_dir."""
    return GroundTruth(World.load(world_path(config)))


def _write_frame(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.replace(path)


def simulate(config: Config, progress=None) -> SimulationSummary:
    """Simulate the marketplace described by ``config`` and write it under ``config.raw_dir``."""
    started = time.perf_counter()
    raw = config.raw_dir
    raw.mkdir(parents=True, exist_ok=True)
    world = make_world(config)
    world.save(world_path(config))
    _write_frame(users_table(world), raw / "users.parquet")
    _write_frame(restaurants_table(world), raw / "restaurants.parquet")
    _write_frame(items_table(world), raw / "items.parquet")

    sim = config.sim.resolved()
    feed_user, feed_ts = draw_feed_requests(world, sim["requests_per_user_day"], config.seed)
    settings = LoggingSettings(config.sim.epsilon, config.sim.feed_slots, config.sim.menu_slots)
    truth = GroundTruth(world)
    out = raw / "impressions.parquet"
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    impressions = clicks = orders = 0
    try:
        for frame in sample_impressions(truth, feed_user, feed_ts, settings, config.seed, config.sim.chunk_requests):
            table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            impressions += frame.height
            clicks += int(frame["clicked"].sum())
            orders += int(frame["ordered"].sum())
            if progress is not None:
                progress(frame.height)
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return SimulationSummary(
        users=world.n_users,
        restaurants=world.n_restaurants,
        items=world.n_items,
        feed_requests=len(feed_user),
        impressions=impressions,
        clicks=clicks,
        orders=orders,
        seconds=time.perf_counter() - started,
        raw_dir=raw,
    )
