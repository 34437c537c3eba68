"""The serving pointer: one small JSON file naming the version that serves, and how to watch it.

``<registry>/SERVING`` holds one :class:`Pointer`::

    {"generation": 12, "version": "20261028T000000Z-1a2b3c4d", "previous": "20261027T...",
     "moved_at": "2026-10-28T03:12:09.123456Z", "reason": "nightly 2026-10-28", "action": "promote"}

It is only ever replaced whole (write temp, fsync, ``os.replace``), so a reader sees the old
pointer or the new one, never a torn file. ``generation`` grows by one on every move.

Watching it (hot reload): poll cheaply with :class:`PointerWatcher`. Each ``poll`` is one
``os.stat``; only when the file's identity ``(st_ino, st_mtime_ns, st_size)`` changed does it read
and parse the pointer, and it returns the pointer only when its ``generation`` differs from the
one the caller has loaded. Every move creates a new inode (``os.replace``), so the stat signature
changes even within one mtime tick. The caller loads the returned version and passes the new
generation to the next poll; if loading fails it keeps passing the old one and is offered the
pointer again::

    watcher = PointerWatcher(registry.pointer_path)
    loaded = None                       # generation of the model in memory
    while running:
        pointer = watcher.poll(loaded)
        if pointer is not None:
            model = load_model(registry.version_dir(pointer.version))   # then swap atomically
            loaded = pointer.generation
        time.sleep(1.0)
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recsys.registry.errors import RegistryError


class Pointer(BaseModel):
    """One position of the serving pointer (also one line of ``history.jsonl``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generation: int = Field(ge=1)
    version: str
    previous: str | None
    moved_at: datetime
    reason: str
    action: Literal["promote", "rollback"]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def read_pointer(path: Path) -> Pointer | None:
    """The pointer in ``path``, or None when no version has ever been promoted."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Pointer.model_validate_json(data)
    except ValidationError as exc:
        raise RegistryError(f"serving pointer {path} is not valid: {exc.errors()[0]['msg']}") from None


class PointerWatcher:
    """Tells a server when the serving pointer moved, at the cost of one ``stat`` per poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._settled: tuple[int, int, int] | None = None

    def poll(self, loaded_generation: int | None) -> Pointer | None:
        """The current pointer if its generation differs from ``loaded_generation``, else None."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._settled:
            return None
        pointer = read_pointer(self.path)
        if pointer is None or pointer.generation == loaded_generation:
            # Nothing to do until the file changes again. (If it moved between our stat and our
            # read, the next stat differs from this signature and we read it then.)
            self._settled = signature
            return None
        return pointer
