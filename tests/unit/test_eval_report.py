"""The evaluation report: files written, HTML self-contained, headline, and the CLI command."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from recsys.errors import DataContractError
from recsys.evaluation.columns import EvalOptions
from recsys.evaluation.report import write_report
from recsys.evaluation.run import evaluate
from recsys.evaluation.synthetic import synthetic_log


@pytest.fixture(scope="module")
def log_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    s = synthetic_log(1500, slots=4, seed=9)
    s.log.write_parquet(tmp / "log.parquet")
    s.target_lists.write_parquet(tmp / "target.parquet")
    return tmp


def test_report_files_are_written_and_html_is_self_contained(log_files, tmp_path):
    report = evaluate(log_files / "log.parquet", log_files / "target.parquet", baseline="popularity",
                      options=EvalOptions(n_bootstrap=100), slices=("hour", "user_type"))
    json_path, html_path = write_report(report, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert set(loaded["policy"]["estimates"]) == {"naive", "replay", "ips", "snips", "dr"}
    assert {s["column"] for s in loaded["slices"]} == {"hour", "user_type"}
    page = html_path.read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)
    assert "http://" not in page and "https://" not in page
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_headline_names_policy_baseline_interval_and_support(log_files):
    report = evaluate(log_files / "log.parquet", log_files / "target.parquet", baseline="random",
                      options=EvalOptions(n_bootstrap=50))
    assert re.fullmatch(
        r"Policy target is estimated to earn \d+\.\d% (more|fewer) clicks than baseline random "
        r"\(95% CI [+-]\d+\.\d%\.\.[+-]\d+\.\d%, SNIPS, [\d,]+ matched events\)\.( Warning: .*)?",
        report["headline"],
    ), report["headline"]


def test_cli_evaluate_writes_the_report_and_prints_its_path(log_files, tmp_path):
    import recsys.cli.evaluate  # noqa: F401  (registers the command)
    from recsys.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, [
        "--data-dir", str(tmp_path), "evaluate", "--log", str(log_files / "log.parquet"),
        "--policy", str(log_files / "target.parquet"), "--baseline", "logged", "--bootstrap", "50",
        "--reward", "ordered", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "more orders" in result.output or "fewer orders" in result.output
    assert str(out / "report.html") in result.output.replace("\n", "")
    assert (out / "report.json").exists()


def test_cli_bad_log_is_a_data_contract_error(tmp_path):
    import recsys.cli.evaluate  # noqa: F401
    from recsys.cli import app

    s = synthetic_log(10, slots=3)
    s.log.drop("propensity").write_parquet(tmp_path / "bad.parquet")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "evaluate", "--log", str(tmp_path / "bad.parquet"),
                                      "--policy", "logged", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, DataContractError)
    assert "propensity" in str(result.exception)
