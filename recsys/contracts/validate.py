"""Check tables against their contract: a report, the clean rows, the bad rows. Never a silent drop.

:func:`validate_table` turns every rule of a :class:`~recsys.contracts.schemas.TableSchema` into
one boolean polars expression ("this row breaks the rule"), evaluated over the whole frame at
once. A row breaking any quarantining rule is a bad row; every other row is kept. Unseen
vocabulary values are not bad: they become ``unknown`` in the clean frame and are counted.

:func:`validate_dataset` is the ``recsys validate`` job: raw Parquet in, clean and quarantine
Parquet and ``reports/validation.json`` out, PII removed from users first, every write atomic.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from recsys.config import Config
from recsys.contracts.pii import remove_pii
from recsys.contracts.schemas import SCHEMAS, UNKNOWN, Column, Range, Rule, TableSchema
from recsys.errors import DataContractError

#: Tables validated by :func:`validate_dataset`, in dependency order (referenced tables first).
DATASET_TABLES: tuple[str, ...] = ("restaurants", "items", "users", "impressions")
BROKEN_RULES = "broken_rules"
N_EXAMPLES = 5
_BAD = "__bad"


# ---------------------------------------------------------------- reports
@dataclass(frozen=True)
class RuleReport:
    """How many rows broke one rule, with up to five examples."""

    rule: str  # label, e.g. "range(price)"
    kind: str
    column: str
    bad_rows: int
    examples: tuple[dict[str, Any], ...]
    quarantines: bool  # False: unseen vocabulary, mapped to `unknown` and kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule, "kind": self.kind, "column": self.column,
            "bad_rows": self.bad_rows, "quarantines": self.quarantines,
            "examples": [{k: _jsonable(v) for k, v in ex.items()} for ex in self.examples],
        }


@dataclass(frozen=True)
class TableReport:
    """The validation of one table: row counts and every rule that some row broke."""

    table: str
    rows: int
    bad_rows: int
    max_bad_share: float
    rules: tuple[RuleReport, ...]

    @property
    def clean_rows(self) -> int:
        return self.rows - self.bad_rows

    @property
    def bad_share(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0

    @property
    def exceeds(self) -> bool:
        return self.bad_share > self.max_bad_share

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table, "rows": self.rows, "clean_rows": self.clean_rows,
            "bad_rows": self.bad_rows, "bad_share": self.bad_share,
            "max_bad_share": self.max_bad_share, "exceeds": self.exceeds,
            "rules": [r.to_dict() for r in self.rules],
        }


@dataclass(frozen=True)
class ValidationResult:
    """Report, clean rows and bad rows of one table.

    ``clean`` and ``bad`` are DataFrames when the input was a DataFrame, LazyFrames when it was
    a LazyFrame. ``bad`` has the input's columns (values as received, after type casts) plus
    ``broken_rules``, the list of rule labels each row broke.
    """

    report: TableReport
    clean: pl.DataFrame | pl.LazyFrame
    bad: pl.DataFrame | pl.LazyFrame


@dataclass(frozen=True)
class DatasetReport:
    """The validation of the raw dataset, one :class:`TableReport` per table."""

    tables: tuple[TableReport, ...]
    max_bad_share: float

    @property
    def passed(self) -> bool:
        return not any(t.exceeds for t in self.tables)

    def table(self, name: str) -> TableReport:
        return next(t for t in self.tables if t.table == name)

    def raise_for_share(self) -> None:
        """Raise :class:`DataContractError` naming every table above ``max_bad_share``."""
        over = [t for t in self.tables if t.exceeds]
        if over:
            listed = ", ".join(
                f"{t.table}: {t.bad_rows}/{t.rows} bad rows ({t.bad_share:.2%})" for t in over
            )
            raise DataContractError(
                f"bad-row share above max_bad_share={self.max_bad_share:.2%}: {listed}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "max_bad_share": self.max_bad_share,
            "tables": [t.to_dict() for t in self.tables],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ---------------------------------------------------------------- types
def _type_name(col: Column) -> str:
    return " or ".join(str(t) for t in col.dtypes)


def _accepts(col: Column, actual: pl.DataType) -> bool:
    return any(actual == t for t in col.dtypes)


def _cast_expr(col: Column, actual: pl.DataType) -> pl.Expr:
    """Expression casting ``col`` to its contract type; values that do not cast become null."""
    c, target = pl.col(col.name), col.dtype
    if isinstance(target, pl.Datetime):
        if isinstance(actual, pl.Datetime):
            c = c.dt.replace_time_zone("UTC") if actual.time_zone is None else c.dt.convert_time_zone("UTC")
            return c.dt.cast_time_unit(target.time_unit)
        if actual == pl.Date:
            return c.cast(pl.Datetime(target.time_unit)).dt.replace_time_zone("UTC")
        if actual == pl.Utf8:
            return c.str.to_datetime(time_unit=target.time_unit, time_zone="UTC", strict=False)
    return c.cast(target, strict=False)


def conform(frame: pl.LazyFrame, schema: TableSchema) -> pl.LazyFrame:
    """Check required columns are present and cast columns to their contract types.

    Raises
    ------
    DataContractError
        A required column is missing, or some value of a column cannot be cast to its type.
    """
    actual = frame.collect_schema()
    missing = [c for c in schema.columns if c.required and c.name not in actual]
    if missing:
        listed = ", ".join(f"{c.name!r} (expected {_type_name(c)})" for c in missing)
        raise DataContractError(f"table {schema.name!r}: missing required column(s) {listed}")
    casts = []
    for col in schema.columns:
        if col.name not in actual or _accepts(col, actual[col.name]):
            continue
        cast = _cast_expr(col, actual[col.name])
        failed = pl.col(col.name).is_not_null() & cast.is_null()
        try:
            example = frame.filter(failed).select(col.name).head(1).collect()
        except pl.exceptions.PolarsError as exc:
            raise DataContractError(
                f"table {schema.name!r}: column {col.name!r} of type {actual[col.name]} "
                f"cannot be cast to {col.dtype}: {exc}"
            ) from None
        if example.height:
            raise DataContractError(
                f"table {schema.name!r}: column {col.name!r} has value {example.item()!r} "
                f"that cannot be cast to {col.dtype} (type found: {actual[col.name]})"
            )
        casts.append(cast.alias(col.name))
    return frame.with_columns(casts) if casts else frame


# ---------------------------------------------------------------- rules as expressions
def _bound(value: Any, params: Mapping[str, Any], rule: Rule) -> Any:
    if isinstance(value, str):
        if params.get(value) is None:
            raise DataContractError(f"rule {rule.name}: parameter {value!r} is required to validate")
        return params[value]
    return value


def _out_of_range(c: pl.Expr, r: Range, params: Mapping[str, Any], rule: Rule, floating: bool) -> pl.Expr:
    ok = pl.lit(True)
    for bound, op in ((r.ge, pl.Expr.__ge__), (r.gt, pl.Expr.__gt__), (r.le, pl.Expr.__le__), (r.lt, pl.Expr.__lt__)):
        if bound is not None:
            ok = ok & op(c, _bound(bound, params, rule))
    bad = ~ok | c.is_nan() if floating else ~ok
    return c.is_not_null() & bad


def _in(c: pl.Expr, values: pl.Series) -> pl.Expr:
    return c.is_in(pl.lit(values).implode())


def _rule_expr(
    rule: Rule, schema: pl.Schema, params: Mapping[str, Any], refs: Mapping[tuple[str, str], pl.Series]
) -> pl.Expr:
    """Boolean expression, true on the rows that break ``rule`` (never null)."""
    cols = [pl.col(name) for name in rule.columns]
    first = cols[0]
    kind = rule.kind
    if kind == "not_null":
        bad = first.is_null()
    elif kind == "range":
        bad = _out_of_range(first, rule.range, params, rule, schema[rule.columns[0]].is_float())
    elif kind in ("vocabulary", "one_of"):
        bad = first.is_not_null() & ~_in(first, pl.Series(rule.vocabulary, dtype=pl.Utf8))
    elif kind == "unique":
        bad = pl.all_horizontal(c.is_not_null() for c in cols) & (pl.len().over(cols) > 1)
    elif kind == "implies":
        bad = first & ~cols[1]
    elif kind == "null_iff":
        bad = first.is_null() != (cols[1] == rule.value)
    elif kind == "contiguous":
        group, position = cols
        gap = (position.min().over(group) != 0) | (
            position.max().over(group) + 1 != position.drop_nulls().n_unique().over(group)
        )
        bad = group.is_not_null() & gap
    elif kind == "references":
        keys = refs[rule.ref]
        bad = first.is_not_null() & ~_in(first, keys.cast(schema[rule.columns[0]], strict=False).drop_nulls())
    elif kind == "any_not_null":
        bad = ~pl.any_horizontal(c.is_not_null() for c in cols)
    else:  # pragma: no cover - RuleKind is closed
        raise ValueError(f"unknown rule kind {kind!r}")
    return bad.fill_null(False)


def _applicable_rules(schema: TableSchema, present: set[str], refs: Mapping[str, Any]) -> list[Rule]:
    """The rules that can be checked on this frame.

    Rules on absent optional columns are skipped, and so are references to tables not given
    (a table validated on its own); ``any_not_null`` keeps only its present columns.
    """
    rules = []
    for rule in schema.all_rules():
        if rule.kind == "any_not_null":
            columns = tuple(c for c in rule.columns if c in present)
            if not columns:
                raise DataContractError(
                    f"table {schema.name!r}: needs one of the columns {', '.join(rule.columns)}"
                )
            rules.append(Rule(rule.kind, columns))
        elif rule.kind == "references" and rule.ref[0] not in refs:
            continue
        elif all(c in present for c in rule.columns):
            rules.append(rule)
    return rules


def _reference_keys(
    rules: list[Rule], references: Mapping[str, pl.DataFrame | pl.LazyFrame]
) -> dict[tuple[str, str], pl.Series]:
    """The distinct keys of each referenced (table, column)."""
    keys: dict[tuple[str, str], pl.Series] = {}
    for rule in rules:
        if rule.kind == "references" and rule.ref not in keys:
            table, column = rule.ref
            keys[rule.ref] = references[table].lazy().select(pl.col(column).unique()).collect().to_series()
    return keys


# ---------------------------------------------------------------- validate one table
def validate_table(
    df: pl.DataFrame | pl.LazyFrame,
    schema: TableSchema,
    *,
    n_cells: int | None = None,
    max_bad_share: float = 0.01,
    references: Mapping[str, pl.DataFrame | pl.LazyFrame] | None = None,
    spill_dir: Path | None = None,
) -> ValidationResult:
    """Validate one table against its schema.

    Parameters
    ----------
    df : polars.DataFrame or polars.LazyFrame
        The raw table. Extra columns are kept.
    schema : TableSchema
        Its contract, e.g. ``recsys.contracts.schemas.ITEMS``.
    n_cells : int, optional
        Number of grid cells (``grid_size ** 2``), the upper bound of cell columns.
    max_bad_share : float
        Recorded in the report (``report.exceeds``); this function does not raise on it.
    references : mapping of table name to frame, optional
        Clean referenced tables for ``references`` rules (e.g. ``{"restaurants": clean}``);
        rules whose table is not given are skipped.
    spill_dir : Path, optional
        For a LazyFrame input: write the rule flags there once (streaming) and read them back,
        so that large tables are scanned once rather than once per output.

    Returns
    -------
    ValidationResult
        Report, clean frame and bad frame (``clean.height + bad.height == rows``).

    Raises
    ------
    DataContractError
        A required column is missing or cannot be cast to its type.
    """
    eager = isinstance(df, pl.DataFrame)
    frame = conform(df.lazy(), schema)
    types = frame.collect_schema()
    present = set(types.names())
    refs = references or {}
    rules = _applicable_rules(schema, present, refs)
    params = {"n_cells": n_cells}
    keys = _reference_keys(rules, refs)
    flags = [f"__rule_{i}" for i in range(len(rules))]
    exprs = [_rule_expr(r, types, params, keys).alias(f) for r, f in zip(rules, flags)]
    quarantining = [f for r, f in zip(rules, flags) if r.quarantines]
    flagged = frame.with_columns(exprs).with_columns(
        pl.any_horizontal(quarantining).alias(_BAD) if quarantining else pl.lit(False).alias(_BAD)
    )
    if eager:
        flagged = flagged.collect().lazy()
    elif spill_dir is not None:
        spill = Path(spill_dir) / f"{schema.name}.flagged.parquet"
        flagged.sink_parquet(spill)
        flagged = pl.scan_parquet(spill)

    report = _report(flagged, schema, rules, flags, max_bad_share)
    remap = [  # unseen vocabulary values (flagged, never null) become UNKNOWN
        pl.when(pl.col(f)).then(pl.lit(UNKNOWN)).otherwise(pl.col(r.columns[0])).alias(r.columns[0])
        for r, f in zip(rules, flags) if r.kind == "vocabulary"
    ]
    clean = flagged.filter(~pl.col(_BAD)).with_columns(remap).drop(*flags, _BAD)
    broken = pl.concat_list(
        [pl.when(pl.col(f)).then(pl.lit(r.name)) for r, f in zip(rules, flags) if r.quarantines]
        or [pl.lit(None, dtype=pl.Utf8)]
    ).list.drop_nulls()
    bad = flagged.filter(pl.col(_BAD)).with_columns(broken.alias(BROKEN_RULES)).drop(*flags, _BAD)
    if eager:
        return ValidationResult(report, clean.collect(), bad.collect())
    return ValidationResult(report, clean, bad)


def _report(
    flagged: pl.LazyFrame, schema: TableSchema, rules: list[Rule], flags: list[str], max_bad_share: float
) -> TableReport:
    counts = flagged.select(
        pl.len().alias("__rows"),
        pl.col(_BAD).sum().alias(_BAD),
        *(pl.col(f).sum() for f in flags),
    ).collect().row(0, named=True)
    entries = []
    for rule, flag in zip(rules, flags):
        n = int(counts[flag])
        if n == 0:
            continue
        entries.append(RuleReport(
            rule=rule.name, kind=rule.kind, column=",".join(rule.columns), bad_rows=n,
            examples=_examples(flagged, schema, rule, flag), quarantines=rule.quarantines,
        ))
    return TableReport(
        table=schema.name, rows=int(counts["__rows"]), bad_rows=int(counts[_BAD] or 0),
        max_bad_share=max_bad_share, rules=tuple(entries),
    )


def _examples(flagged: pl.LazyFrame, schema: TableSchema, rule: Rule, flag: str) -> tuple[dict[str, Any], ...]:
    """Up to five examples: the unseen values with their counts, or offending rows (key + columns)."""
    rows = flagged.filter(pl.col(flag))
    if rule.kind == "vocabulary":
        col = rule.columns[0]
        out = (rows.group_by(col).agg(pl.len().alias("rows"))
               .sort(["rows", col], descending=[True, False]).head(N_EXAMPLES))
    else:
        present = flagged.collect_schema().names()
        cols = [c for c in dict.fromkeys((*schema.key, *rule.columns)) if c in present]
        out = rows.select(cols).head(N_EXAMPLES)
    return tuple(out.collect().to_dicts())


# ---------------------------------------------------------------- the dataset job
def _scan_raw(raw_dir: Path, table: str) -> pl.LazyFrame:
    path = raw_dir / f"{table}.parquet"
    if path.is_dir():  # partitioned: raw/<table>.parquet/part-*.parquet
        return pl.scan_parquet(path / "**" / "*.parquet")
    if not path.exists():
        raise DataContractError(f"raw table {table!r} not found: {path}")
    return pl.scan_parquet(path)


def _atomic_parquet(frame: pl.DataFrame | pl.LazyFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` through a temporary file in the same directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(tmp)
        else:
            frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(text: str, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def validate_dataset(config: Config, *, strict: bool = True) -> DatasetReport:
    """Validate the raw tables and write clean, quarantine and report files.

    Reads ``raw_dir/{restaurants,items,users,impressions}.parquet``; removes PII from users
    before anything else (``config.validation.pii_mode``); checks every rule, including
    references (items -> restaurants; impressions -> users, restaurants, items, each against
    the *clean* referenced table). Writes ``quarantine_dir/<table>.parquet`` (exactly the bad
    rows, possibly none), ``reports_dir/validation.json``, and, when every table is within
    ``max_bad_share``, ``clean_dir/<table>.parquet``. Each write is atomic; running twice on
    the same input gives the same files.

    Parameters
    ----------
    config : Config
        Paths, ``validation`` settings and the grid size (``sim``).
    strict : bool
        Raise when a table is above ``max_bad_share`` (after writing the report).

    Raises
    ------
    DataContractError
        A raw table is missing, lacks a required column or has uncastable values (nothing is
        written), or a table's bad-row share is above ``max_bad_share`` (clean files are not
        published; quarantine and report are written).
    """
    settings = config.validation
    grid_size = config.sim.resolved()["grid_size"]
    for directory in (config.clean_dir, config.quarantine_dir, config.reports_dir):
        directory.mkdir(parents=True, exist_ok=True)
    results: dict[str, ValidationResult] = {}
    with tempfile.TemporaryDirectory(dir=config.data_dir, prefix=".validate-") as spill:
        for table in DATASET_TABLES:
            raw = _scan_raw(config.raw_dir, table)
            if table == "users":
                raw = remove_pii(raw, settings.pii_columns, mode=settings.pii_mode, salt=settings.pii_salt)
            results[table] = validate_table(
                raw, SCHEMAS[table], n_cells=grid_size ** 2, max_bad_share=settings.max_bad_share,
                references={name: r.clean for name, r in results.items()}, spill_dir=Path(spill),
            )
        report = DatasetReport(tuple(r.report for r in results.values()), settings.max_bad_share)
        for table, result in results.items():
            _atomic_parquet(result.bad, config.quarantine_dir / f"{table}.parquet")
        if report.passed:
            for table, result in results.items():
                _atomic_parquet(result.clean, config.clean_dir / f"{table}.parquet")
    _atomic_text(json.dumps(report.to_dict(), indent=2) + "\n", config.reports_dir / "validation.json")
    if strict:
        report.raise_for_share()
    return report
