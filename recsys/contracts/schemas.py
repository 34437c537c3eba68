"""The data contracts in code: one declarative :class:`TableSchema` per table.

This module is data, not logic: columns with their type, nullability, range and vocabulary, and
table rules (uniqueness, cross-column rules, references). :mod:`recsys.contracts.validate` turns
each rule into a vectorised polars expression. The prose form is ``docs/DATA_CONTRACTS.md``.

A range bound given as a string names a parameter supplied at validation time (``"n_cells"``:
the number of grid cells, ``grid_size ** 2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

# ---- vocabularies (imported by the simulator: keep values and order stable) ----
CUISINES: tuple[str, ...] = (
    "pizza", "burger", "sushi", "indian", "chinese", "thai",
    "mexican", "italian", "vegan", "dessert", "breakfast", "kebab",
)
ITEM_CATEGORIES: tuple[str, ...] = ("main", "side", "starter", "drink", "dessert")
PLATFORMS: tuple[str, ...] = ("ios", "android", "web")
SURFACES: tuple[str, ...] = ("feed", "menu")
ARMS: tuple[str, ...] = ("control", "treatment")  # A/B arms of the serving logs
#: The level an unseen vocabulary value is mapped to (counted in the report, not quarantined).
UNKNOWN = "unknown"

TIMESTAMP = pl.Datetime("us", "UTC")

Bound = int | float | str | None
RuleKind = Literal[
    "not_null",      # columns[0] is not null
    "range",         # columns[0] within `range` (nulls pass; see not_null)
    "vocabulary",    # columns[0] in `vocabulary`; unseen -> UNKNOWN, counted but not quarantined
    "one_of",        # columns[0] in `vocabulary`; anything else is a bad row
    "unique",        # the tuple of `columns` is unique over the table
    "implies",       # columns[0] true implies columns[1] true
    "null_iff",      # columns[0] is null exactly when columns[1] == value
    "contiguous",    # per group columns[0], values of columns[1] are 0..n-1 without gaps
    "references",    # columns[0] (if not null) exists in table `ref[0]`, column `ref[1]`
    "any_not_null",  # at least one of `columns` present and not null
]


@dataclass(frozen=True)
class Range:
    """Bounds on a numeric column; a string bound names a validation-time parameter."""

    ge: Bound = None
    gt: Bound = None
    le: Bound = None
    lt: Bound = None

    def __str__(self) -> str:
        low = f"{self.ge} <= " if self.ge is not None else f"{self.gt} < " if self.gt is not None else ""
        high = f" <= {self.le}" if self.le is not None else f" < {self.lt}" if self.lt is not None else ""
        return f"{low}x{high}"


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Parameters
    ----------
    name : str
        Column name (the contract).
    dtypes : tuple of polars data types
        Accepted types; a column of another type is cast to the first one, strictly.
    nullable : bool
        Whether nulls are allowed.
    required : bool
        Whether the column must be present.
    range : Range, optional
        Bounds on the values.
    vocabulary : tuple of str, optional
        Allowed values.
    unseen : {"unknown", "bad"}
        What an unseen vocabulary value becomes: mapped to ``UNKNOWN`` or a bad row.
    """

    name: str
    dtypes: tuple[pl.DataType | type[pl.DataType], ...]
    nullable: bool = True
    required: bool = True
    range: Range | None = None
    vocabulary: tuple[str, ...] | None = None
    unseen: Literal["unknown", "bad"] = "unknown"

    @property
    def dtype(self) -> pl.DataType | type[pl.DataType]:
        """The type the column has after validation (unless already another accepted type)."""
        return self.dtypes[0]


@dataclass(frozen=True)
class Rule:
    """One check over a table; see :data:`RuleKind` for what each kind means."""

    kind: RuleKind
    columns: tuple[str, ...]
    range: Range | None = None
    vocabulary: tuple[str, ...] | None = None
    value: str | None = None
    ref: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        """Label used in reports and in the quarantine's ``broken_rules``, e.g. ``range(price)``."""
        return f"{self.kind}({','.join(self.columns)})"

    @property
    def quarantines(self) -> bool:
        """Whether a row breaking this rule is a bad row (unseen vocabulary values are not)."""
        return self.kind != "vocabulary"


@dataclass(frozen=True)
class TableSchema:
    """A table's contract: its columns, its key and its table-level rules."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    rules: tuple[Rule, ...] = field(default=())

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def all_rules(self) -> tuple[Rule, ...]:
        """Column rules (not null, range, vocabulary) followed by the table rules."""
        out: list[Rule] = []
        for col in self.columns:
            if not col.nullable:
                out.append(Rule("not_null", (col.name,)))
            if col.range is not None:
                out.append(Rule("range", (col.name,), range=col.range))
            if col.vocabulary is not None:
                kind = "vocabulary" if col.unseen == "unknown" else "one_of"
                out.append(Rule(kind, (col.name,), vocabulary=col.vocabulary))
        return (*out, *self.rules)


INT_ID = (pl.Int64,)
ANY_ID = (pl.Int64, pl.Utf8)  # "Int64 or Utf8"
NON_NEGATIVE = Range(ge=0)
CELL = Range(ge=0, lt="n_cells")

USERS = TableSchema(
    name="users",
    columns=(
        Column("user_id", INT_ID, nullable=False, range=NON_NEGATIVE),
        Column("home_cell", (pl.Int32,), nullable=False, range=CELL),
        Column("signup_ts", (TIMESTAMP,), nullable=False),
        Column("platform", (pl.Utf8,), vocabulary=PLATFORMS),
    ),
    key=("user_id",),
    rules=(Rule("unique", ("user_id",)),),
)

RESTAURANTS = TableSchema(
    name="restaurants",
    columns=(
        Column("restaurant_id", INT_ID, nullable=False, range=NON_NEGATIVE),
        Column("cell", (pl.Int32,), nullable=False, range=CELL),
        Column("cuisine", (pl.Utf8,), vocabulary=CUISINES),
        Column("price_level", (pl.Int8,), range=Range(ge=1, le=4)),
        Column("rating", (pl.Float32,), range=Range(ge=1.0, le=5.0)),
        Column("open_hour", (pl.Int8,), range=Range(ge=0, le=23)),
        Column("close_hour", (pl.Int8,), range=Range(ge=1, le=24)),
        Column("created_ts", (TIMESTAMP,), nullable=False),
    ),
    key=("restaurant_id",),
    rules=(Rule("unique", ("restaurant_id",)),),
)

ITEMS = TableSchema(
    name="items",
    columns=(
        Column("item_id", INT_ID, nullable=False, range=NON_NEGATIVE),
        Column("restaurant_id", INT_ID, nullable=False),
        Column("category", (pl.Utf8,), vocabulary=ITEM_CATEGORIES),
        Column("price", (pl.Float32,), range=Range(gt=0.0, le=500.0)),
    ),
    key=("item_id",),
    rules=(
        Rule("unique", ("item_id",)),
        Rule("references", ("restaurant_id",), ref=("restaurants", "restaurant_id")),
    ),
)

IMPRESSIONS = TableSchema(
    name="impressions",
    columns=(
        Column("request_id", ANY_ID, nullable=False),
        Column("ts", (TIMESTAMP,), nullable=False),
        Column("user_id", ANY_ID, nullable=False),
        Column("surface", (pl.Utf8,), nullable=False, vocabulary=SURFACES, unseen="bad"),
        Column("restaurant_id", ANY_ID, nullable=False),
        Column("item_id", ANY_ID),
        Column("position", (pl.Int16,), nullable=False, range=NON_NEGATIVE),
        Column("propensity", (pl.Float64,), nullable=False, range=Range(gt=0.0, le=1.0)),
        Column("policy", (pl.Utf8,), nullable=False),
        Column("clicked", (pl.Boolean,), nullable=False),
        Column("ordered", (pl.Boolean,), nullable=False),
        Column("n_candidates", (pl.Int32,), required=False, range=Range(ge=1)),
        Column("arm", (pl.Utf8,), required=False, vocabulary=ARMS, unseen="bad"),
    ),
    key=("request_id", "position"),
    rules=(
        Rule("unique", ("request_id", "position")),
        Rule("contiguous", ("request_id", "position")),
        Rule("implies", ("ordered", "clicked")),
        Rule("null_iff", ("item_id", "surface"), value="feed"),
        Rule("references", ("user_id",), ref=("users", "user_id")),
        Rule("references", ("restaurant_id",), ref=("restaurants", "restaurant_id")),
        Rule("references", ("item_id",), ref=("items", "item_id")),
    ),
)

POLICY_LISTS = TableSchema(
    name="policy_lists",
    columns=(
        Column("request_id", ANY_ID, nullable=False),
        Column("position", (pl.Int16,), nullable=False, range=NON_NEGATIVE),
        Column("restaurant_id", ANY_ID, required=False),
        Column("item_id", ANY_ID, required=False),
    ),
    key=("request_id", "position"),
    rules=(
        Rule("unique", ("request_id", "position")),
        Rule("any_not_null", ("restaurant_id", "item_id")),
    ),
)

SCHEMAS: dict[str, TableSchema] = {
    s.name: s for s in (USERS, RESTAURANTS, ITEMS, IMPRESSIONS, POLICY_LISTS)
}
