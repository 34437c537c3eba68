"""The Feast store, built from our :class:`~recsys.config.Config` (never from the environment).

- :func:`repo_config` is pure: Config in, ``feast.RepoConfig`` out.
- :func:`open_store` does the I/O (registry, online store client). Keep ONE store per process:
  the registry is cached for ``features.registry_cache_ttl_seconds``.
- :func:`load_definitions` executes the feature repo's modules (``config.feature_repo``) and
  collects their Feast objects; :func:`apply` checks them for forbidden attributes and registers
  them (the same diff as ``feast apply``); :func:`materialize` loads the stats and profile views.

The registry lives at ``<data_dir>/registry.db``; SQLite online store at ``<data_dir>/online.db``;
``repo_path = data_dir`` so the feature repo's relative FileSource paths (``offline/...``)
resolve under the data directory.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable
from urllib.parse import unquote, urlsplit

from recsys.config import Config
from recsys.errors import ConfigError, FeatureStoreError

if TYPE_CHECKING:  # feast is slow to import; modules that only need the config stay light
    from feast import FeatureStore, RepoConfig
    from feast.repo_contents import RepoContents

# Views filled from the offline Parquet written by `recsys features build`.
MATERIALIZED_VIEWS = (
    "user_stats",
    "user_cuisine_affinity",
    "restaurant_stats",
    "item_stats",
    "user_profile",
    "restaurant_profile",
    "item_profile",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def redis_connection_string(online_store: str) -> str:
    """Translate ``redis://[:password@]host:port[/db]`` (or ``rediss://``) to Feast's form.

    Feast's Redis store expects ``host:port[,db=N][,password=...][,ssl=true]``; a string that is
    already in that form is returned unchanged.
    """
    if not online_store.startswith(("redis://", "rediss://")):
        return online_store
    parts = urlsplit(online_store)
    if not parts.hostname:
        raise ConfigError(f"online_store={online_store!r}: no host in the Redis URL")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigError(f"online_store={online_store!r}: bad port") from None
    out = [f"{parts.hostname}:{port}"]
    db = parts.path.strip("/")
    if db:
        if not db.isdigit():
            raise ConfigError(f"online_store={online_store!r}: database {db!r} is not a number")
        out.append(f"db={int(db)}")
    if parts.username:
        out.append(f"username={unquote(parts.username)}")
    if parts.password:
        out.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        out.append("ssl=true")
    return ",".join(out)


def repo_config(config: Config) -> "RepoConfig":
    """The Feast ``RepoConfig`` for ``config`` (pure: no I/O)."""
    from feast import RepoConfig
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig

    data_dir = Path(config.data_dir).resolve()
    if config.uses_redis:
        online = RedisOnlineStoreConfig(connection_string=redis_connection_string(config.online_store))
    else:
        online = SqliteOnlineStoreConfig(path=str(data_dir / "online.db"))
    return RepoConfig(
        project=config.project,
        provider="local",
        registry=RegistryConfig(
            registry_type="file",
            path=str(data_dir / "registry.db"),
            cache_ttl_seconds=config.features.registry_cache_ttl_seconds,
        ),
        online_store=online,
        offline_store=DaskOfflineStoreConfig(),
        entity_key_serialization_version=3,
        repo_path=data_dir,
    )


def open_store(config: Config) -> "FeatureStore":
    """A ``feast.FeatureStore`` for ``config`` (creates the data directory; one per process)."""
    from feast import FeatureStore

    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    try:
        return FeatureStore(config=repo_config(config))
    except Exception as exc:  # Feast raises many unrelated types; name the store that failed
        raise FeatureStoreError(f"cannot open the Feast store ({config.online_store}): {exc}") from exc


def _repo_modules(repo: Path) -> list[str]:
    from feast.repo_operations import get_repo_files

    return [
        ".".join(path.relative_to(repo).with_suffix("").parts)
        for path in get_repo_files(repo)
    ]


def load_definitions(config: Config) -> "RepoContents":
    """Execute the modules of ``config.feature_repo`` and collect their Feast objects.

    Like ``feast apply`` the repo directory is put on ``sys.path`` (its modules import each other
    as ``from entities import user``); unlike it, nothing changes the working directory and the
    modules are executed afresh on every call and removed from ``sys.modules`` afterwards, so two
    repos can be loaded in one process.
    """
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, Project, PushSource
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    repo = Path(config.feature_repo).resolve()
    if not (repo / "feature_store.yaml").exists() and not repo.is_dir():
        raise ConfigError(f"feature_repo={repo}: not a directory")
    names = _repo_modules(repo)
    if not names:
        raise ConfigError(f"feature_repo={repo}: no Python modules found")
    tops = {n.split(".")[0] for n in names}
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in tops}
    for n in saved:
        del sys.modules[n]
    sys.path.insert(0, str(repo))
    try:
        modules = [importlib.import_module(n) for n in names]
    except Exception as exc:
        raise FeatureStoreError(f"feature_repo={repo}: cannot import definitions: {exc}") from exc
    finally:
        sys.path.remove(str(repo))
        for n in [n for n in sys.modules if n.split(".")[0] in tops]:
            del sys.modules[n]
        sys.modules.update(saved)

    out = RepoContents(
        projects=[], data_sources=[], entities=[], feature_views=[], feature_services=[],
        on_demand_feature_views=[], stream_feature_views=[], label_views=[], permissions=[],
    )

    def add(bucket: list, obj: object) -> None:
        if not any(obj is o for o in bucket):
            bucket.append(obj)

    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, OnDemandFeatureView):
                add(out.on_demand_feature_views, obj)
            elif isinstance(obj, FeatureView):
                add(out.feature_views, obj)
                if obj.batch_source is not None:
                    add(out.data_sources, obj.batch_source)
                if obj.stream_source is not None:
                    add(out.data_sources, obj.stream_source)
            elif isinstance(obj, DataSource):
                add(out.data_sources, obj)
                if isinstance(obj, PushSource) and obj.batch_source is not None:
                    add(out.data_sources, obj.batch_source)
            elif isinstance(obj, Entity):
                add(out.entities, obj)
            elif isinstance(obj, FeatureService):
                add(out.feature_services, obj)
    out.entities.append(DUMMY_ENTITY)
    out.projects.append(Project(name=config.project, description="recsys feature repo"))
    return out


def _view_attribute_names(view: object, entities: dict[str, object]) -> list[str]:
    """Every name a view exposes: features, entity names and join keys, request fields."""
    names = [f.name for f in getattr(view, "features", [])]
    names += [c.name for c in getattr(view, "entity_columns", [])]
    for entity_name in getattr(view, "entities", []) or []:
        names.append(entity_name)
        entity = entities.get(entity_name)
        if entity is not None:
            names.append(entity.join_key)
    for source in (getattr(view, "source_request_sources", None) or {}).values():
        names += [f.name for f in source.schema]
    return names


def check_definitions(definitions: "RepoContents", forbidden: Iterable[str]) -> None:
    """Raise ForbiddenAttributeError if any view or on-demand view uses a forbidden name."""
    from recsys.contracts.pii import check_forbidden

    forbidden = tuple(forbidden)
    entities = {e.name: e for e in definitions.entities}
    for entity in definitions.entities:
        check_forbidden([entity.name, entity.join_key], forbidden, f"entity {entity.name!r}")
    for view in definitions.feature_views:
        check_forbidden(_view_attribute_names(view, entities), forbidden, f"feature view {view.name!r}")
    for odfv in definitions.on_demand_feature_views:
        check_forbidden(
            _view_attribute_names(odfv, entities), forbidden, f"on-demand feature view {odfv.name!r}"
        )


@dataclass(frozen=True)
class ApplySummary:
    applied: tuple[str, ...]
    deleted: tuple[str, ...]


def apply(config: Config, store: "FeatureStore | None" = None) -> ApplySummary:
    """Register the feature repo's definitions (what ``feast apply`` does), after the PII check.

    Objects registered earlier but no longer defined in the repo are deleted.
    """
    from feast.repo_operations import extract_objects_for_apply_delete

    definitions = load_definitions(config)
    check_definitions(definitions, config.validation.forbidden_attributes)
    store = store or open_store(config)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(config.project, store.registry, definitions)
    try:
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    except Exception as exc:
        raise FeatureStoreError(f"feast apply failed for project {config.project!r}: {exc}") from exc
    return ApplySummary(
        applied=tuple(sorted(getattr(o, "name", str(o)) for o in to_apply)),
        deleted=tuple(sorted(getattr(o, "name", str(o)) for o in to_delete)),
    )


def offline_end(config: Config) -> datetime:
    """The latest ``event_timestamp`` of the offline stats/profile tables (the end of the data)."""
    import polars as pl

    paths = [config.offline_dir / f"{v}.parquet" for v in MATERIALIZED_VIEWS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FeatureStoreError(f"offline feature tables missing (run `recsys features build`): {missing}")
    ends = pl.concat(
        [pl.scan_parquet(p).select(pl.col("event_timestamp").max()) for p in paths]
    ).collect()["event_timestamp"]
    return ends.max()


def materialize(
    config: Config,
    end: datetime,
    store: "FeatureStore | None" = None,
    views: Iterable[str] = MATERIALIZED_VIEWS,
) -> dict[str, tuple[datetime, datetime]]:
    """Load the latest row of every entity with ``event_timestamp <= end`` into the online store.

    Each view is read over ``[end - ttl, end]`` (inclusive, like Feast's file offline store), so
    the online value equals the point-in-time value at ``end``. Returns each view's interval.
    """
    if end.tzinfo is None:
        raise ConfigError(f"end={end.isoformat()}: must be timezone-aware (UTC)")
    store = store or open_store(config)
    done: dict[str, tuple[datetime, datetime]] = {}
    for name in views:
        fv = store.get_feature_view(name)
        start = end - fv.ttl if fv.ttl and fv.ttl > timedelta(0) else _EPOCH
        start = max(start, _EPOCH)
        try:
            store.materialize(start_date=start, end_date=end, feature_views=[name])
        except Exception as exc:
            raise FeatureStoreError(f"materialize of {name!r} up to {end.isoformat()} failed: {exc}") from exc
        done[name] = (start, end)
    return done
