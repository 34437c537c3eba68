"""Benchmark regression checks: a change beyond the tolerance in the bad direction flags, within it
or in the good direction does not; a missing metric is a clear error; the command exits 1 on a
regression and 2 on an error."""

import json

import pytest

from benchmarks.compare import METRICS, RESULTS_DIR, CompareError, Metric, compare, lookup, main

LATENCY = Metric("ratios.model_vs_floor.p50", "lower")
THROUGHPUT = Metric("ratios.model_vs_floor.throughput", "higher", tolerance=0.05)


def result(p50: float, throughput: float) -> dict:
    return {"benchmark": "toy", "ratios": {"model_vs_floor": {"p50": p50, "throughput": throughput}}}


def statuses(new: dict, old: dict, tolerance: float = 0.10) -> dict[str, str]:
    return {r.metric: r.status for r in compare("toy", new, old, (LATENCY, THROUGHPUT), tolerance)}


def test_a_latency_ratio_up_beyond_the_tolerance_is_a_regression():
    got = statuses(result(1.12, 0.7), result(1.0, 0.7))
    assert got == {LATENCY.path: "regression", THROUGHPUT.path: "ok"}


def test_changes_within_the_tolerance_are_ok_in_either_direction():
    assert set(statuses(result(1.09, 0.67), result(1.0, 0.7)).values()) == {"ok"}
    assert set(statuses(result(0.91, 0.73), result(1.0, 0.7)).values()) == {"ok"}


def test_direction_is_respected_a_lower_throughput_regresses_a_lower_latency_improves():
    got = statuses(result(0.8, 0.6), result(1.0, 0.7))
    assert got == {LATENCY.path: "improved", THROUGHPUT.path: "regression"}


def test_a_per_metric_tolerance_overrides_the_default():
    # throughput -4% passes its own 5%; with a 1% default the latency +4% regresses
    got = statuses(result(1.04, 0.672), result(1.0, 0.7), tolerance=0.01)
    assert got == {LATENCY.path: "regression", THROUGHPUT.path: "ok"}


def test_the_row_reports_the_relative_change():
    (row,) = compare("toy", result(1.5, 0.7), result(1.2, 0.7), (LATENCY,))
    assert (row.baseline, row.new, row.tolerance) == (1.2, 1.5, 0.10)
    assert row.change == pytest.approx(0.25)


def test_a_missing_metric_names_the_file_the_path_and_what_is_there():
    new = {"ratios": {"model_vs_echo": {"p50": 1.0}}}
    with pytest.raises(CompareError) as err:
        compare("toy", new, result(1.0, 0.7), (LATENCY,))
    msg = str(err.value)
    assert "toy (new)" in msg and "'ratios.model_vs_floor.p50'" in msg
    assert "no 'model_vs_floor' under ratios" in msg and "model_vs_echo" in msg


def test_a_metric_missing_from_the_recorded_result_is_an_error_too():
    with pytest.raises(CompareError, match=r"toy \(recorded\).*no 'ratios' under the top level"):
        compare("toy", result(1.0, 0.7), {"benchmark": "toy"}, (LATENCY,))


@pytest.mark.parametrize("value", ["fast", None, True, float("nan"), {"p50": 1.0}])
def test_a_value_that_is_not_a_finite_number_is_an_error(value):
    with pytest.raises(CompareError, match="not a finite number"):
        lookup({"x": value}, "x", "toy (new)")


def test_a_recorded_zero_cannot_give_a_relative_change():
    with pytest.raises(CompareError, match="recorded value is 0"):
        compare("toy", result(1.0, 0.7), result(0.0, 0.7), (LATENCY,))


def write(path, payload) -> str:
    path.write_text(json.dumps(payload))
    return str(path)


def test_the_command_exits_1_on_a_regression_and_writes_the_rows(tmp_path):
    old = {"benchmark": "serving_echo", "ratios": {"popularity": {
        "p50_x_echo": 3.0, "p99_x_echo": 3.0, "throughput_x_echo": 0.34}}}
    new = json.loads(json.dumps(old))
    new["ratios"]["popularity"]["p50_x_echo"] = 3.6  # +20% > 10%
    out = tmp_path / "compare.json"
    code = main(["serving_echo", "--new", write(tmp_path / "new.json", new),
                 "--baseline", write(tmp_path / "old.json", old), "--out", str(out)])
    assert code == 1
    report = json.loads(out.read_text())
    assert report["regressions"] == 1
    assert [r["metric"] for r in report["rows"] if r["status"] == "regression"] == ["ratios.popularity.p50_x_echo"]
    assert main(["serving_echo", "--new", str(tmp_path / "old.json"), "--baseline", str(tmp_path / "old.json"),
                 "--out", str(out)]) == 0


def test_the_command_exits_2_on_a_missing_metric_or_an_unknown_benchmark(tmp_path, capsys):
    old = {"benchmark": "simulator", "ratio_simulate_to_write_only": 8.0}
    new = {"benchmark": "simulator", "simulate_seconds": 60.0}
    out = str(tmp_path / "compare.json")
    assert main(["simulator", "--new", write(tmp_path / "new.json", new),
                 "--baseline", write(tmp_path / "old.json", old), "--out", out]) == 2
    assert "ratio_simulate_to_write_only" in capsys.readouterr().out
    assert main(["no_such_bench", "--baseline", str(tmp_path / "old.json"), "--out", out]) == 2
    assert "no compared metrics" in capsys.readouterr().out


def test_every_registered_metric_exists_in_the_benchmarks_current_result_files():
    """The registry's paths are not typos: each resolves in the result the benchmark wrote."""
    checked = 0
    for name, metrics in METRICS.items():
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for m in metrics:
            lookup(data, m.path, name)
            checked += 1
    assert checked >= 20
