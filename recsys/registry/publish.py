"""The publish hook of the model-version contract: write one version's rows, offline and online.

:meth:`recsys.registry.Registry.promote` and :meth:`~recsys.registry.Registry.rollback` call
:func:`publish_version` before moving the pointer. The nightly writes a version's precomputed
frames into its staging area with :func:`write_version_outputs`; they become immutable artifacts
of the version (layout :data:`ARTIFACTS`)::

    models/<version>/precompute/user_top_restaurants.parquet
    models/<version>/precompute/restaurant_candidates.parquet
    models/<version>/embeddings/user_embedding.parquet
    models/<version>/embeddings/item_embedding.parquet

Beside them, for monitoring (:data:`REFERENCE_PROFILE`, :data:`DEFINITIONS_MANIFEST`; written by
the nightly, never published online): the reference profile of the ranker's training rows and
scores (what serving's feature samples are compared with), and the manifest of the feature
definitions and upstream table schemas the version was trained with (``recsys monitor changes``)::

    models/<version>/monitoring/reference_profile.json
    models/<version>/monitoring/definitions.json

Publishing reads them back and, per view, with ``event_timestamp = created_timestamp = now``
and ``model_version`` on every row:

1. writes the online rows through the Feast view (``recsys.features.bulk_write.write_online``,
   only-newer semantics). ``now`` is newer than anything stored, so every row lands, including
   on a rollback that republishes an older version over a newer one (Feast's Redis store ignores
   a write that is not newer). If any row is not written (the store holds a row stamped at or
   after ``now``: a clock gone backwards, or a ``now`` passed in from the past) it raises
   :class:`~recsys.registry.errors.RegistryError` and the pointer does not move;
2. appends the same rows to the offline audit copy at the view's FileSource path under
   ``data_dir`` (``offline/<view>.parquet``), which is a Parquet *dataset directory*: one file
   per publish, ``<now as %Y%m%dT%H%M%S%fZ>-<version>.parquet``, written to a hidden temporary
   name and renamed (readers -- pyarrow, polars ``scan_parquet(dir / "*.parquet")``, Feast's
   file offline store -- skip hidden files). A publish never rewrites history: each publish is one
   immutable file, so the audit shows which version's rows were online from when, rollbacks
   included. Retention (deleting old publish files) is left to operations.

Idempotent: running it again writes the same rows with a newer timestamp (online: same
content; offline: one more publish file with identical rows). A crash midway leaves some views
with the new version's rows and some with the old; the pointer has not moved, serving detects
rows whose ``model_version`` is not the loaded one and answers with a flagged fallback, and the
next run finishes the publish.

Stale rows are not deleted: a user (or restaurant, or item) with a row from an older version and
none in the new one keeps the old row online. Serving compares its ``model_version`` with the
loaded model's and treats it as missing (model-version contract), so it is never mixed in.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import polars as pl

from recsys.config import Config
from recsys.errors import DataContractError, NotFoundError
from recsys.registry._io import fsync_dir, fsync_file
from recsys.registry.errors import RegistryError
from recsys.registry.store import Registry, StagingArea

if TYPE_CHECKING:
    from feast import FeatureStore

# view -> artifact path inside the version directory; written in this order (entities that
# requests look up last: a request needs its user's row, which then points to the rest).
ARTIFACTS: dict[str, str] = {
    "item_embedding": "embeddings/item_embedding.parquet",
    "restaurant_candidates": "precompute/restaurant_candidates.parquet",
    "user_embedding": "embeddings/user_embedding.parquet",
    "user_top_restaurants": "precompute/user_top_restaurants.parquet",
}
KEYS: dict[str, str] = {"item_embedding": "item_id", "restaurant_candidates": "restaurant_id",
                        "user_embedding": "user_id", "user_top_restaurants": "user_id"}
FEATURES: dict[str, tuple[str, ...]] = {
    "item_embedding": ("embedding", "model_version"),
    "restaurant_candidates": ("item_ids", "scores", "model_version"),
    "user_embedding": ("embedding", "model_version"),
    "user_top_restaurants": ("restaurant_ids", "scores", "model_version"),
}
_TS = pl.Datetime("us", "UTC")
# Monitoring artifacts of a version (paths inside its directory, like ARTIFACTS).
REFERENCE_PROFILE = "monitoring/reference_profile.json"
DEFINITIONS_MANIFEST = "monitoring/definitions.json"


@dataclass(frozen=True)
class PublishReport:
    version: str
    published_at: datetime
    rows: dict[str, int]
    audit_files: dict[str, Path]


def _check_frame(view: str, frame: pl.DataFrame, version: str, where: str) -> pl.DataFrame:
    key = KEYS[view]
    missing = [c for c in (key, *FEATURES[view]) if c not in frame.columns]
    if missing:
        raise DataContractError(f"{where}: {view} lacks columns {missing} (has {frame.columns})")
    if frame[key].null_count() or frame[key].n_unique() != frame.height:
        raise DataContractError(f"{where}: {view}.{key} has nulls or duplicates (one row per entity)")
    versions = frame["model_version"].unique().to_list()
    if frame.height and versions != [version]:
        raise DataContractError(f"{where}: {view}.model_version holds {sorted(map(str, versions))[:3]}, "
                                f"expected only {version!r}")
    return frame


def write_version_outputs(area: StagingArea, frames: Mapping[str, pl.DataFrame]) -> dict[str, Path]:
    """Write the four precomputed frames (``PrecomputeOutputs.frames()``) into a staging area.

    Every view of :data:`ARTIFACTS` is required and every row must carry ``area.version``.
    """
    missing = sorted(set(ARTIFACTS) - set(frames))
    if missing:
        raise DataContractError(f"write_version_outputs: frames missing for views {missing}")
    out = {}
    for view, rel in ARTIFACTS.items():
        frame = _check_frame(view, frames[view], area.version, f"version {area.version}")
        path = area.artifact(rel)
        frame.write_parquet(path, statistics=False)
        out[view] = path
    return out


def read_version_outputs(registry: Registry, version: str) -> dict[str, pl.DataFrame]:
    """The committed frames of ``version``, checked (columns, one row per entity, its version)."""
    if not registry.exists(version):
        raise NotFoundError(f"model version {version!r} is not in the registry at {registry.root}")
    root = registry.version_dir(version)
    frames = {}
    for view, rel in ARTIFACTS.items():
        path = root / rel
        if not path.is_file():
            raise NotFoundError(f"version {version} has no {rel}: it was committed without precomputed "
                                "outputs (write_version_outputs) and cannot be published")
        frames[view] = _check_frame(view, pl.read_parquet(path), version, str(path))
    return frames


def _audit_dir(store: "FeatureStore", config: Config, view: str) -> Path:
    source = store.get_feature_view(view).batch_source
    path = Path(source.path)
    return path if path.is_absolute() else Path(config.data_dir) / path


def _write_audit(directory: Path, frame: pl.DataFrame, version: str, now: datetime) -> Path:
    if directory.is_file():
        raise RegistryError(f"audit path {directory} is a file; expected a Parquet dataset directory "
                            "(one file per publish)")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{version}.parquet"
    tmp = directory / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        frame.write_parquet(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(directory)
    return path


def publish_version(config: Config, version: str, *, now: datetime | None = None,
                    store: "FeatureStore | None" = None) -> PublishReport:
    """Write ``version``'s rows to the online store and the offline audit copy (module docstring).

    ``now`` (default: the wall clock, UTC) stamps every row; ``store``: an opened Feast store
    (default: :func:`recsys.features.store.open_store`), where the views are applied.
    """
    from recsys.features.bulk_write import write_online
    from recsys.features.store import open_store

    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise RegistryError(f"now={now.isoformat()}: must be timezone-aware (UTC)")
    now = now.astimezone(timezone.utc)
    frames = read_version_outputs(Registry.for_config(config), version)
    store = store or open_store(config)
    rows: dict[str, int] = {}
    audit: dict[str, Path] = {}
    for view, frame in frames.items():
        stamped = frame.with_columns(pl.lit(now).cast(_TS).alias("event_timestamp"),
                                     pl.lit(now).cast(_TS).alias("created_timestamp"))
        written = write_online(store, view, stamped, only_newer=True)
        if written != stamped.height:
            raise RegistryError(
                f"publish of {version}: {stamped.height - written} of {stamped.height} {view} rows were not "
                f"written online because the store holds rows stamped at or after {now.isoformat()} "
                "(clock skew, or a publish time from the past); publish again with a later time")
        audit[view] = _write_audit(_audit_dir(store, config, view), stamped, version, now)
        rows[view] = written
    return PublishReport(version, now, rows, audit)
