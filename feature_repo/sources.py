"""Offline sources: Parquet files under ``<data_dir>/offline``.

Paths are RELATIVE: Feast resolves them against ``RepoConfig.repo_path``, which the application
sets to ``config.data_dir`` (recsys.features.store). Stats and profile files are written by
``recsys features build``; the model-derived files (embeddings, top lists, candidates) by the
training and publishing jobs; ``restaurant_realtime`` by the online updater's sink.
"""

from feast import FileSource, PushSource, RequestSource
from feast.types import UnixTimestamp
from feast import Field


def _parquet(name: str) -> FileSource:
    return FileSource(
        name=f"{name}_source",
        path=f"offline/{name}.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"Parquet offline source of the {name} feature view.",
    )


# Daily statistics snapshots and static profiles (recsys.features.stats).
user_stats_source = _parquet("user_stats")
restaurant_stats_source = _parquet("restaurant_stats")
item_stats_source = _parquet("item_stats")
user_cuisine_affinity_source = _parquet("user_cuisine_affinity")
user_profile_source = _parquet("user_profile")
restaurant_profile_source = _parquet("restaurant_profile")
item_profile_source = _parquet("item_profile")

# Model-derived rows, each carrying the model_version that produced it.
user_embedding_source = _parquet("user_embedding")
item_embedding_source = _parquet("item_embedding")
user_top_restaurants_source = _parquet("user_top_restaurants")
restaurant_candidates_source = _parquet("restaurant_candidates")

# Real-time per-restaurant state: pushed online by the online updater, landed in batch here.
restaurant_realtime_batch_source = _parquet("restaurant_realtime")
restaurant_realtime_push = PushSource(
    name="restaurant_realtime_push",
    batch_source=restaurant_realtime_batch_source,
    description="Micro-batches of per-restaurant item availability and last-hour clicks.",
)

# Request-time inputs of on-demand views.
request_context = RequestSource(
    name="request_context",
    schema=[Field(name="request_ts", dtype=UnixTimestamp)],
    description="Values known only when the request arrives.",
)
