"""PII never gets past validation; forbidden attributes are caught by name."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from recsys.config import Config, SimConfig, ValidationConfig
from recsys.contracts.pii import check_forbidden, find_forbidden, remove_pii
from recsys.contracts.validate import validate_dataset
from recsys.errors import ForbiddenAttributeError

T0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
NAMES = ["Ada Lovelace", "Grace Hopper", "Edsger Dijkstra"]
EMAILS = ["ada@example.org", "Grace.Hopper@Example.ORG", "edsger@example.net"]
PHONES = ["+44 20 7946 0001", "+1 (212) 555-0102", "+31 20 555 0103"]
RAW_PII = [*NAMES, *EMAILS, *PHONES]


def write_world(data_dir: Path) -> None:
    """A valid tiny world whose users carry raw PII; user 2 is a bad row (cell out of range)."""
    raw = data_dir / "raw"
    raw.mkdir(parents=True)
    tables = {
        "users": pl.DataFrame({
            "user_id": [0, 1, 2],
            "home_cell": pl.Series([0, 1, 999], dtype=pl.Int32),
            "signup_ts": [T0] * 3,
            "platform": ["ios", "web", "android"],
            "name": NAMES, "email": EMAILS, "phone": PHONES,
        }),
        "restaurants": pl.DataFrame({
            "restaurant_id": [10], "cell": pl.Series([1], dtype=pl.Int32), "cuisine": ["pizza"],
            "price_level": pl.Series([2], dtype=pl.Int8), "rating": pl.Series([4.0], dtype=pl.Float32),
            "open_hour": pl.Series([9], dtype=pl.Int8), "close_hour": pl.Series([22], dtype=pl.Int8),
            "created_ts": [T0],
        }),
        "items": pl.DataFrame({
            "item_id": [100], "restaurant_id": [10], "category": ["main"],
            "price": pl.Series([8.0], dtype=pl.Float32),
        }),
        "impressions": pl.DataFrame({
            "request_id": [1, 2], "ts": [T0] * 2, "user_id": [0, 1], "surface": ["feed", "menu"],
            "restaurant_id": [10, 10], "item_id": [None, 100],
            "position": pl.Series([0, 0], dtype=pl.Int16), "propensity": [1.0, 1.0],
            "policy": ["sim"] * 2, "clicked": [True, False], "ordered": [False, False],
        }),
    }
    for name, df in tables.items():
        df.write_parquet(raw / f"{name}.parquet", compression="uncompressed")


def run(data_dir: Path, mode: str) -> Config:
    config = Config(
        data_dir=data_dir, sim=SimConfig(size="tiny"),
        validation=ValidationConfig(pii_mode=mode, max_bad_share=0.5),
    )
    write_world(data_dir)
    validate_dataset(config)
    return config


def string_values(path: Path) -> set[str]:
    df = pl.read_parquet(path)
    return {
        str(v) for col in df.columns if df.schema[col] in (pl.Utf8, pl.List(pl.Utf8))
        for v in df[col].explode().drop_nulls().to_list()
    }


def secrets(value: str) -> list[bytes]:
    return [value.encode(), value.lower().encode()]


@pytest.mark.parametrize("mode", ["drop", "hash"])
def test_pii_columns_are_absent_from_clean_users(tmp_path, mode):
    config = run(tmp_path, mode)
    users = pl.read_parquet(config.clean_dir / "users.parquet")
    assert not {"name", "email", "phone"} & set(users.columns)
    if mode == "hash":
        assert {"email_hash", "phone_hash"} <= set(users.columns)
    else:
        assert not any(c.endswith("_hash") for c in users.columns)


@pytest.mark.parametrize("mode", ["drop", "hash"])
def test_no_raw_pii_appears_in_any_written_file(tmp_path, mode):
    config = run(tmp_path, mode)
    raw_bytes = b"".join(p.read_bytes() for p in config.raw_dir.iterdir())
    assert all(s.encode() in raw_bytes for s in RAW_PII)  # the scan below can see them
    written = [p for p in tmp_path.rglob("*") if p.is_file() and config.raw_dir not in p.parents]
    assert {p.name for p in written} >= {"users.parquet", "validation.json"}
    assert (config.quarantine_dir / "users.parquet").exists()  # the bad user went somewhere
    for path in written:
        data = path.read_bytes().lower()
        for value in RAW_PII:
            assert all(s.lower() not in data for s in secrets(value)), (path, value)
        if path.suffix == ".parquet":
            assert not string_values(path) & {*RAW_PII, *(e.lower() for e in EMAILS)}, path


def test_hash_mode_replaces_email_and_phone_by_salted_sha256_and_drops_name():
    users = pl.DataFrame({"user_id": [1, 2], "name": ["A", "B"],
                          "email": [" Ada@Example.org", None], "phone": ["+44 (20) 7946-0001", "+1 555"]})
    out = remove_pii(users.lazy(), ("name", "email", "phone"), mode="hash", salt="s1").collect()
    assert out.columns == ["user_id", "email_hash", "phone_hash"]
    assert out["email_hash"].to_list() == [hashlib.sha256(b"s1ada@example.org").hexdigest(), None]
    assert out["phone_hash"][0] == hashlib.sha256(b"s1+442079460001").hexdigest()
    other_salt = remove_pii(users, mode="hash", salt="s2")
    assert other_salt["email_hash"][0] != out["email_hash"][0]


def test_drop_mode_removes_pii_and_ignores_absent_columns():
    users = pl.DataFrame({"user_id": [1], "email": ["a@b.c"]})
    assert remove_pii(users, ("name", "email", "phone")).columns == ["user_id"]


# ---------------------------------------------------------------- forbidden attributes
FORBIDDEN = ("sex", "gender", "age", "race", "ethnicity", "religion")


@pytest.mark.parametrize("name", ["age", "AGE", "user_age", "age_bucket", "user_Gender_code", "Race"])
def test_forbidden_attribute_is_detected_as_a_whole_word(name):
    with pytest.raises(ForbiddenAttributeError) as err:
        check_forbidden(["user_id", name], FORBIDDEN, where="feature view user_profile")
    assert repr(name) in str(err.value) and "feature view user_profile" in str(err.value)


@pytest.mark.parametrize("name", ["page_views", "storage", "average_price", "sextant", "races_won", "usage"])
def test_words_merely_containing_a_forbidden_attribute_are_allowed(name):
    check_forbidden([name], FORBIDDEN, where="training inputs")


def test_every_forbidden_name_is_reported_with_its_attribute():
    found = find_forbidden(["user_age", "ctr_7d", "gender", "home_country"], [*FORBIDDEN, "home_country"])
    assert found == [("user_age", "age"), ("gender", "gender"), ("home_country", "home_country")]
