"""The one model contract: fit / score / save / load, implemented by ALS and every baseline.

Scores are for ranking: higher is better, comparable within one user's candidates. Ids are the
external ids of the log (user_id, restaurant_id or item_id); each model keeps its id maps.
Artifacts are ``.npz`` files read with ``allow_pickle=False``, written to a temporary name and
renamed, so a killed save leaves no half-written model.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Protocol, Self, TypeVar

import numpy as np

from recsys.training.errors import ModelArtifactError
from recsys.training.interactions import InteractionMatrix

M = TypeVar("M", bound="Model")
FORMAT_VERSION = 1


class Scorer(Protocol):
    """Anything that scores (user, entity) pairs: a fitted model, a baseline, a blend."""

    def score(self, user_ids, entity_ids) -> np.ndarray: ...

    def score_matrix(self, user_ids, entity_ids) -> np.ndarray: ...


class Model(ABC):
    """Base class of trainable scorers.

    Constructors only store settings; ``fit`` learns from an :class:`InteractionMatrix`;
    ``save``/``load`` do the I/O.
    """

    kind: ClassVar[str]

    @abstractmethod
    def fit(self: M, data: InteractionMatrix) -> M:
        """Learn from a confidence matrix; returns self."""

    @abstractmethod
    def score(self, user_ids, entity_ids) -> np.ndarray:
        """Scores of aligned pairs.

        Parameters
        ----------
        user_ids, entity_ids : (N,) external ids, aligned.

        Returns
        -------
        (N,) float32 scores, higher is better.
        """

    def score_matrix(self, user_ids, entity_ids) -> np.ndarray:
        """(U, E) float32 scores of every user against every entity (cross product)."""
        user_ids, entity_ids = np.asarray(user_ids), np.asarray(entity_ids)
        u = np.repeat(user_ids, len(entity_ids))
        e = np.tile(entity_ids, len(user_ids))
        return self.score(u, e).reshape(len(user_ids), len(entity_ids))

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (no objects): what ``save`` writes."""

    @abstractmethod
    def params(self) -> dict:
        """JSON-serialisable settings: what the constructor needs to rebuild the model."""

    @classmethod
    @abstractmethod
    def from_arrays(cls: type[M], params: dict, arrays: dict[str, np.ndarray]) -> M:
        """Rebuild a fitted model from ``params()`` and ``arrays()`` (validating them)."""

    def save(self, path: Path) -> Path:
        """Write the fitted model to ``path`` (.npz), atomically."""
        return write_npz(path, {"kind": np.array(self.kind), "format_version": np.array(FORMAT_VERSION),
                                "params": np.array(json.dumps(self.params(), sort_keys=True)), **self.arrays()})

    @classmethod
    def load(cls, path: Path) -> Self:
        arrays = read_npz(path)
        kind = str(arrays.pop("kind", ""))
        if kind != cls.kind:
            raise ModelArtifactError(f"{path}: holds a {kind or 'unknown'!r} model, not {cls.kind!r}")
        version = int(arrays.pop("format_version", -1))
        if version != FORMAT_VERSION:
            raise ModelArtifactError(f"{path}: format_version={version}, this code reads {FORMAT_VERSION}")
        params = json.loads(str(arrays.pop("params")))
        return cls.from_arrays(params, arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        raise ModelArtifactError(f"model path {path} must end in .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)
    return path


def read_npz(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ModelArtifactError(f"model file not found: {path}") from None
    except (ValueError, OSError) as exc:
        raise ModelArtifactError(f"model file {path} is not a readable .npz without pickles: {exc}") from None
