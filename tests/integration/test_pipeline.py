"""The nightly pipeline on the tiny world with Redis: steps, resume, and no PII past validation
(files, model artifacts, Redis keys and values, log output)."""

import json
import re
import shutil
import uuid

import polars as pl
import pytest
import redis
from rich.console import Console

from jobs.nightly import STEPS, run_nightly
from tests.conftest import FAST_TRAINING, tiny_config


@pytest.fixture(scope="module")
def pipeline_run(tiny_world, redis_url, tmp_path_factory):
    """One nightly run on a copy of the session's tiny world, online store on Redis."""
    data_dir = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(tiny_world.data_dir, data_dir, dirs_exist_ok=True)
    config = tiny_config(data_dir, online_store=redis_url, project=f"pipe_{uuid.uuid4().hex[:8]}",
                         training=FAST_TRAINING)
    console = Console(record=True, width=200)
    summary = run_nightly(config, console=console)
    return config, summary, console.export_text()


def test_nightly_runs_every_step_and_writes_a_summary(pipeline_run):
    config, summary, _ = pipeline_run
    assert list(summary["steps"]) == [step.name for step in STEPS]
    assert summary["steps"]["publish"]["published"]
    on_disk = json.loads((config.data_dir / "runs" / "nightly" / summary["run_id"] / "summary.json").read_text())
    assert on_disk["steps"].keys() == summary["steps"].keys()


def test_nightly_started_again_skips_finished_steps(pipeline_run):
    config, summary, _ = pipeline_run
    console = Console(record=True, width=200)
    again = run_nightly(config, console=console)
    assert again["run_id"] == summary["run_id"]
    assert console.export_text().count("skipped") == len(summary["steps"])


def _pii_values(config) -> set[str]:
    users = pl.read_parquet(config.raw_dir / "users.parquet")
    return {v for col in ("name", "email", "phone") for v in users[col].to_list()}


def _parquet_strings(path) -> set[str]:
    """Every string value in a Parquet file (compressed pages can't be searched as bytes)."""
    frame = pl.read_parquet(path)
    return {v for col, dtype in frame.schema.items() if dtype == pl.Utf8 for v in frame[col].drop_nulls().to_list()}


def test_no_raw_pii_reaches_any_file_redis_key_or_value_or_log_line(pipeline_run, redis_url):
    config, _, log_text = pipeline_run
    pii = _pii_values(config)
    pattern = re.compile(b"|".join(re.escape(v.encode()) for v in sorted(pii)))
    # Raw exports (data_dir/raw) are upstream's: everything the system writes is checked.
    written = [p for p in config.data_dir.rglob("*") if p.is_file() and config.raw_dir not in p.parents]
    parquet = [p for p in written if p.suffix == ".parquet"]
    assert parquet, "the run wrote no Parquet"
    leaked = {p.name: pii & _parquet_strings(p) for p in parquet}
    blobs = {str(p): p.read_bytes() for p in written if p.suffix != ".parquet"}
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(count=1000):
        blobs[f"redis key {key!r}"] = key
        if client.type(key) == b"hash":
            blobs[f"redis hash {key!r}"] = b"\0".join(b for kv in client.hgetall(key).items() for b in kv)
    blobs["log"] = log_text.encode()
    leaked.update({name: set(pattern.findall(blob)) for name, blob in blobs.items()})
    assert {name: found for name, found in leaked.items() if found} == {}
    clean_users = pl.read_parquet(config.clean_dir / "users.parquet")
    assert not {"name", "email", "phone"} & set(clean_users.columns)
