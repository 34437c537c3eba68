"""Data contracts: every rule reports its bad rows, nothing valid is dropped, bad rows quarantined."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from recsys.config import Config, SimConfig, ValidationConfig
from recsys.contracts.schemas import (
    CUISINES,
    IMPRESSIONS,
    ITEM_CATEGORIES,
    ITEMS,
    PLATFORMS,
    POLICY_LISTS,
    RESTAURANTS,
    SCHEMAS,
    UNKNOWN,
    USERS,
)
from recsys.contracts.validate import BROKEN_RULES, validate_dataset, validate_table
from recsys.errors import DataContractError

T0 = datetime(2026, 10, 1, 12, tzinfo=timezone.utc)
N_CELLS = 36  # the "tiny" preset: grid 6 x 6


def valid_tables() -> dict[str, pl.DataFrame]:
    """A tiny world that satisfies every contract (see docs/DATA_CONTRACTS.md)."""
    users = pl.DataFrame({
        "user_id": [0, 1, 2, 3],
        "home_cell": pl.Series([0, 5, 10, 35], dtype=pl.Int32),
        "signup_ts": [T0] * 4,
        "platform": ["ios", "android", "web", "ios"],
    })
    restaurants = pl.DataFrame({
        "restaurant_id": [10, 11, 12],
        "cell": pl.Series([1, 2, 3], dtype=pl.Int32),
        "cuisine": ["pizza", "sushi", "thai"],
        "price_level": pl.Series([1, 2, 4], dtype=pl.Int8),
        "rating": pl.Series([4.5, 1.0, 5.0], dtype=pl.Float32),
        "open_hour": pl.Series([8, 10, 0], dtype=pl.Int8),
        "close_hour": pl.Series([22, 23, 24], dtype=pl.Int8),
        "created_ts": [T0] * 3,
    })
    items = pl.DataFrame({
        "item_id": [100, 101, 102, 103, 104, 105],
        "restaurant_id": [10, 10, 11, 11, 12, 12],
        "category": ["main", "side", "main", "drink", "dessert", "starter"],
        "price": pl.Series([9.5, 3.0, 12.0, 2.5, 6.0, 500.0], dtype=pl.Float32),
    })
    impressions = pl.DataFrame({
        "request_id": [1, 1, 1, 2, 2, 3, 3],
        "ts": [T0] * 7,
        "user_id": [0, 0, 0, 1, 1, 2, 2],
        "surface": ["feed", "feed", "feed", "menu", "menu", "menu", "menu"],
        "restaurant_id": [10, 11, 12, 10, 10, 11, 11],
        "item_id": [None, None, None, 100, 101, 102, 103],
        "position": pl.Series([0, 1, 2, 0, 1, 1, 0], dtype=pl.Int16),
        "propensity": [0.9, 0.9, 1.0, 0.05, 0.95, 0.5, 0.5],
        "policy": ["sim-v1"] * 7,
        "clicked": [True, False, False, True, False, False, False],
        "ordered": [True, False, False, False, False, False, False],
    })
    return {"users": users, "restaurants": restaurants, "items": items, "impressions": impressions}


def set_value(df: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    """A copy of ``df`` with one cell replaced."""
    dtype = df.schema[column] if column in df.columns else None
    new = pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value, dtype=dtype))
    return df.with_columns(new.otherwise(pl.col(column)).alias(column))


def write_raw(data_dir: Path, tables: dict[str, pl.DataFrame]) -> None:
    raw = data_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.write_parquet(raw / f"{name}.parquet")


def make_config(data_dir: Path, **validation) -> Config:
    return Config(data_dir=data_dir, sim=SimConfig(size="tiny"), validation=ValidationConfig(**validation))


def report_counts(result) -> dict[str, int]:
    return {r.rule: r.bad_rows for r in result.report.rules}


# ---------------------------------------------------------------- schemas
def test_vocabularies_have_the_contract_values_in_order():
    assert CUISINES == ("pizza", "burger", "sushi", "indian", "chinese", "thai", "mexican",
                        "italian", "vegan", "dessert", "breakfast", "kebab")
    assert ITEM_CATEGORIES == ("main", "side", "starter", "drink", "dessert")
    assert PLATFORMS == ("ios", "android", "web")


def test_valid_tables_pass_every_rule():
    tables = valid_tables()
    for name, df in tables.items():
        result = validate_table(df, SCHEMAS[name], n_cells=N_CELLS, references=tables)
        assert result.report.bad_rows == 0, result.report.to_dict()
        assert result.clean.height == df.height


# ---------------------------------------------------------------- every rule kind
CASES = [
    # (table, mutation, rule label, bad rows)
    ("users", lambda t: set_value(t, 1, "home_cell", None), "not_null(home_cell)", 1),
    ("users", lambda t: set_value(t, 2, "home_cell", N_CELLS), "range(home_cell)", 1),
    ("users", lambda t: set_value(t, 0, "user_id", -1), "range(user_id)", 1),
    ("users", lambda t: set_value(t, 3, "user_id", 2), "unique(user_id)", 2),
    ("restaurants", lambda t: set_value(t, 0, "rating", 5.5), "range(rating)", 1),
    ("restaurants", lambda t: set_value(t, 0, "rating", float("nan")), "range(rating)", 1),
    ("restaurants", lambda t: set_value(t, 1, "price_level", 0), "range(price_level)", 1),
    ("restaurants", lambda t: set_value(t, 2, "close_hour", 25), "range(close_hour)", 1),
    ("restaurants", lambda t: set_value(t, 2, "created_ts", None), "not_null(created_ts)", 1),
    ("items", lambda t: set_value(set_value(t, 0, "price", 0.0), 1, "price", 501.0), "range(price)", 2),
    ("items", lambda t: set_value(t, 4, "restaurant_id", 999), "references(restaurant_id)", 1),
    ("impressions", lambda t: set_value(t, 0, "surface", "story"), "one_of(surface)", 1),
    ("impressions", lambda t: set_value(t, 3, "propensity", 0.0), "range(propensity)", 1),
    ("impressions", lambda t: set_value(t, 3, "propensity", 1.5), "range(propensity)", 1),
    ("impressions", lambda t: set_value(t, 1, "ordered", True), "implies(ordered,clicked)", 1),
    ("impressions", lambda t: set_value(t, 0, "item_id", 100), "null_iff(item_id,surface)", 1),
    ("impressions", lambda t: set_value(t, 3, "item_id", None), "null_iff(item_id,surface)", 1),
    ("impressions", lambda t: set_value(t, 4, "position", 0), "unique(request_id,position)", 2),
    ("impressions", lambda t: set_value(t, 2, "position", 3), "contiguous(request_id,position)", 3),
    ("impressions", lambda t: set_value(t, 6, "clicked", None), "not_null(clicked)", 1),
    ("impressions", lambda t: set_value(t, 5, "user_id", 999), "references(user_id)", 1),
    ("impressions", lambda t: set_value(t, 5, "item_id", 999), "references(item_id)", 1),
]


@pytest.mark.parametrize(("table", "mutate", "rule", "count"), CASES, ids=[c[2] + f"-{i}" for i, c in enumerate(CASES)])
def test_each_rule_with_a_bad_row_is_named_in_the_report_with_its_count(table, mutate, rule, count):
    tables = valid_tables()
    df = mutate(tables[table])
    result = validate_table(df, SCHEMAS[table], n_cells=N_CELLS, references=tables)
    counts = report_counts(result)
    assert counts.get(rule) == count, result.report.to_dict()
    entry = next(r for r in result.report.rules if r.rule == rule)
    assert 1 <= len(entry.examples) <= 5
    assert result.bad.filter(pl.col(BROKEN_RULES).list.contains(rule)).height == count


def test_policy_list_row_without_restaurant_or_item_is_bad():
    lists = pl.DataFrame({"request_id": [1, 1, 2], "position": [0, 1, 0], "restaurant_id": [10, None, 11]})
    result = validate_table(lists, POLICY_LISTS)
    assert report_counts(result) == {"any_not_null(restaurant_id)": 1}


def test_report_examples_show_key_and_offending_values():
    items = set_value(valid_tables()["items"], 2, "price", -3.0)
    result = validate_table(items, ITEMS)
    (entry,) = result.report.rules
    assert entry.examples == ({"item_id": 102, "price": -3.0},)


def test_examples_are_capped_at_five():
    users = valid_tables()["users"]
    many = pl.concat([users] * 4).with_columns(pl.lit(-1).alias("user_id"))
    result = validate_table(many, USERS, n_cells=N_CELLS)
    entry = next(r for r in result.report.rules if r.rule == "range(user_id)")
    assert entry.bad_rows == 16 and len(entry.examples) == 5


# ---------------------------------------------------------------- nothing valid dropped
def test_nothing_valid_is_dropped_clean_has_exactly_the_good_rows():
    impressions = valid_tables()["impressions"]
    bad = set_value(set_value(impressions, 1, "ordered", True), 3, "propensity", -0.1)
    result = validate_table(bad, IMPRESSIONS, n_cells=N_CELLS)
    assert result.clean.height + result.bad.height == bad.height == result.report.rows
    good_rows = [0, 2, 4, 5, 6]
    assert result.clean.equals(bad[good_rows])
    assert result.bad.drop(BROKEN_RULES).equals(bad[[1, 3]])


def test_lazy_input_gives_the_same_result_as_eager(tmp_path):
    impressions = set_value(valid_tables()["impressions"], 1, "ordered", True)
    eager = validate_table(impressions, IMPRESSIONS, n_cells=N_CELLS)
    lazy = validate_table(impressions.lazy(), IMPRESSIONS, n_cells=N_CELLS, spill_dir=tmp_path)
    assert lazy.report == eager.report
    assert lazy.clean.collect().equals(eager.clean)
    assert lazy.bad.collect().equals(eager.bad)


# ---------------------------------------------------------------- vocabularies
def test_unseen_category_maps_to_unknown_and_is_counted_not_quarantined():
    items = set_value(set_value(valid_tables()["items"], 1, "category", "soup"), 3, "category", "soup")
    result = validate_table(items, ITEMS)
    assert result.report.bad_rows == 0
    assert result.clean.height == items.height
    assert result.clean["category"].to_list() == ["main", UNKNOWN, "main", UNKNOWN, "dessert", "starter"]
    (entry,) = result.report.rules
    assert (entry.rule, entry.bad_rows, entry.quarantines) == ("vocabulary(category)", 2, False)
    assert entry.examples == ({"category": "soup", "rows": 2},)


def test_null_in_vocabulary_column_stays_null():
    users = set_value(valid_tables()["users"], 0, "platform", None)
    result = validate_table(users, USERS, n_cells=N_CELLS)
    assert result.report.rules == () and result.clean["platform"][0] is None


# ---------------------------------------------------------------- types
def test_missing_required_column_raises_naming_it_and_its_type():
    restaurants = valid_tables()["restaurants"].drop("cell")
    with pytest.raises(DataContractError, match=r"'cell' \(expected Int32\)"):
        validate_table(restaurants, RESTAURANTS, n_cells=N_CELLS)


def test_uncastable_value_raises_naming_column_value_and_type():
    users = valid_tables()["users"].with_columns(pl.Series("home_cell", ["1", "2", "north", "4"]))
    with pytest.raises(DataContractError, match=r"'home_cell'.*'north'.*Int32"):
        validate_table(users, USERS, n_cells=N_CELLS)


def test_castable_types_are_converted_to_the_contract_types():
    users = valid_tables()["users"].with_columns(
        pl.col("home_cell").cast(pl.Int64), pl.col("signup_ts").dt.replace_time_zone(None).dt.cast_time_unit("ns")
    )
    result = validate_table(users, USERS, n_cells=N_CELLS)
    assert result.clean.schema["home_cell"] == pl.Int32
    assert result.clean.schema["signup_ts"] == pl.Datetime("us", "UTC")
    assert result.clean["signup_ts"][0] == T0


def test_string_ids_are_accepted_in_impressions():
    impressions = valid_tables()["impressions"].with_columns(pl.col("request_id").cast(pl.Utf8))
    result = validate_table(impressions, IMPRESSIONS, n_cells=N_CELLS, references=valid_tables())
    assert result.report.bad_rows == 0 and result.clean.schema["request_id"] == pl.Utf8


# ---------------------------------------------------------------- the dataset job
def with_bad_rows() -> dict[str, pl.DataFrame]:
    tables = valid_tables()
    tables["items"] = set_value(tables["items"], 5, "price", 0.0)          # item 105 bad
    tables["impressions"] = set_value(tables["impressions"], 1, "ordered", True)
    return tables


def test_validate_dataset_writes_clean_quarantine_and_report(tmp_path):
    write_raw(tmp_path, with_bad_rows())
    config = make_config(tmp_path, max_bad_share=0.5)
    report = validate_dataset(config)
    assert report.passed
    for table in ("users", "restaurants", "items", "impressions"):
        raw = pl.read_parquet(config.raw_dir / f"{table}.parquet")
        clean = pl.read_parquet(config.clean_dir / f"{table}.parquet")
        bad = pl.read_parquet(config.quarantine_dir / f"{table}.parquet")
        assert clean.height + bad.height == raw.height, table
        assert BROKEN_RULES in bad.columns
    saved = json.loads((config.reports_dir / "validation.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict(), default=str))
    assert {t["table"]: t["bad_rows"] for t in saved["tables"]} == {
        "restaurants": 0, "items": 1, "users": 0, "impressions": 1}


def test_quarantine_file_holds_exactly_the_bad_rows(tmp_path):
    tables = with_bad_rows()
    write_raw(tmp_path, tables)
    config = make_config(tmp_path, max_bad_share=0.5)
    validate_dataset(config)
    items_bad = pl.read_parquet(config.quarantine_dir / "items.parquet")
    assert items_bad.drop(BROKEN_RULES).equals(tables["items"][[5]])
    assert items_bad[BROKEN_RULES].to_list() == [["range(price)"]]
    imp_bad = pl.read_parquet(config.quarantine_dir / "impressions.parquet")
    assert imp_bad.drop(BROKEN_RULES).equals(tables["impressions"][[1]])
    users_bad = pl.read_parquet(config.quarantine_dir / "users.parquet")
    assert users_bad.height == 0 and "user_id" in users_bad.columns


def test_impressions_of_a_quarantined_item_are_quarantined(tmp_path):
    tables = valid_tables()
    tables["items"] = set_value(tables["items"], 0, "price", -1.0)  # item 100, shown in request 2
    write_raw(tmp_path, tables)
    config = make_config(tmp_path, max_bad_share=0.5)
    report = validate_dataset(config)
    rules = {r.rule: r.bad_rows for r in report.table("impressions").rules}
    assert rules == {"references(item_id)": 1}


def test_validate_dataset_is_idempotent(tmp_path):
    write_raw(tmp_path, with_bad_rows())
    config = make_config(tmp_path, max_bad_share=0.5)
    validate_dataset(config)
    outputs = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "raw" not in p.parts)
    first = {p: p.read_bytes() for p in outputs}
    validate_dataset(config)
    again = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "raw" not in p.parts)
    assert again == outputs  # no temporary or spill files left behind
    assert {p: p.read_bytes() for p in again} == first


def test_missing_raw_table_raises_naming_it(tmp_path):
    tables = valid_tables()
    del tables["items"]
    write_raw(tmp_path, tables)
    with pytest.raises(DataContractError, match="items"):
        validate_dataset(make_config(tmp_path))


def test_share_above_threshold_raises_after_writing_the_report(tmp_path):
    write_raw(tmp_path, with_bad_rows())
    config = make_config(tmp_path, max_bad_share=0.01)
    with pytest.raises(DataContractError, match=r"items: 1/6 bad rows"):
        validate_dataset(config)
    saved = json.loads((config.reports_dir / "validation.json").read_text())
    assert saved["passed"] is False
    assert (config.quarantine_dir / "items.parquet").exists()
    assert not (config.clean_dir / "items.parquet").exists()  # a failed run publishes no clean data


# ---------------------------------------------------------------- CLI
@pytest.fixture()
def cli_app():
    from recsys.cli import app
    import recsys.cli.validate  # noqa: F401  (registers the command)
    return app


def test_cli_exits_non_zero_above_max_bad_share(tmp_path, cli_app):
    write_raw(tmp_path, with_bad_rows())
    result = CliRunner().invoke(cli_app, ["--data-dir", str(tmp_path), "validate", "--max-bad-share", "0.01"],
                                 env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert isinstance(result.exception, DataContractError)
    assert "range(price)" in result.output  # the report is printed before failing


def test_cli_succeeds_within_max_bad_share(tmp_path, cli_app):
    write_raw(tmp_path, with_bad_rows())
    result = CliRunner().invoke(cli_app, ["--data-dir", str(tmp_path), "validate", "--max-bad-share", "0.5"],
                                 env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "impressions" in result.output and "implies(ordered,clicked)" in result.output
    assert (tmp_path / "clean" / "impressions.parquet").exists()
