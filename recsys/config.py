"""One typed, frozen configuration, built at the entry point and passed down.

Sources, later ones winning:
1. defaults in this module;
2. a TOML file (``--config PATH`` or ``RECSYS_CONFIG``), sections matching the models below;
3. environment variables ``RECSYS_<FIELD>`` for top-level fields and
   ``RECSYS_<SECTION>__<FIELD>`` for nested ones (e.g. ``RECSYS_SIM__N_USERS=5000``).

Unknown keys are an error (a typo must not be silently ignored). Nothing below the entry point
reads the environment: it receives a :class:`Config`.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsys.errors import ConfigError
from recsys.serving.settings import ServingConfig
from recsys.training.params import TrainingConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "RECSYS_"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


SizeName = Literal["tiny", "small", "medium", "large", "xl"]

# Sizes from the test world to the 1M users / 50k restaurants / 2M items / ~50M impressions one.
# requests_per_user_day: mean feed requests per user per day before activity and seasonality.
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_users=400, n_restaurants=60, items_per_restaurant=12, days=14, grid_size=6,
                 requests_per_user_day=0.6),
    "small": dict(n_users=3_000, n_restaurants=300, items_per_restaurant=20, days=28, grid_size=12,
                  requests_per_user_day=0.5),
    "medium": dict(n_users=50_000, n_restaurants=3_000, items_per_restaurant=30, days=28, grid_size=30,
                   requests_per_user_day=0.4),
    "large": dict(n_users=200_000, n_restaurants=10_000, items_per_restaurant=40, days=28, grid_size=60,
                  requests_per_user_day=0.3),
    "xl": dict(n_users=1_000_000, n_restaurants=50_000, items_per_restaurant=40, days=28, grid_size=100,
               requests_per_user_day=0.15),
}


class SimConfig(_Frozen):
    """Size and behaviour of the simulated marketplace (see docs/SIMULATOR.md)."""

    size: SizeName = "small"
    n_users: int | None = Field(default=None, gt=0)
    n_restaurants: int | None = Field(default=None, gt=0)
    items_per_restaurant: int | None = Field(default=None, gt=0)
    days: int | None = Field(default=None, gt=0)
    grid_size: int | None = Field(default=None, gt=0)
    start_date: date = date(2026, 10, 1)
    requests_per_user_day: float | None = Field(default=None, gt=0)
    taste_dim: int = Field(default=16, gt=1)
    delivery_radius: int = Field(default=2, ge=0)
    feed_slots: int = Field(default=10, gt=0)
    menu_slots: int = Field(default=8, gt=0)
    # Exploration of the logging policy: share of requests that show a uniformly random
    # permutation of their candidates (both surfaces).
    epsilon: float = Field(default=0.2, ge=0.0, le=1.0)
    drift_day: int | None = Field(default=None, ge=0)
    drift_share: float = Field(default=0.1, ge=0.0, le=1.0)
    # Feed requests simulated per vectorised chunk (memory ~ chunk x candidates).
    chunk_requests: int = Field(default=50_000, gt=0)

    def resolved(self) -> dict[str, Any]:
        """The size preset with explicit overrides applied."""
        out = dict(SIZE_PRESETS[self.size])
        for key in out:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class ValidationConfig(_Frozen):
    max_bad_share: float = Field(default=0.01, ge=0.0, le=1.0)
    # PII columns of the users table: hashed (salted SHA-256, for joins) or dropped.
    pii_mode: Literal["hash", "drop"] = "drop"
    pii_columns: tuple[str, ...] = ("name", "email", "phone")
    pii_salt: str = "recsys-pii-v1"
    forbidden_attributes: tuple[str, ...] = ("sex", "gender", "age", "race", "ethnicity", "religion")


class FeaturesConfig(_Frozen):
    windows_days: tuple[int, ...] = (1, 7, 28)
    # Beta prior strength for smoothed CTR: (clicks + k * prior) / (impressions + k).
    ctr_prior_strength: float = Field(default=20.0, gt=0)
    registry_cache_ttl_seconds: int = Field(default=3600, ge=0)


class PrecomputeConfig(_Frozen):
    """Batch predictions: each user's restaurants, each restaurant's candidate items."""

    top_k_restaurants: int = Field(default=50, gt=0)
    candidate_items_cap: int = Field(default=200, gt=0)
    # Marketplace geometry: cells are ids on a grid_size x grid_size grid (None: the simulator's).
    grid_size: int | None = Field(default=None, gt=0)
    delivery_radius: int = Field(default=2, ge=0)
    shard_users: int = Field(default=50_000, gt=0)


class GateConfig(_Frozen):
    """The quality gate a candidate model must pass before serving."""

    k: int = Field(default=10, gt=0)
    # Relative tolerance for regressions against the serving model (overall and per slice).
    tolerance: float = Field(default=0.03, ge=0.0)
    slice_tolerance: float = Field(default=0.10, ge=0.0)
    min_slice_users: int = Field(default=30, gt=0)
    max_factor_norm: float = Field(default=1e3, gt=0)


class MonitoringConfig(_Frozen):
    """`recsys monitor`: drift thresholds and what a drift alert triggers (docs/MONITORING.md)."""

    # Cuisine features (PSI/KS): days of a user's own clicks their day is compared with.
    baseline_days: int = Field(default=7, gt=0)
    # PSI/KS: a day is compared with the same weekday of up to this many earlier weeks.
    reference_weeks: int = Field(default=4, gt=0)
    # Surprise-shift alert: one-sided z above this (docs/MONITORING.md, "Why 3.5").
    surprise_z_alert: float = Field(default=3.5, gt=0)
    psi_alert: float = Field(default=0.2, gt=0)
    ks_pvalue: float = Field(default=0.01, gt=0, lt=1)
    ks_min_statistic: float = Field(default=0.1, gt=0, le=1)
    # Fewest rows for a PSI/KS comparison.
    min_rows: int = Field(default=30, gt=0)
    # Run on a drift alert (argv, no shell), e.g. ["recsys", "nightly"]; None: alert only. A
    # string (an environment variable) is split like a shell would.
    retrain_command: tuple[str, ...] | None = None
    retrain_timeout_seconds: float = Field(default=6 * 3600.0, gt=0)

    @field_validator("retrain_command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("retrain_command")
    @classmethod
    def _check_command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or not value[0]):
            raise ValueError("retrain_command: empty; leave it unset to alert without retraining")
        return value


class Config(_Frozen):
    data_dir: Path = Path("data")
    feature_repo: Path = PROJECT_ROOT / "feature_repo"
    project: str = "recsys"
    # "sqlite" (embedded default), "redis://host:port[/db]", or a Feast Redis connection
    # string such as "host:port,password=...,ssl=true".
    online_store: str = "sqlite"
    seed: int = 7
    sim: SimConfig = SimConfig()
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    training: TrainingConfig = TrainingConfig()
    precompute: PrecomputeConfig = PrecomputeConfig()
    gate: GateConfig = GateConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @field_validator("online_store")
    @classmethod
    def _check_online_store(cls, value: str) -> str:
        if value == "sqlite" or value.startswith("redis://") or ":" in value:
            return value
        raise ValueError(
            f"online_store={value!r}: expected 'sqlite', 'redis://host:port[/db]' "
            "or a Feast Redis connection string 'host:port[,password=...]'"
        )

    @model_validator(mode="after")
    def _check_project(self) -> "Config":
        if not self.project.isidentifier():
            raise ValueError(f"project={self.project!r} must be an identifier (Feast project name)")
        return self

    # ---- derived paths: the data directory layout, in one place ----
    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def clean_dir(self) -> Path:
        return self.data_dir / "clean"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def offline_dir(self) -> Path:
        """Feast offline sources (Parquet); FileSource paths are relative to data_dir."""
        return self.data_dir / "offline"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def grid_size(self) -> int:
        """The marketplace grid (precompute.grid_size, else the simulated world's)."""
        return self.precompute.grid_size or self.sim.resolved()["grid_size"]

    @property
    def uses_redis(self) -> bool:
        return self.online_store != "sqlite"

    def with_overrides(self, **changes: Any) -> "Config":
        """A copy with fields replaced (nested sections as dicts, None values ignored), validated."""
        changes = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
                   for k, v in changes.items() if v is not None}
        try:
            return Config.model_validate(_deep_merge(self.model_dump(), changes))
        except ValidationError as exc:
            raise ConfigError(f"invalid configuration: {_describe(exc)}") from None


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if path[0] not in Config.model_fields:
            # RECSYS_TEST_* and similar belong to other tools; only known sections are ours.
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build the configuration from defaults, a TOML file, the environment and overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = path or (Path(environ[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in environ else None)
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    data = _deep_merge(data, _env_overrides(environ))
    data = _deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}={err.get('input')!r}: {err['msg']}"
                     for err in exc.errors())
