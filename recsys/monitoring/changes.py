"""What changed in the feature definitions and upstream schemas since a model version was trained.

The registry's ``feature_definitions_hash`` says *that* the feature repo's files changed, not
*what* changed (and a comment edit changes it too). So each version also stores a manifest
(:data:`recsys.registry.publish.DEFINITIONS_MANIFEST`, written by the nightly): one entry per
Feast object of the feature repo (entity, feature view, on-demand view, feature service) and per
upstream table contract (:data:`recsys.contracts.schemas.SCHEMAS`), each with a canonical
definition and its hash:

- feature view: entities, fields and dtypes, ttl, online, sources (name, type, path, timestamp
  columns), tags;
- on-demand view: fields and dtypes, source views and their features, request-source fields,
  mode, the transform's source text and the values of the module constants it reads (e.g.
  ``DEFAULT_PRICE_RATIO``), tags;
- entity: join key and value type, tags; feature service: its views and their features, tags;
- table: key, columns (types, nullability, range, vocabulary), rules.

Descriptions and comments are left out: editing documentation is not a change that can break a
model. :func:`compare` names added, removed and changed objects and, inside a changed one, each
difference (``field price: dtype Float32 -> Float64``, ``ttl: 2 days, 0:00:00 -> 1 day, 0:00:00``).
A version published before manifests existed is compared by its repo-wide hash alone
(:func:`compare_hashes`), with a note saying so.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from recsys.config import Config
from recsys.contracts.schemas import SCHEMAS, TableSchema
from recsys.errors import DataContractError
from recsys.registry._io import write_atomic
from recsys.registry.publish import DEFINITIONS_MANIFEST

MANIFEST_FORMAT = 1
_SCALARS = (bool, int, float, str)


# ---------------------------------------------------------------- canonical definitions
def _source(source: Any) -> dict[str, Any] | None:
    if source is None:
        return None
    out: dict[str, Any] = {"name": source.name, "type": type(source).__name__}
    for attr in ("path", "timestamp_field", "created_timestamp_column"):
        value = getattr(source, attr, None)
        if value:
            out[attr] = value
    batch = getattr(source, "batch_source", None)
    if batch is not None:
        out["batch_source"] = _source(batch)
    return out


def _fields(features) -> dict[str, str]:
    return {f.name: str(f.dtype) for f in features}


def _entity(entity) -> dict[str, Any]:
    return {"join_key": entity.join_key, "value_type": entity.value_type.name, "tags": dict(entity.tags)}


def _feature_view(view) -> dict[str, Any]:
    return {"entities": sorted(view.entities), "fields": _fields(view.features),
            "ttl_seconds": view.ttl.total_seconds() if view.ttl else None, "online": view.online,
            "batch_source": _source(view.batch_source), "stream_source": _source(view.stream_source),
            "tags": dict(view.tags)}


def _constants(udf) -> dict[str, Any]:
    """Module-level constants (numbers, strings) a transform reads: changing one changes what the
    transform computes although its source text stays the same."""
    names = getattr(getattr(udf, "__code__", None), "co_names", ())
    scope = getattr(udf, "__globals__", {})
    return {n: scope[n] for n in names if isinstance(scope.get(n), _SCALARS)}


def _function_text(source: str) -> str:
    """The transform's source from its ``def`` on: the decorator repeats fields, sources and the
    description, which are compared on their own (or, the description, not at all)."""
    found = re.search(r"^(async )?def ", source, re.MULTILINE)
    return source[found.start():] if found else source


def _on_demand_view(view) -> dict[str, Any]:
    transform = view.feature_transformation
    return {"fields": _fields(view.features), "mode": view.mode,
            "sources": {n: sorted(f.name for f in p.features) for n, p in view.source_feature_view_projections.items()},
            "request_sources": {n: _fields(s.schema) for n, s in view.source_request_sources.items()},
            "transform": _function_text(transform.udf_string), "constants": _constants(transform.udf),
            "tags": dict(view.tags)}


def _feature_service(service) -> dict[str, Any]:
    return {"features": {p.name_to_use(): sorted(f.name for f in p.features) for p in service.feature_view_projections},
            "tags": dict(service.tags)}


def _table(schema: TableSchema) -> dict[str, Any]:
    columns = {c.name: {"dtypes": [str(d) for d in c.dtypes], "nullable": c.nullable, "required": c.required,
                        "range": str(c.range) if c.range else None,
                        "vocabulary": list(c.vocabulary) if c.vocabulary else None, "unseen": c.unseen}
               for c in schema.columns}
    rules = {r.name: {k: str(v) for k, v in (("range", r.range), ("vocabulary", r.vocabulary), ("value", r.value),
                                             ("ref", r.ref)) if v is not None} for r in schema.rules}
    return {"key": list(schema.key), "columns": columns, "rules": rules}


def _entry(definition: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(definition, sort_keys=True, default=str)
    return {"hash": hashlib.sha256(text.encode()).hexdigest(), "definition": json.loads(text)}


def definitions_manifest(config: Config, tables: Mapping[str, TableSchema] = SCHEMAS) -> dict[str, Any]:
    """The manifest of ``config.feature_repo``'s Feast objects and of ``tables`` (the upstream
    contracts), keyed ``<kind>:<name>``."""
    from recsys.features.store import load_definitions

    repo = load_definitions(config)
    objects: dict[str, dict[str, Any]] = {}
    for entity in repo.entities:
        if not entity.name.startswith("__"):  # Feast's own dummy entity
            objects[f"entity:{entity.name}"] = _entry(_entity(entity))
    for view in repo.feature_views:
        objects[f"feature_view:{view.name}"] = _entry(_feature_view(view))
    for view in repo.on_demand_feature_views:
        objects[f"on_demand_feature_view:{view.name}"] = _entry(_on_demand_view(view))
    for service in repo.feature_services:
        objects[f"feature_service:{service.name}"] = _entry(_feature_service(service))
    for name, schema in tables.items():
        objects[f"table:{name}"] = _entry(_table(schema))
    return {"format": MANIFEST_FORMAT, "objects": dict(sorted(objects.items()))}


def save_manifest(manifest: dict[str, Any], path: Path) -> Path:
    """Write atomically: a run killed mid-write leaves no half manifest for the registry to copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    return path


def load_manifest(path: Path) -> dict[str, Any]:
    """A saved manifest; refused (typed error naming the file) if unreadable or of another format."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataContractError(f"definitions manifest {path}: cannot read: {exc}") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataContractError(f"definitions manifest {path}: format={manifest.get('format')!r}, "
                                f"this code reads {MANIFEST_FORMAT}")
    return manifest


# ---------------------------------------------------------------- comparison
@dataclass(frozen=True)
class Change:
    """One object added, removed or changed; ``details`` name each difference inside it."""

    kind: str  # entity | feature_view | on_demand_feature_view | feature_service | table | feature_repo
    name: str
    status: str  # added | removed | changed
    details: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"{self.kind} {self.name} {self.status}"
        return head + (": " + "; ".join(self.details) if self.details else "")


@dataclass(frozen=True)
class ChangeReport:
    """``version``'s definitions against the current ones. ``note``: what could not be compared."""

    version: str
    compared: int
    changes: tuple[Change, ...]
    note: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "changed": self.changed, "compared": self.compared, "note": self.note,
                "changes": [asdict(c) | {"text": c.describe()} for c in self.changes]}


def _flatten(value: Any, prefix: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict) and value:
        out: dict[tuple[str, ...], Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, (*prefix, str(key))))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _members(key: str, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Fields of a view (name -> dtype) or columns of a table (name -> attributes), by name."""
    noun = "field" if key == "fields" else "column"
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        if old is None or new is None:
            brief = (new or old) if isinstance(new or old, str) else ", ".join((new or old)["dtypes"])
            out.append(f"{noun} {name} {'added' if old is None else 'removed'} ({brief})")
        elif isinstance(old, str):
            out.append(f"{noun} {name}: dtype {old} -> {new}")
        else:
            out += [f"{noun} {name}: {attr} {_show(old.get(attr))} -> {_show(new.get(attr))}"
                    for attr in sorted(set(old) | set(new)) if old.get(attr) != new.get(attr)]
    return out


def _details(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    """Each difference in words: fields and columns by name, the ttl as a duration, the rest by path."""
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in ("fields", "columns") and isinstance(old, dict) and isinstance(new, dict):
            out += _members(key, old, new)
        elif key == "ttl_seconds":
            out.append(f"ttl: {_duration(old)} -> {_duration(new)}")
        else:
            a, b = _flatten(old, (key,)), _flatten(new, (key,))
            out += [f"{'.'.join(path)}: {_show(a.get(path))} -> {_show(b.get(path))}"
                    for path in sorted(set(a) | set(b)) if a.get(path) != b.get(path)]
    return tuple(out)


def _duration(seconds: float | None) -> str:
    return "none" if seconds is None else str(timedelta(seconds=seconds))


def compare(before: Mapping[str, Any], after: Mapping[str, Any], version: str) -> ChangeReport:
    """Objects of manifest ``after`` against those of ``before`` (``version``'s)."""
    old, new = before["objects"], after["objects"]
    changes = []
    for key in sorted(set(old) | set(new)):
        kind, _, name = key.partition(":")
        if key not in old:
            changes.append(Change(kind, name, "added"))
        elif key not in new:
            changes.append(Change(kind, name, "removed"))
        elif old[key]["hash"] != new[key]["hash"]:
            changes.append(Change(kind, name, "changed", _details(old[key]["definition"], new[key]["definition"])))
    return ChangeReport(version, len(set(old) | set(new)), tuple(changes))


def compare_hashes(recorded: str, current: str, version: str) -> ChangeReport:
    """For a version that predates manifests: only the repo-wide hash can be compared."""
    note = (f"{version} predates definition manifests (no {DEFINITIONS_MANIFEST}): only the "
            "feature repo's file hash was compared, so what changed cannot be named, and upstream table "
            "schemas were not checked; versions trained from now on carry a manifest")
    if recorded == current:
        return ChangeReport(version, 0, (), note)
    return ChangeReport(version, 0, (Change("feature_repo", "*", "changed", (
        "the feature repo's files differ from those this version was trained with",)),), note)


def changes_since(config: Config, version: str, tables: Mapping[str, TableSchema] = SCHEMAS) -> ChangeReport:
    """``version``'s recorded definitions against ``config.feature_repo`` and ``tables`` now."""
    from recsys.registry import Registry, feature_definitions_hash

    registry = Registry.for_config(config).open()
    meta = registry.show(version)
    path = registry.version_dir(version) / DEFINITIONS_MANIFEST
    if not path.is_file():
        return compare_hashes(meta.feature_definitions_hash, feature_definitions_hash(config.feature_repo), version)
    return compare(load_manifest(path), definitions_manifest(config, tables), version)
