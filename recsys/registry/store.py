"""The model registry: immutable version directories, one atomic pointer to the serving version.

Layout under the root (``config.data_dir / "registry"``)::

    models/<version>/                 artifacts (npz, json, FAISS index, ...) + metadata.json
    models/.staging-<version>-<hex>/  a version being written, and beside it its .lock (both
                                      removed by the next open/stage once the writer is gone)
    SERVING                           the pointer (recsys.registry.pointer.Pointer), replaced atomically
    history.jsonl                     every pointer move, append-only
    .lock                             serialises pointer moves and status changes

A version's artifacts never change once committed; of its ``metadata.json`` only the status
fields (``status``, ``status_reason``, ``status_changed_at``) do, each change an atomic rewrite.

Model-version contract (DESIGN.md): :meth:`Registry.promote` and :meth:`Registry.rollback` call a
``publish(version)`` hook (write that version's online rows; on rollback with a newer event
timestamp) before the pointer moves; if it raises, the pointer stays where it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from recsys.errors import NotFoundError
from recsys.registry._io import (FileLock, append_line, fsync_dir, fsync_file, remove_stale_temps,
                                 write_atomic)
from recsys.registry.errors import PromotionRefusedError, RegistryError, VersionConflictError
from recsys.registry.fingerprint import code_version as current_code_version
from recsys.registry.pointer import Pointer, read_pointer

if TYPE_CHECKING:
    from recsys.config import Config

Status = Literal["candidate", "refused", "served", "retired"]
STATUSES: tuple[str, ...] = ("candidate", "refused", "served", "retired")
METADATA_FILE = "metadata.json"
PublishHook = Callable[[str], None]

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth"}
_STAGING_PREFIX = ".staging-"
_LOCK_NAME = ".lock"
# Fields that may change after commit; everything else in the metadata is the version's identity.
_MUTABLE_FIELDS = {"created_at", "status", "status_reason", "status_changed_at"}


class Artifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str
    bytes: int = Field(ge=0)


class ModelMetadata(BaseModel):
    """``models/<version>/metadata.json``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    created_at: AwareDatetime
    trained_until: AwareDatetime  # newest event time in the training data
    data_fingerprint: str
    code_version: str
    feature_definitions_hash: str
    params: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    gate: dict[str, Any] = {}  # gate report summary (the full report may be an artifact)
    artifacts: dict[str, Artifact] = {}  # relative path -> sha256 and size
    status: Status = "candidate"
    status_reason: str = ""
    status_changed_at: AwareDatetime

    def identity(self) -> dict[str, Any]:
        """What must match for a re-commit of this version to count as the same content."""
        return self.model_dump(mode="json", exclude=_MUTABLE_FIELDS)

    def key_metrics(self, limit: int = 4) -> dict[str, float]:
        """The first ``limit`` scalar numeric metrics, by name (metadata.json sorts its keys)."""
        out = {k: float(v) for k, v in self.metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return dict(list(out.items())[:limit])


def check_version(version: str) -> str:
    """A version id is 1-128 characters of ``[A-Za-z0-9._-]``, not starting with ``.``/``-``/``_``."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise RegistryError(f"version={version!r}: expected 1-128 characters of [A-Za-z0-9._-] "
                            "starting with a letter or digit")
    return version


def version_id(trained_until: datetime, *parts: str) -> str:
    """A deterministic version id: ``<trained_until UTC>-<8 hex of parts>``, e.g.
    ``20261028T000000Z-1a2b3c4d``; pass the data fingerprint and a config hash as ``parts`` so a
    re-run on the same inputs names the same version (and its commit is idempotent)."""
    if trained_until.tzinfo is None:
        raise RegistryError(f"trained_until={trained_until!r}: needs a timezone")
    stamp = trained_until.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:8]}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonable(value: Any, field: str) -> Any:
    """Plain JSON types (numpy scalars and arrays, paths, datetimes converted), or an error."""
    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (Path, datetime)):
            return str(obj) if isinstance(obj, Path) else obj.isoformat()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")

    try:
        return json.loads(json.dumps(value, default=default))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{field}: {exc}") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _npy_holds_objects(fh: Any) -> bool:
    version = np.lib.format.read_magic(fh)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        return True  # unknown header version: refuse rather than guess
    _shape, _fortran, dtype = read_header(fh)
    return dtype.hasobject


def _check_not_pickle(path: Path, name: str) -> None:
    """Artifacts are never pickles: no pickle suffixes, no pickle stream, no object arrays."""
    why = None
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        why = f"suffix {path.suffix}"
    else:
        with path.open("rb") as fh:
            head = fh.read(2)
            if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
                why = "it starts like a pickle stream"
            elif path.suffix.lower() == ".npy":
                fh.seek(0)
                why = "object dtype (needs pickle)" if _npy_holds_objects(fh) else None
        if why is None and path.suffix.lower() == ".npz":
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if member.endswith(".npy"):
                        with archive.open(member) as fh:
                            if _npy_holds_objects(fh):
                                why = f"array {member[:-4]!r} has object dtype (needs pickle)"
                                break
    if why is not None:
        raise RegistryError(f"artifact {name!r} looks like a pickle ({why}); save arrays as .npz "
                            "(no object dtype), tables as Parquet or JSON, indexes in their own format")


class StagingArea:
    """Where one version is written before :meth:`commit` renames it into place.

    Use as a context manager; leaving the block without committing (or with an exception)
    removes everything written. Artifact names are relative paths (subfolders allowed)::

        with registry.stage(version) as area:
            area.write_arrays("als.npz", user_factors=u, item_factors=v)
            area.write_json("id_maps.json", {"user_ids": users, "item_ids": items})
            faiss.write_index(index, str(area.artifact("items.faiss")))
            meta = area.commit(trained_until=..., data_fingerprint=..., feature_definitions_hash=...,
                               params=..., metrics=..., gate=..., status="candidate")

    The area holds an advisory lock (``<dir>.lock`` beside it) for its whole life; the kernel drops
    it if the process dies, which is how a later open tells a crashed writer's directory (removed)
    from a live one (left alone).
    """

    def __init__(self, registry: "Registry", version: str, path: Path, lock: FileLock) -> None:
        self.registry = registry
        self.version = version
        self.path = path
        self._lock = lock
        self._done = False

    # ---- writing ----
    def artifact(self, name: str) -> Path:
        """The path to write artifact ``name`` to (parent folders created)."""
        self._check_open()
        rel = Path(name)
        if (rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0].startswith(".")
                or rel.as_posix() == METADATA_FILE):
            raise RegistryError(f"artifact name {name!r}: expected a relative path inside the version, "
                                f"not hidden and not {METADATA_FILE!r}")
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.artifact(name)
        path.write_bytes(data)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        text = json.dumps(_jsonable(obj, name), indent=2, sort_keys=True, allow_nan=True)
        return self.write_bytes(name, text.encode() + b"\n")

    def write_arrays(self, name: str, **arrays: np.ndarray) -> Path:
        """Save arrays as an uncompressed ``.npz`` (load with ``np.load(path, allow_pickle=False)``)."""
        for key, array in arrays.items():
            if np.asarray(array).dtype.hasobject:
                raise RegistryError(f"{name}: array {key!r} has object dtype (would need pickle)")
        path = self.artifact(name)
        with path.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    # ---- finishing ----
    def commit(
        self,
        *,
        trained_until: datetime,
        data_fingerprint: str,
        feature_definitions_hash: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        gate: Mapping[str, Any] | None = None,
        status: Status = "candidate",
        status_reason: str = "",
        code_version: str | None = None,
    ) -> ModelMetadata:
        """Write ``metadata.json``, make everything durable, and rename the area to
        ``models/<version>`` atomically.

        If the version already exists with the same artifacts (bytes) and the same metadata
        apart from ``created_at`` and the status fields, this is a no-op returning the existing
        metadata (re-runs are idempotent); with different contents it raises
        :class:`VersionConflictError`. ``status`` may only be ``candidate`` or ``refused``.
        """
        self._check_open()
        if status not in ("candidate", "refused"):
            raise RegistryError(f"status={status!r}: a new version is 'candidate' or 'refused' "
                                "(it serves only through promote)")
        artifacts: dict[str, Artifact] = {}
        for path in sorted(p for p in self.path.rglob("*") if p.is_file()):
            name = path.relative_to(self.path).as_posix()
            if name == METADATA_FILE:
                continue
            _check_not_pickle(path, name)
            artifacts[name] = Artifact(sha256=_sha256_file(path), bytes=path.stat().st_size)
        now = _now()
        try:
            meta = ModelMetadata(
                version=self.version, created_at=now, trained_until=trained_until,
                data_fingerprint=data_fingerprint,
                code_version=code_version if code_version is not None else current_code_version(),
                feature_definitions_hash=feature_definitions_hash,
                params=_jsonable(dict(params or {}), "params"),
                metrics=_jsonable(dict(metrics or {}), "metrics"),
                gate=_jsonable(dict(gate or {}), "gate"),
                artifacts=artifacts, status=status, status_reason=status_reason,
                status_changed_at=now,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise RegistryError(f"metadata of {self.version}: {'.'.join(map(str, err['loc']))}="
                                f"{err.get('input')!r}: {err['msg']}") from None
        (self.path / METADATA_FILE).write_bytes(_metadata_bytes(meta))
        for path in self.path.rglob("*"):
            (fsync_file if path.is_file() else fsync_dir)(path)
        fsync_dir(self.path)
        target = self.registry.version_dir(self.version)
        try:
            os.rename(self.path, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            existing = self.registry.show(self.version)
            self.abort()
            _check_same(existing, meta)
            return existing
        fsync_dir(target.parent)
        self._finish()
        return meta

    def abort(self) -> None:
        """Remove what was written (no-op after commit)."""
        if self._done:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._lock.path.unlink(missing_ok=True)
        self._lock.release()

    def _check_open(self) -> None:
        if self._done:
            raise RegistryError(f"staging area of {self.version} is already committed or aborted")

    def __enter__(self) -> "StagingArea":
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _metadata_bytes(meta: ModelMetadata) -> bytes:
    return json.dumps(meta.model_dump(mode="json"), indent=2, sort_keys=True).encode() + b"\n"


def _check_same(existing: ModelMetadata, new: ModelMetadata) -> None:
    old, cur = existing.identity(), new.identity()
    if old == cur:
        return
    fields = sorted(k for k in old.keys() | cur.keys() if k != "artifacts" and old.get(k) != cur.get(k))
    files = sorted(n for n in old["artifacts"].keys() | cur["artifacts"].keys()
                   if old["artifacts"].get(n) != cur["artifacts"].get(n))
    what = ", ".join([*(f"field {f}" for f in fields), *(f"artifact {n}" for n in files)])
    raise VersionConflictError(f"version {new.version} already exists with different contents "
                               f"({what}); versions are immutable: commit under a new version")


class Registry:
    """Model versions under ``root``; the constructor only stores the path (no I/O)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_config(cls, config: "Config") -> "Registry":
        return cls(config.data_dir / "registry")

    # ---- layout ----
    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def pointer_path(self) -> Path:
        return self.root / "SERVING"

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    def version_dir(self, version: str) -> Path:
        return self.models_dir / check_version(version)

    # ---- opening and staging ----
    def open(self) -> "Registry":
        """Create the layout if missing, remove what crashed writers left (staging directories
        whose writer is gone, pointer temporaries) and finish a pointer move a crash cut short
        (history line, statuses). Returns self."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._clean_staging()
        with self._writer_lock():
            pointer = self._repair()
            for meta in self.list_versions():  # statuses a power loss may have undone
                if meta.status == "served" and (pointer is None or meta.version != pointer.version):
                    self._write_status(meta.version, "retired", "not serving (repaired on open)")
        return self

    def stage(self, version: str) -> StagingArea:
        """A new staging area for ``version`` (see :class:`StagingArea`)."""
        check_version(version)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._clean_staging()
        while True:
            path = self.models_dir / f"{_STAGING_PREFIX}{version}-{secrets.token_hex(6)}"
            lock = FileLock(path.with_name(path.name + ".lock")).acquire()
            if lock.still_linked():
                break
            lock.release()  # a cleaner unlinked it under us: start again under a new name
        path.mkdir()
        return StagingArea(self, version, path, lock)

    def _clean_staging(self) -> None:
        if not self.models_dir.is_dir():
            return
        for entry in self.models_dir.iterdir():
            if not entry.name.startswith(_STAGING_PREFIX) or entry.name.endswith(".lock"):
                continue
            lock = FileLock(entry.with_name(entry.name + ".lock"), blocking=False)
            try:
                lock.acquire()
            except BlockingIOError:
                continue  # its writer is alive
            try:
                shutil.rmtree(entry, ignore_errors=True)
                lock.path.unlink(missing_ok=True)
            finally:
                lock.release()

    # ---- reading ----
    def exists(self, version: str) -> bool:
        return (self.version_dir(version) / METADATA_FILE).is_file()

    def show(self, version: str) -> ModelMetadata:
        """The metadata of ``version``; :class:`NotFoundError` if there is no such version."""
        path = self.version_dir(version) / METADATA_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            known = [m.version for m in self.list_versions()][-5:]
            raise NotFoundError(f"model version {version!r} not found in {self.models_dir}"
                                f" (latest: {', '.join(known) or 'none'})") from None
        try:
            return ModelMetadata.model_validate_json(data)
        except ValidationError as exc:
            raise RegistryError(f"{path} is not valid metadata: {exc.errors()[0]['msg']}") from None

    def list_versions(self) -> list[ModelMetadata]:
        """All committed versions, oldest first (by ``created_at``, then version)."""
        if not self.models_dir.is_dir():
            return []
        metas = [self.show(d.name) for d in self.models_dir.iterdir()
                 if d.is_dir() and not d.name.startswith(".")]
        return sorted(metas, key=lambda m: (m.created_at, m.version))

    def verify(self, version: str) -> list[str]:
        """Problems with a version's files against its manifest (empty when intact)."""
        meta, root = self.show(version), self.version_dir(version)
        problems = []
        for name, art in meta.artifacts.items():
            path = root / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif _sha256_file(path) != art.sha256:
                problems.append(f"{name}: content differs from its recorded sha256")
        extra = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        problems += [f"{n}: not in the manifest" for n in sorted(extra - set(meta.artifacts) - {METADATA_FILE})]
        return problems

    def serving(self) -> Pointer | None:
        """The serving pointer, or None before the first promotion."""
        return read_pointer(self.pointer_path)

    def history(self) -> list[Pointer]:
        """Every pointer move, oldest first (a line torn by a crash is skipped)."""
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(Pointer.model_validate_json(line))
            except ValidationError:
                continue
        return out

    # ---- changing ----
    def set_status(self, version: str, status: Status, reason: str) -> ModelMetadata:
        """Change a version's status (metadata only). ``served`` comes only from promote or
        rollback, and the serving version cannot be marked otherwise while it serves."""
        if status not in STATUSES:
            raise RegistryError(f"status={status!r}: expected one of {', '.join(STATUSES)}")
        if status == "served":
            raise RegistryError("status='served' is set by promote/rollback, not set_status")
        with self._writer_lock():
            pointer = self._repair()
            if pointer is not None and pointer.version == version:
                raise RegistryError(f"version {version} is serving: promote another version or roll "
                                    f"back before marking it {status!r}")
            return self._write_status(version, status, reason)

    def promote(self, version: str, reason: str, *, publish: PublishHook | None,
                force: bool = False) -> Pointer:
        """Publish ``version``'s online rows through ``publish(version)``, then point SERVING at it.

        Refuses (:class:`PromotionRefusedError`) a version whose status is ``refused`` unless
        ``force``. Promoting the version that already serves changes nothing and returns the
        current pointer (re-runs are idempotent). ``publish=None`` means the version has no
        online rows to write (pass it explicitly). If ``publish`` raises, nothing moves.

        ``publish`` runs while the registry's writer lock is held (so two promotions cannot
        interleave their online rows); it must not call this registry's writing methods.
        """
        with self._writer_lock():
            meta = self.show(version)
            current = self._repair()
            if current is not None and current.version == version:
                return current
            if meta.status == "refused" and not force:
                raise PromotionRefusedError(_refusal(meta, "promote"))
            if meta.status == "refused":
                reason = f"forced despite refusal ({meta.status_reason}): {reason}"
            return self._move(version, reason, "promote", current, publish)

    def rollback(self, reason: str = "rollback", *, publish: PublishHook | None,
                 force: bool = False) -> Pointer:
        """Move SERVING back to the version served before the current one and return the pointer.

        "Before" follows the history as a stack: each promotion pushes, each rollback pops, so
        rolling back twice after promoting A, B, C serves A. ``publish(previous)`` runs first and
        must republish that version's online rows with a newer event timestamp than the rows it
        replaces; if it raises, nothing moves.
        """
        with self._writer_lock():
            current = self._repair()
            if current is None:
                raise RegistryError("nothing to roll back: no version has been promoted")
            stack = _served_stack(self.history())
            if len(stack) < 2:
                raise RegistryError(f"nothing to roll back to: {current.version} is the only version "
                                    "served so far")
            target = stack[-2]
            meta = self.show(target)
            if meta.status == "refused" and not force:
                raise PromotionRefusedError(_refusal(meta, "roll back to"))
            return self._move(target, reason, "rollback", current, publish)

    # ---- internals (call with the writer lock held) ----
    def _writer_lock(self) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / _LOCK_NAME)

    def _move(self, version: str, reason: str, action: Literal["promote", "rollback"],
              current: Pointer | None, publish: PublishHook | None) -> Pointer:
        if publish is not None:
            publish(version)
        history = self.history()
        generation = max([current.generation if current else 0,
                          history[-1].generation if history else 0]) + 1
        pointer = Pointer(generation=generation, version=version,
                          previous=current.version if current else None,
                          moved_at=_now(), reason=reason, action=action)
        write_atomic(self.pointer_path, pointer.to_json().encode() + b"\n")
        self._after_move(pointer)
        return pointer

    def _after_move(self, pointer: Pointer) -> None:
        """The bookkeeping after a pointer move: history line and statuses. Also run by
        :meth:`_repair` when a crash interrupted it (the pointer is the source of truth)."""
        history = self.history()
        if not history or history[-1].generation < pointer.generation:
            append_line(self.history_path, pointer.to_json())
        # Statuses follow the pointer; if a power loss undoes these renames, the next _repair
        # redoes them, so they skip the directory fsync (the file contents are still synced).
        if self.show(pointer.version).status != "served":
            self._write_status(pointer.version, "served", pointer.reason, durable=False)
        previous = pointer.previous
        if (previous and previous != pointer.version and self.exists(previous)
                and self.show(previous).status == "served"):
            verb = "rolled back" if pointer.action == "rollback" else "replaced"
            self._write_status(previous, "retired", f"{verb} by {pointer.version}: {pointer.reason}",
                               durable=False)

    def _repair(self) -> Pointer | None:
        remove_stale_temps(self.root, self.pointer_path.name)
        for meta_dir in self.models_dir.iterdir() if self.models_dir.is_dir() else ():
            if not meta_dir.name.startswith("."):
                remove_stale_temps(meta_dir, METADATA_FILE)
        pointer = self.serving()
        if pointer is not None:
            self._after_move(pointer)
        return pointer

    def _write_status(self, version: str, status: Status, reason: str, *,
                      durable: bool = True) -> ModelMetadata:
        meta = self.show(version).model_copy(
            update={"status": status, "status_reason": reason, "status_changed_at": _now()})
        write_atomic(self.version_dir(version) / METADATA_FILE, _metadata_bytes(meta), durable=durable)
        return meta


def _served_stack(history: list[Pointer]) -> list[str]:
    stack: list[str] = []
    for move in history:
        if move.action == "promote":
            if not stack or stack[-1] != move.version:
                stack.append(move.version)
        else:
            while stack and stack[-1] != move.version:
                stack.pop()
            if not stack:
                stack.append(move.version)
    return stack


def _refusal(meta: ModelMetadata, verb: str) -> str:
    gate = meta.gate.get("reasons") or meta.gate.get("summary") or ""
    gate_text = f"; gate: {gate}" if gate else ""
    return (f"will not {verb} {meta.version}: it was refused ({meta.status_reason or 'no reason recorded'})"
            f"{gate_text}; use force (--force) to override")
