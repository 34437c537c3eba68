"""Marketplace geometry: cells on a ``size x size`` grid, delivery within a Chebyshev radius.

A cell id is ``row * size + col``. A restaurant delivers to every cell within Chebyshev distance
``radius`` of its own (the same rule as the simulator, ``recsys.simulation.world``); the distance
that a feed scorer penalises is the Euclidean distance between cell centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.errors import DataContractError


@dataclass(frozen=True)
class Grid:
    size: int
    radius: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise DataContractError(f"grid size={self.size}: must be >= 1")
        if self.radius < 0:
            raise DataContractError(f"delivery radius={self.radius}: must be >= 0")

    @property
    def n_cells(self) -> int:
        return self.size * self.size

    def check_cells(self, cells: np.ndarray, what: str) -> np.ndarray:
        cells = np.asarray(cells, dtype=np.int64)
        bad = (cells < 0) | (cells >= self.n_cells)
        if bad.any():
            raise DataContractError(f"{what}: {int(bad.sum())} cell(s) outside the {self.size}x{self.size} "
                                    f"grid, e.g. {int(cells[bad][0])}")
        return cells

    def chebyshev(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        (ra, ca), (rb, cb) = np.divmod(a, self.size), np.divmod(b, self.size)
        return np.maximum(np.abs(ra - rb), np.abs(ca - cb))

    def euclidean(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        (ra, ca), (rb, cb) = np.divmod(a, self.size), np.divmod(b, self.size)
        return np.hypot(ra - rb, ca - cb).astype(np.float32)

    def delivering_cells(self, cell: int) -> np.ndarray:
        """Cells whose restaurants deliver to ``cell`` (within the radius, clipped to the grid)."""
        row, col = divmod(int(cell), self.size)
        rows = np.arange(max(0, row - self.radius), min(self.size, row + self.radius + 1))
        cols = np.arange(max(0, col - self.radius), min(self.size, col + self.radius + 1))
        return (rows[:, None] * self.size + cols[None, :]).ravel()


@dataclass(frozen=True)
class CellBuckets:
    """Positions of entities grouped by cell (CSR): ``order[starts[c]:starts[c+1]]`` are in ``c``."""

    order: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, cells: np.ndarray, n_cells: int) -> "CellBuckets":
        cells = np.asarray(cells, dtype=np.int64)
        order = np.argsort(cells, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(cells, minlength=n_cells))].astype(np.int64)
        return cls(order, starts)

    def within(self, grid: Grid, cell: int) -> np.ndarray:
        """Positions of the entities that deliver to ``cell``, ascending."""
        parts = [self.order[self.starts[c]:self.starts[c + 1]] for c in grid.delivering_cells(cell)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
