"""A/B arms: which users the treatment version serves, and the treatment's rows, kept in memory.

The split. :meth:`Split.is_treatment` is true for a stable ``share`` of user ids: the first 8
bytes of ``blake2b(salt NUL user_id)`` read as an integer fall below ``share * 2**64``. It does
not depend on the process, the restart or the request (no Python ``hash``), so a user stays in
one arm for the whole experiment and anyone can recompute the arm offline. One hash per request.

Why the treatment's rows are in memory. The online store keeps ONE row per entity of each
model-derived view (``user_embedding``, ``restaurant_candidates``, ``user_top_restaurants``),
carrying the version published last: the serving version's (the model-version contract). The
treatment's rows cannot sit online beside them, so :class:`VersionRows` loads them from the
treatment's registry artifacts (the very frames publishing would write): every restaurant's
candidates, and the embeddings and feed lists of the treatment's users only (memory ~ share x
users x dim). :class:`VersionReader` answers a read with them and takes the rest (user and
restaurant features, real-time item state) from the online store like the control does: still one
Feast read per menu request, none for the feed (all its columns are version-specific).
Consequence: the online updater's fresh embeddings (folded into the serving version) reach the
control only; the treatment serves its batch embeddings.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import polars as pl

from recsys.errors import DataContractError
from recsys.registry.publish import ARTIFACTS
from recsys.serving.stages import (
    CAND_IDS, CAND_SCORES, CAND_VERSION, FEED_IDS, FEED_SCORES, FEED_VERSION, USER_VECTOR, USER_VERSION,
    OnlineReader,
)

# The Feast columns whose values belong to one model version (the rest is version-independent).
VERSION_COLUMNS = frozenset({USER_VECTOR, USER_VERSION, CAND_IDS, CAND_SCORES, CAND_VERSION,
                             FEED_IDS, FEED_SCORES, FEED_VERSION})
_SCALE = 2 ** 64


class Split:
    """The stable user split of an experiment: ``share`` of users to the treatment."""

    def __init__(self, share: float, salt: str):
        self.share = share
        self.salt = salt
        self._threshold = int(share * _SCALE)
        self._base = hashlib.blake2b(salt.encode() + b"\0", digest_size=8)

    def is_treatment(self, user_id: str) -> bool:
        h = self._base.copy()
        h.update(user_id.encode())
        return int.from_bytes(h.digest(), "big") < self._threshold


@dataclass(frozen=True)
class RaggedLists:
    """Per-key (ids, scores) lists in CSR form: sorted keys, offsets into flat arrays."""

    keys: np.ndarray  # (K,) int64 ascending
    offsets: np.ndarray  # (K + 1,) int64
    ids: np.ndarray  # (total,) int64
    scores: np.ndarray  # (total,) float32

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, key: str, ids: str, scores: str) -> "RaggedLists":
        frame = frame.sort(key)
        lengths = frame[ids].list.len().fill_null(0).to_numpy()
        return cls(keys=frame[key].to_numpy().astype(np.int64),
                   offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                   ids=frame[ids].explode().drop_nulls().to_numpy().astype(np.int64),
                   scores=frame[scores].explode().drop_nulls().to_numpy().astype(np.float32))

    def get(self, key: int) -> tuple[np.ndarray, np.ndarray] | None:
        i = int(np.searchsorted(self.keys, key))
        if i == len(self.keys) or self.keys[i] != key:
            return None
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.ids[lo:hi], self.scores[lo:hi]


@dataclass(frozen=True)
class VersionRows:
    """One version's model-derived rows, answered under the Feast names the stages parse."""

    version: str
    users: np.ndarray  # (U,) int64 ascending
    vectors: np.ndarray  # (U, dim) float32
    candidates: RaggedLists  # restaurant -> candidate items
    feed: RaggedLists  # user -> precomputed restaurants

    @classmethod
    def load(cls, version_dir: Path, version: str, keep_user: Callable[[int], bool]) -> "VersionRows":
        """The version's artifacts; users limited to those ``keep_user`` accepts."""
        frames = {view: _read(version_dir / ARTIFACTS[view], version)
                  for view in ("user_embedding", "restaurant_candidates", "user_top_restaurants")}

        def kept(frame: pl.DataFrame) -> pl.DataFrame:
            ids = frame["user_id"].to_list()
            return frame.filter(pl.Series([keep_user(u) for u in ids], dtype=pl.Boolean))

        emb = kept(frames["user_embedding"]).sort("user_id")
        dim = int(emb["embedding"].list.len().max() or 0)
        vectors = (np.asarray(emb["embedding"].to_list(), dtype=np.float32).reshape(emb.height, dim)
                   if emb.height else np.zeros((0, dim), np.float32))
        return cls(version=version, users=emb["user_id"].to_numpy().astype(np.int64), vectors=vectors,
                   candidates=RaggedLists.from_frame(frames["restaurant_candidates"], "restaurant_id", "item_ids",
                                                     "scores"),
                   feed=RaggedLists.from_frame(kept(frames["user_top_restaurants"]), "user_id", "restaurant_ids",
                                               "scores"))

    def _vector(self, user_id: int) -> np.ndarray | None:
        i = int(np.searchsorted(self.users, user_id))
        return self.vectors[i] if i < len(self.users) and self.users[i] == user_id else None

    def menu(self, entity_row: Mapping[str, int]) -> dict[str, Any]:
        vector = self._vector(entity_row["user_id"])
        cands = self.candidates.get(entity_row["restaurant_id"])
        return {USER_VECTOR: vector, USER_VERSION: None if vector is None else self.version,
                CAND_IDS: None if cands is None else cands[0], CAND_SCORES: None if cands is None else cands[1],
                CAND_VERSION: None if cands is None else self.version}

    def feed_row(self, entity_row: Mapping[str, int]) -> dict[str, Any]:
        got = self.feed.get(entity_row["user_id"])
        return {FEED_IDS: None if got is None else got[0], FEED_SCORES: None if got is None else got[1],
                FEED_VERSION: None if got is None else self.version}


def _read(path: Path, version: str) -> pl.DataFrame:
    if not path.is_file():
        raise DataContractError(f"{path}: missing; version {version} cannot serve an A/B arm without it")
    frame = pl.read_parquet(path)
    foreign = frame.filter(pl.col("model_version") != version)
    if foreign.height:
        raise DataContractError(f"{path}: {foreign.height} row(s) of model_version "
                                f"{foreign['model_version'][0]!r}, expected {version!r}")
    return frame


class VersionReader:
    """:class:`~recsys.serving.stages.OnlineReader`'s contract for a version whose rows are not
    online: version-specific columns from ``lookup``, the others from ``store`` (None: no read)."""

    def __init__(self, store: OnlineReader | None, lookup: Callable[[Mapping[str, int]], dict[str, Any]]):
        self.store = store
        self.lookup = lookup

    def read(self, entity_row: Mapping[str, int], timeout: float) -> dict[str, Any]:
        row = self.store.read(entity_row, timeout) if self.store is not None else {}
        row.update(self.lookup(entity_row))
        return row
