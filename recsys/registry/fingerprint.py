"""Deterministic fingerprints of data and code, recorded in each model version's metadata.

- :func:`fingerprint_files`: the bytes of files and directory trees (e.g. the clean Parquet tables
  a model was trained on); names count relative to each argument, so moving the data directory
  does not change it.
- :func:`fingerprint_frame`: the content of an in-memory polars or pandas frame: column names,
  dtypes, row order, nulls and values; not how it happens to be chunked in memory.
- :func:`feature_definitions_hash`: the Feast repo's Python definitions.
- :func:`code_version`: the git commit (``+dirty`` if tracked files changed), else the package.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any, Iterable

from recsys.errors import NotFoundError

_CHUNK = 1 << 20
_FRAME_ROWS = 1 << 20


def _expand(paths: Iterable[Path]) -> list[tuple[str, Path]]:
    entries: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if path.is_dir():
            entries += [(f"{path.name}/{f.relative_to(path).as_posix()}", f)
                        for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        elif path.is_file():
            entries.append((path.name, path))
        else:
            raise NotFoundError(f"cannot fingerprint {path}: no such file or directory")
    return sorted(entries, key=lambda e: (e[0], str(e[1])))


def fingerprint_files(paths: Iterable[Path]) -> str:
    """SHA-256 (hex) over the names, sizes and bytes of ``paths``; directories recursively.

    A file counts under its base name, a file inside a directory argument as
    ``<dir name>/<relative path>``; entries are hashed sorted by that name, so argument order and
    absolute locations do not matter. ``__pycache__`` folders are skipped.
    """
    digest = hashlib.sha256(b"recsys-files-v1\0")
    for name, path in _expand(paths):
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def feature_definitions_hash(feature_repo: Path) -> str:
    """Fingerprint of the Feast repo's ``*.py`` definitions (not ``feature_store.yaml``, which
    differs per online store, nor the registry or online databases Feast writes there)."""
    files = sorted(p for p in Path(feature_repo).rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        raise NotFoundError(f"no feature definitions (*.py) in {feature_repo}")
    digest = hashlib.sha256(b"recsys-features-v1\0")
    for path in files:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(feature_repo).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def fingerprint_frame(df: Any) -> str:
    """SHA-256 (hex) of a polars or pandas DataFrame's content (pandas: its index is ignored).

    Covers column names and order, dtypes, row order, the null mask and the values. Numeric,
    boolean and temporal columns hash their physical bytes; other types (strings, categoricals,
    lists, structs) hash their NDJSON rendering.
    """
    import numpy as np
    import polars as pl

    if not isinstance(df, pl.DataFrame):
        try:
            df = pl.from_pandas(df)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"fingerprint_frame: expected a polars or pandas DataFrame, got "
                            f"{type(df).__name__} ({exc})") from None
    digest = hashlib.sha256(b"recsys-frame-v1\0")
    digest.update(f"{df.height}\0".encode())
    for name, dtype in df.schema.items():
        digest.update(f"{name}\0{dtype}\0".encode())
    for series in df.get_columns():
        dtype = series.dtype
        numeric = dtype.is_integer() or dtype.is_float() or dtype.is_temporal() or dtype == pl.Boolean
        for start in range(0, df.height, _FRAME_ROWS):
            part = series.slice(start, _FRAME_ROWS)
            digest.update(np.packbits(part.is_null().to_numpy()).tobytes())
            if numeric:
                physical = part.to_physical()
                values = physical.fill_null(0 if physical.dtype != pl.Boolean else False).to_numpy()
                values = np.ascontiguousarray(values)
                digest.update(values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes())
            else:
                digest.update(pl.DataFrame([part]).write_ndjson().encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git:<commit>`` (``+dirty`` when tracked files differ from it), else ``pkg:<version>``."""
    from recsys import __version__
    from recsys.config import PROJECT_ROOT

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                                 text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if not commit:
        return f"pkg:{__version__}"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"git:{commit}{'+dirty' if dirty else ''}"
