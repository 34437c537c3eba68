"""Serving settings: one frozen section of the configuration (``Config.serving``).

Paths that are relative are resolved against ``Config.data_dir`` by :func:`resolve_dir`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class ServingConfig(BaseModel):
    """The gRPC server, its limits, its event log and the sink that lands the log as Parquet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)  # processes sharing the port (SO_REUSEPORT)
    threads: int = Field(default=16, ge=1)  # handler threads per process
    max_concurrent_rpcs: int = Field(default=256, ge=1)
    grace_seconds: float = Field(default=5.0, ge=0)  # for in-flight calls on shutdown
    # Which policy answers: "model" (the registry's serving version: FAISS + ranker, popularity as
    # the flagged fallback), "popularity" (the fallback alone), "auto" (model when a version serves).
    policy: Literal["auto", "model", "popularity"] = "auto"
    # Model path: the online read's timeout when the call's deadline is longer, the registry
    # pointer's polling period for hot reload (0: no watcher), the last-known-good LRU's size.
    store_timeout_ms: float = Field(default=250.0, gt=0)
    reload_poll_seconds: float = Field(default=1.0, ge=0)
    last_known_good_entries: int = Field(default=100_000, ge=0)
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)  # exploration share (DESIGN.md)
    # ---- A/B arms: ab_share of users (by a hash of the user id salted with ab_salt) are served by
    # ab_version, a registry version loaded beside the serving one; the rest by the serving one.
    # The salt defaults to ab_version, so each new treatment gets a fresh split of the users.
    ab_version: str | None = None
    ab_share: float = Field(default=0.0, ge=0.0, le=1.0)
    ab_salt: str | None = Field(default=None, min_length=1)
    # ---- feature sampling: this share of requests (by request id) logs the ranker's input rows ----
    feature_sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    popularity_candidates: int = Field(default=50, ge=1)  # candidates the fallback explores over
    # ---- request limits (bad input is INVALID_ARGUMENT naming the field) ----
    k_max: int = Field(default=100, ge=1)
    max_id_length: int = Field(default=128, ge=1)
    max_feedback_events: int = Field(default=1000, ge=1)
    max_request_bytes: int = Field(default=64 << 10, ge=1024)  # checked per request
    max_message_bytes: int = Field(default=1 << 20, ge=1024)  # transport cap: RESOURCE_EXHAUSTED
    min_time_left_ms: float = Field(default=1.0, ge=0)  # less than this left: DEADLINE_EXCEEDED
    # ---- admin (Reload, Rollback): None disables them (PERMISSION_DENIED) ----
    admin_token: SecretStr | None = None
    # ---- observability ----
    metrics_port: int | None = Field(default=9464, ge=0, le=65535)  # + worker index; None: off
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # ---- event log and sink ----
    event_log_dir: Path = Path("events")  # one sub-directory per worker: worker-<i>
    segment_bytes: int = Field(default=64 << 20, ge=1024)
    sink_dir: Path = Path("impressions_log")  # date=YYYY-MM-DD/part-0.parquet
    sink_state: Path = Path("sink/state.json")
    # Feedback for a served list is joined while it arrives within this window after the
    # request; a day is landed once the newest event in the log is this far past its end.
    lateness_minutes: float = Field(default=60.0, ge=0)
    sink_id_type: Literal["int64", "string"] = "int64"  # id columns of the landed log
    feature_samples_dir: Path = Path("feature_samples")  # date=YYYY-MM-DD/part-0.parquet

    @model_validator(mode="after")
    def _ab_needs_a_version(self) -> "ServingConfig":
        if self.ab_share > 0 and self.ab_version is None:
            raise ValueError(f"ab_share={self.ab_share} needs ab_version (the treatment's registry version)")
        return self

    @property
    def ab_key(self) -> str:
        """The salt of the user split: ``ab_salt``, else ``ab_version``."""
        return self.ab_salt or self.ab_version or ""


def resolve_dir(data_dir: Path, path: Path) -> Path:
    """``path`` if absolute, else under ``data_dir``."""
    return path if path.is_absolute() else Path(data_dir) / path


def serving_config(config) -> ServingConfig:
    """``config.serving``."""
    return config.serving
