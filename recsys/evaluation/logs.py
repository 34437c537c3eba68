"""Load impressions logs and policy lists, check them against their contracts, join them.

Every check is vectorised (polars expressions over the whole frame) and every failure raises
:class:`~recsys.errors.DataContractError` naming the rows (0-based row numbers in the file, or
files in name order, as read) and their values.

The log that comes out of :func:`load_log` is in *canonical order*: the rows of a request are
contiguous, positions ascending, and ``req_idx`` numbers the requests 0..R-1. A log already
written request by request (the simulator, the serving sink) is checked in one pass; any other
order is sorted first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from recsys.errors import DataContractError
from recsys.evaluation.columns import (
    CLICKED, ENTITY, ID_COLUMNS, ITEM_ID, LOG_REQUIRED, MATCH, ORDERED, POLICY_ENTITY,
    POLICY_PROPENSITY, POSITION, PROPENSITY, REQ_IDX, REQUEST_ID, ROW, SURFACE, SURFACES,
    entity_column,
)

MAX_EXAMPLES = 5


def scan_table(path: str | Path) -> pl.LazyFrame:
    """A lazy scan of a Parquet file or of every ``*.parquet`` under a directory.

    Files of a directory may differ in optional columns (e.g. the sink's ``arm``, added later):
    a column missing from a file reads as null there."""
    path = Path(path)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if not files:
            raise DataContractError(f"{path}: directory holds no *.parquet files")
        schemas = {tuple(pl.read_parquet_schema(f).items()) for f in files}
        if len(schemas) == 1:
            return pl.scan_parquet(files, row_index_name=ROW)
        frames = [pl.scan_parquet(f) for f in files]
        return pl.concat(frames, how="diagonal_relaxed").with_row_index(ROW)
    if not path.exists():
        raise DataContractError(f"{path}: no such file or directory")
    return pl.scan_parquet(path, row_index_name=ROW)


def _examples(bad: pl.DataFrame, columns: Sequence[str]) -> str:
    shown = []
    for rec in bad.head(MAX_EXAMPLES).iter_rows(named=True):
        fields = ", ".join(f"{c}={rec[c]!r}" for c in columns if c in rec)
        shown.append(f"row {rec[ROW]} ({fields})" if ROW in rec else f"({fields})")
    more = f" and {bad.height - MAX_EXAMPLES} more" if bad.height > MAX_EXAMPLES else ""
    return "; ".join(shown) + more


def _fail_rows(source: str, frame: pl.DataFrame, condition: pl.Expr, what: str, columns: Sequence[str]) -> None:
    bad = frame.filter(condition)
    if bad.height:
        raise DataContractError(
            f"{source}: {bad.height} row(s) {what}: {_examples(bad, columns)}"
        )


def _check_rows(source: str, frame: pl.DataFrame, checks: Sequence[tuple[pl.Expr, str, Sequence[str]]]) -> None:
    """Evaluate every row condition in one parallel pass; report the first that fails."""
    failing = frame.select([cond.fill_null(True).any().alias(str(i)) for i, (cond, _, _) in enumerate(checks)]).row(0)
    for hit, (cond, what, columns) in zip(failing, checks):
        if hit:
            _fail_rows(source, frame, cond.fill_null(True), what, columns)


def _require_columns(source: str, names: Iterable[str], required: Iterable[str]) -> None:
    missing = [c for c in required if c not in set(names)]
    if missing:
        raise DataContractError(f"{source}: missing required column(s) {missing}")


def normalise_ids(frame: pl.DataFrame, columns: Iterable[str], source: str) -> pl.DataFrame:
    """Integer ids become Int64, string-like ids (String, Categorical, Enum) become String."""
    casts = []
    for name in columns:
        if name not in frame.columns:
            continue
        dtype = frame.schema[name]
        if dtype.is_integer():
            casts.append(pl.col(name).cast(pl.Int64))
        elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
            casts.append(pl.col(name).cast(pl.String))
        elif dtype == pl.Null:
            continue
        else:
            raise DataContractError(f"{source}: id column {name!r} has type {dtype}; expected integers or strings")
    return frame.with_columns(casts) if casts else frame


def _boolean(frame: pl.DataFrame, name: str, source: str) -> pl.Expr:
    dtype = frame.schema[name]
    if dtype == pl.Boolean:
        return pl.col(name)
    if dtype.is_integer():
        _fail_rows(source, frame, ~pl.col(name).is_in([0, 1]), f"have {name} not in {{0, 1}}", [REQUEST_ID, POSITION, name])
        return pl.col(name).cast(pl.Boolean)
    raise DataContractError(f"{source}: column {name!r} has type {dtype}; expected Boolean")


def check_log(frame: pl.DataFrame, *, source: str = "log") -> pl.DataFrame:
    """Check one surface's rows against the impressions contract; return them in canonical order.

    Raises DataContractError for: missing columns; nulls; an unknown surface; a propensity
    outside (0, 1]; ``ordered`` without ``clicked``; a duplicate (request_id, position); a
    request whose positions are not exactly 0..n-1.
    """
    if ROW not in frame.columns:
        frame = frame.with_row_index(ROW)
    _require_columns(source, frame.columns, LOG_REQUIRED)
    frame = normalise_ids(frame, ID_COLUMNS, source)
    if not frame.schema[POSITION].is_integer():
        raise DataContractError(f"{source}: column 'position' has type {frame.schema[POSITION]}; expected integers")
    if not frame.schema[PROPENSITY].is_numeric():
        raise DataContractError(f"{source}: column 'propensity' has type {frame.schema[PROPENSITY]}; expected Float64")
    frame = frame.with_columns(
        _boolean(frame, CLICKED, source), _boolean(frame, ORDERED, source),
        pl.col(POSITION).cast(pl.Int32), pl.col(PROPENSITY).cast(pl.Float64),
    )
    key = [REQUEST_ID, POSITION]
    not_null = [c for c in LOG_REQUIRED if c != ITEM_ID]
    p = pl.col(PROPENSITY)
    checks = [
        (pl.any_horizontal(pl.col(not_null).is_null()), "have nulls in required columns", [*key, *not_null]),
        (~pl.col(SURFACE).is_in(SURFACES), "have a surface other than 'feed' or 'menu'", [*key, SURFACE]),
        ((pl.col(SURFACE) == "menu") & pl.col(ITEM_ID).is_null(), "are menu rows without item_id",
         [*key, SURFACE, ITEM_ID]),
        (~((p > 0) & (p <= 1)) | p.is_nan(), "have propensity outside (0, 1]", [*key, PROPENSITY]),
        (pl.col(ORDERED) & ~pl.col(CLICKED), "are ordered without clicked", [*key, CLICKED, ORDERED]),
        (pl.col(POSITION) < 0, "have a negative position", key),
    ]
    _check_rows(source, frame, checks)
    return _canonical_order(frame, source)


def _run_flags(frame: pl.DataFrame) -> pl.DataFrame:
    rid, pos = pl.col(REQUEST_ID), pl.col(POSITION)
    new = rid.ne_missing(rid.shift(1))
    return frame.with_columns(
        _new=new,
        _ok=pl.when(new).then(pos == 0).otherwise(pos == pos.shift(1) + 1),
        _dup=~new & (pos == pos.shift(1)),
    )


def _canonical_order(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    flagged = _run_flags(frame)
    stats = flagged.select(pl.col("_ok").all(), pl.col("_new").sum(), pl.col(REQUEST_ID).n_unique())
    ok, runs, uniq = stats.row(0)
    if not (ok and runs == uniq):
        flagged = _run_flags(frame.sort([REQUEST_ID, POSITION, ROW]))
        prev = pl.col(POSITION).shift(1)
        with_prev = flagged.with_columns(previous_position=pl.when(~pl.col("_new")).then(prev))
        _fail_rows(source, with_prev, pl.col("_dup"), "repeat a (request_id, position) pair", [REQUEST_ID, POSITION])
        _fail_rows(source, with_prev, ~pl.col("_ok"),
                   "break a request's positions 0..n-1 (gap, or not starting at 0)",
                   [REQUEST_ID, POSITION, "previous_position"])
    return flagged.with_columns((pl.col("_new").cum_sum() - 1).cast(pl.Int64).alias(REQ_IDX)).drop("_new", "_ok", "_dup")


def load_log(
    path: str | Path,
    *,
    surface: str | None = None,
    columns: Sequence[str] = (),
) -> pl.DataFrame:
    """Read, check and put in canonical order the rows of one surface of an impressions log.

    Parameters
    ----------
    path : Parquet file or directory of Parquet files.
    surface : "feed", "menu" or None (None: the log must hold a single surface).
    columns : extra columns to keep besides the contract's (e.g. slice columns); every column
        is kept when ``columns == ("*",)``.
    """
    source = f"log {path}"
    lazy = scan_table(path)
    names = lazy.collect_schema().names()
    _require_columns(source, names, LOG_REQUIRED)
    if surface is not None and surface not in SURFACES:
        raise DataContractError(f"surface={surface!r}: expected one of {SURFACES}")
    if tuple(columns) == ("*",):
        keep = names
    else:
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise DataContractError(f"{source}: no column(s) {unknown}; columns are {names}")
        optional = [c for c in ("policy", "n_candidates") if c in names]
        keep = list(dict.fromkeys([ROW, *LOG_REQUIRED, *optional, *columns]))
    frame = lazy.select(keep).collect()
    if surface is None:
        present = frame[SURFACE].drop_nulls().unique().sort().to_list()
        if len(present) > 1:
            raise DataContractError(f"{source}: holds surfaces {present}; choose one (--surface)")
        surface = present[0] if present else "feed"
    frame = frame.filter(pl.col(SURFACE) == surface)
    if frame.height == 0:
        raise DataContractError(f"{source}: no rows on surface {surface!r}")
    return check_log(frame, source=source).with_columns(pl.col(entity_column(surface)).alias(ENTITY))


def check_policy_lists(frame: pl.DataFrame, *, surface: str, source: str = "policy lists") -> pl.DataFrame:
    """Check policy lists; return ``row, request_id, position, policy_entity, policy_propensity``.

    A repeated (request_id, position) is reported by :func:`join_policy`, which finds it for
    free (for the requests the log holds; lists of other requests are never read further).

    ``policy_propensity`` (optional in the input, default 1.0) is the policy's probability of
    showing that entry at that position: 1 for a deterministic policy.
    """
    ent = entity_column(surface)
    if ROW not in frame.columns:
        frame = frame.with_row_index(ROW)
    _require_columns(source, frame.columns, (REQUEST_ID, POSITION, ent))
    frame = normalise_ids(frame, (REQUEST_ID, ent), source)
    if not frame.schema[POSITION].is_integer():
        raise DataContractError(f"{source}: column 'position' has type {frame.schema[POSITION]}; expected integers")
    if POLICY_PROPENSITY not in frame.columns:
        frame = frame.with_columns(pl.lit(1.0).alias(POLICY_PROPENSITY))
    frame = frame.select(ROW, REQUEST_ID, pl.col(POSITION).cast(pl.Int32), pl.col(ent).alias(POLICY_ENTITY),
                         pl.col(POLICY_PROPENSITY).cast(pl.Float64))
    key = [REQUEST_ID, POSITION]
    q = pl.col(POLICY_PROPENSITY)
    _check_rows(source, frame, [
        (pl.any_horizontal(pl.col(REQUEST_ID, POSITION, POLICY_ENTITY).is_null()),
         f"have a null request_id, position or {ent}", [*key, POLICY_ENTITY]),
        (pl.col(POSITION) < 0, "have a negative position", key),
        (~((q >= 0) & (q <= 1)) | q.is_nan(), "have policy_propensity outside [0, 1]", [*key, POLICY_PROPENSITY]),
    ])
    return frame


def load_policy_lists(path: str | Path, *, surface: str) -> pl.DataFrame:
    """Read and check a Parquet file (or directory) of policy lists for one surface."""
    source = f"policy lists {path}"
    lazy = scan_table(path)
    names = lazy.collect_schema().names()
    ent = entity_column(surface)
    _require_columns(source, names, (REQUEST_ID, POSITION, ent))
    keep = [c for c in (ROW, REQUEST_ID, POSITION, ent, POLICY_PROPENSITY) if c in names]
    return check_policy_lists(lazy.select(keep).collect(), surface=surface, source=source)


def join_policy(log: pl.DataFrame, lists: pl.DataFrame, *, surface: str) -> pl.DataFrame:
    """Attach a policy's entry to every logged slot; ``match`` says it equals the logged entry.

    ``log`` comes from :func:`load_log` (canonical order), ``lists`` from
    :func:`check_policy_lists`. Slots the policy leaves empty get a null ``policy_entity`` and
    ``match = False``; policy entries at (request, position) pairs the log does not hold cannot be
    evaluated and are ignored. The log's row order is kept.

    The join is one single-key join of the lists to the log's requests; the (request, position)
    pair then addresses the log row directly (``first row of the request + position``), because
    the log is in canonical order.
    """
    ent = entity_column(surface)
    for left, right, shown in ((REQUEST_ID, REQUEST_ID, REQUEST_ID), (ent, POLICY_ENTITY, ent)):
        lt, rt = log.schema[left], lists.schema[right]
        if lt != rt and pl.Null not in (lt, rt):
            raise DataContractError(
                f"id types differ: the log's {left} is {lt} but the policy's {shown} is {rt}; "
                "write both as integers or both as strings"
            )
    if lists.schema[POLICY_ENTITY] != log.schema[ent]:
        lists = lists.with_columns(pl.col(POLICY_ENTITY).cast(log.schema[ent]))
    req_idx = log[REQ_IDX].to_numpy()
    n_rows = log.height
    first_row = np.flatnonzero(np.r_[True, req_idx[1:] != req_idx[:-1]])  # row of each request's position 0
    sizes = np.diff(np.r_[first_row, n_rows])
    requests = log[first_row].select(REQUEST_ID, REQ_IDX)
    located = lists.join(requests, on=REQUEST_ID, how="inner")
    r = located[REQ_IDX].to_numpy()
    pos = located[POSITION].to_numpy().astype(np.int64)
    inside = pos < sizes[r]
    target_row = first_row[r[inside]] + pos[inside]
    located = located.filter(pl.Series(inside))
    counts = np.bincount(target_row, minlength=n_rows)
    if counts.max(initial=0) > 1:
        dup_rows = np.flatnonzero(counts[target_row] > 1)
        _fail_rows("policy lists", located[dup_rows], pl.lit(True), "repeat a (request_id, position) pair",
                   [REQUEST_ID, POSITION, POLICY_ENTITY])
    entity = pl.Series(POLICY_ENTITY, dtype=log.schema[ent]).extend_constant(None, n_rows)
    entity = entity.scatter(target_row, located[POLICY_ENTITY])
    prop = np.zeros(n_rows)
    prop[target_row] = located[POLICY_PROPENSITY].to_numpy()
    out = log.drop([c for c in (POLICY_ENTITY, POLICY_PROPENSITY, MATCH) if c in log.columns])
    return out.with_columns(entity, pl.Series(POLICY_PROPENSITY, prop)).with_columns(
        (pl.col(POLICY_ENTITY) == pl.col(ENTITY)).fill_null(False).alias(MATCH),
    )
