"""Taste drift detection against the simulator's ground truth, over 20 worlds (issue 6; the
CI-sized version is tests/integration/test_monitor_drift.py).

Per seed and size, two worlds identical but for drift: in one, 10% of users redraw their taste at
the start of day index d = 20 (of 22); the other has no drift, only the simulator's weekly and
hourly seasonality and its restaurant openings. ``recsys monitor drift``'s check
(:func:`recsys.monitoring.drift.daily_drift`) runs on every day from 14 (the first with a full
baseline week and a reference week) to d + 1:

- detection: does the check of day d alert (the run on the first day after d), of d + 1, and the
  first alerting day minus d;
- false alerts: alerting checks of the no-drift world over days 14 .. d + 1, and of the drift world
  before d.

Baselines measured on the same worlds:

- PSI/KS only: the per-feature alerts without the surprise shift (what the issue's PSI/KS alone
  would flag);
- pooled reference: the surprise shift against the 7 previous days instead of the same weekday;
- the ceiling: the same statistic with the day's own non-drifted users (known from the truth) as
  the reference: no reference noise, no seasonality, what z the day's data can give at best.

The no-drift world is simulated up to ``--null-world-users`` (10,000): above, a seed's two worlds
cost too much here, and the drift world's days 14 .. d - 1 are the days without drift. Sizes of an
earlier run that a run does not redo are kept in the JSON, so a large size can run on its own.

Usage: ``python -m benchmarks.bench_drift [--seeds 20] [--users 10000 100000]``; writes
benchmarks/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import RESULTS_DIR, peak_rss_mb, write_result
from recsys.config import load_config
from recsys.monitoring.drift import (
    MIN_STRATUM_ROWS,
    STRATUM_EDGES,
    DriftThresholds,
    daily_drift,
    stratum_buckets,
    surprise_shift,
)
from recsys.monitoring.features import LLR, MONITORED, user_day_features
from recsys.simulation.run import load_truth, simulate

DRIFT_DAY = 20
DRIFT_SHARE = 0.1
FIRST_CHECKED = 14  # baseline days 0..6 for day 7, the same weekday a week later is day 14
WORLD = {"size": "small", "requests_per_user_day": 1.5, "days": DRIFT_DAY + 2}
THRESHOLDS = DriftThresholds()


def world(tmp: Path, seed: int, users: int, drift: bool):
    sim = {**WORLD, "n_users": users, **({"drift_day": DRIFT_DAY, "drift_share": DRIFT_SHARE} if drift else {})}
    config = load_config(environ={}, data_dir=tmp / f"{seed}_{users}_{drift}", seed=seed).with_overrides(sim=sim)
    simulate(config)
    raw = config.raw_dir
    return config, user_day_features(pl.scan_parquet(raw / "impressions.parquet"),
                                     pl.scan_parquet(raw / "restaurants.parquet"))


def check(frame: pl.DataFrame, start: date, k: int) -> dict:
    day = start + timedelta(days=k)
    report = daily_drift(frame, day, MONITORED, thresholds=THRESHOLDS)
    pooled_ref = frame.filter(pl.col("day").is_between(day - timedelta(days=7), day - timedelta(days=1)))
    pooled = surprise_shift(frame.filter(pl.col("day") == day), pooled_ref, z_alert=THRESHOLDS.surprise_z)
    return {"k": k, "day": str(day), "alert": report.alert, "z": report.surprise.z,
            "surprise_alert": report.surprise.alert, "psi_ks_alerts": [r.feature for r in report.rows if r.alert],
            "pooled_z": pooled.z, "pooled_alert": pooled.alert}


def ceiling_z(frame: pl.DataFrame, day: date, drifts: np.ndarray) -> float:
    """z of the day's mean against its own non-drifted users' mean, stratum by stratum, taken as
    known (no reference noise): the most the day's data can say with this statistic."""
    rows = (frame.filter(pl.col("day") == day).with_columns(stratum_buckets())
            .with_columns(pl.col("user_id").is_in(np.flatnonzero(drifts).tolist()).alias("_drifted")))
    keys = [f"_s_{c}" for c in STRATUM_EDGES]
    null = (rows.filter(~pl.col("_drifted")).group_by(keys)
            .agg(pl.col(LLR).mean().alias("_m"), pl.col(LLR).var().alias("_v"), pl.len().alias("_n"))
            .filter(pl.col("_n") >= MIN_STRATUM_ROWS))
    both = rows.join(null, on=keys, how="inner")
    return float((both[LLR] - both["_m"]).sum() / np.sqrt(both["_v"].sum()))


def one_seed(tmp: Path, seed: int, users: int, null_world: bool) -> dict:
    out: dict = {"seed": seed, "users": users}
    for drift in (True, False) if null_world else (True,):
        config, frame = world(tmp, seed, users, drift)
        start = config.sim.start_date
        checks = [check(frame, start, k) for k in range(FIRST_CHECKED, DRIFT_DAY + 2)]
        if drift:
            d = start + timedelta(days=DRIFT_DAY)
            drifts = load_truth(config).world.user_drifts
            after = [c for c in checks if c["k"] >= DRIFT_DAY]
            first = next((c for c in after if c["alert"]), None)
            out["drift"] = {
                "checks": checks, "drifting_users": int(drifts.sum()),
                "alert_day_d": after[0]["alert"], "alert_day_d_plus_1": after[1]["alert"],
                "detection_day_minus_d": first["k"] - DRIFT_DAY if first else None,
                "false_alerts_before_d": sum(c["alert"] for c in checks if c["k"] < DRIFT_DAY),
                "ceiling_z_day_d": ceiling_z(frame, d, drifts),
                "ceiling_z_day_d_plus_1": ceiling_z(frame, d + timedelta(days=1), drifts),
            }
        else:
            out["none"] = {"checks": checks, "false_alerts": sum(c["alert"] for c in checks),
                           "checked_days": len(checks)}
    return out


def rate(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def summary(runs: list[dict]) -> dict:
    drift = [r["drift"] for r in runs]
    none_checks = [c for r in runs if "none" in r for c in r["none"]["checks"]]
    pre_checks = [c for r in runs for c in r["drift"]["checks"] if c["k"] < DRIFT_DAY]
    day_d = [r["drift"]["checks"][DRIFT_DAY - FIRST_CHECKED] for r in runs]
    day_d1 = [r["drift"]["checks"][DRIFT_DAY + 1 - FIRST_CHECKED] for r in runs]
    z_d = np.array([c["z"] for c in day_d])
    ceiling = np.array([x["ceiling_z_day_d"] for x in drift])
    return {
        "seeds": len(runs), "users": runs[0]["users"],
        "detection_rate_day_d": rate(x["alert_day_d"] for x in drift),
        "detection_rate_day_d_plus_1": rate(x["alert_day_d_plus_1"] for x in drift),
        "detected_by_day_d_plus_1": rate(x["detection_day_minus_d"] is not None for x in drift),
        "false_alert_rate_no_drift": rate(c["alert"] for c in none_checks),  # None: no no-drift world
        "false_alerts_no_drift": int(sum(c["alert"] for c in none_checks)), "checks_no_drift": len(none_checks),
        "false_alert_rate_drift_world_before_d": rate(c["alert"] for c in pre_checks),
        "mean_z_day_d": float(z_d.mean()), "min_z_day_d": float(z_d.min()),
        "mean_z_day_d_plus_1": float(np.mean([c["z"] for c in day_d1])),
        "max_z_no_drift": max((c["z"] for c in none_checks), default=None),
        "max_z_drift_world_before_d": max(c["z"] for c in pre_checks),
        "mean_ceiling_z_day_d": float(ceiling.mean()),
        "z_to_ceiling_day_d": float(z_d.mean() / ceiling.mean()),
        "baseline_psi_ks_only": {
            "detection_rate_day_d": rate(bool(c["psi_ks_alerts"]) for c in day_d),
            "false_alert_rate_no_drift": rate(bool(c["psi_ks_alerts"]) for c in none_checks),
        },
        "baseline_pooled_reference": {
            "detection_rate_day_d": rate(c["pooled_alert"] for c in day_d),
            "detection_rate_day_d_plus_1": rate(c["pooled_alert"] for c in day_d1),
            "false_alert_rate_no_drift": rate(c["pooled_alert"] for c in none_checks),
            "max_z_no_drift": max((c["pooled_z"] for c in none_checks), default=None),
            "false_alert_rate_drift_world_before_d": rate(c["pooled_alert"] for c in pre_checks),
        },
    }


def print_seed(r: dict) -> None:
    c, c1 = r["drift"]["checks"][DRIFT_DAY - FIRST_CHECKED:DRIFT_DAY + 2 - FIRST_CHECKED]
    null = r.get("none", {}).get("checks", []) + r["drift"]["checks"][:DRIFT_DAY - FIRST_CHECKED]
    false = [(x["day"], round(x["z"], 2), x["psi_ks_alerts"]) for x in null if x["alert"]]
    print(f"users {r['users']:>7,} seed {r['seed']:2d}: z day d {c['z']:5.2f} d+1 {c1['z']:5.2f} (ceiling "
          f"{r['drift']['ceiling_z_day_d']:5.2f}, pooled {c['pooled_z']:5.2f}), alert d {c['alert']!s:5} "
          f"{c['psi_ks_alerts']} d+1 {c1['alert']!s:5} {c1['psi_ks_alerts']} | without drift: max z "
          f"{max(x['z'] for x in null):.2f}, false alerts {false}", flush=True)


def print_summary(s: dict) -> None:
    b, p = s["baseline_psi_ks_only"], s["baseline_pooled_reference"]
    print(f"users {s['users']:,}: detection on day d {pct(s['detection_rate_day_d'], 0)} (PSI/KS only "
          f"{pct(b['detection_rate_day_d'], 0)}, pooled reference {pct(p['detection_rate_day_d'], 0)}), by d+1 "
          f"{pct(s['detected_by_day_d_plus_1'], 0)}; false alerts: no-drift world {s['false_alerts_no_drift']}/"
          f"{s['checks_no_drift']} (PSI/KS only {pct(b['false_alert_rate_no_drift'])}, pooled "
          f"{pct(p['false_alert_rate_no_drift'])}), drift world before d "
          f"{pct(s['false_alert_rate_drift_world_before_d'])} (pooled "
          f"{pct(p['false_alert_rate_drift_world_before_d'])}); mean z day d {s['mean_z_day_d']:.2f} = "
          f"{s['z_to_ceiling_day_d']:.2f}x the ceiling {s['mean_ceiling_z_day_d']:.2f}", flush=True)


def kept_sizes(users: list[int]) -> list[dict]:
    """The sizes of an earlier run (benchmarks/results/drift.json) that this run does not redo, their
    summaries recomputed from their runs: a large size can be run on its own and join the others."""
    path = RESULTS_DIR / "drift.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text()).get("sizes", [])
    return [{"summary": summary(s["runs"]), "runs": s["runs"]} for s in earlier if s["summary"]["users"] not in users]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--null-world-users", type=int, default=10_000,
                        help="Simulate the no-drift world only up to this many users (above, the days before d "
                             "of the drift world are the days without drift).")
    args = parser.parse_args()
    started = time.perf_counter()
    kept = kept_sizes(args.users)
    done: list[dict] = []
    for users in args.users:
        runs: list[dict] = []
        for seed in range(1, args.seeds + 1):
            with tempfile.TemporaryDirectory(prefix="bench_drift_") as tmp:
                runs.append(one_seed(Path(tmp), seed, users, users <= args.null_world_users))
            print_seed(runs[-1])
            # Written after every seed, so a long run keeps what it measured.
            write(kept + done + [{"summary": summary(runs), "runs": runs}], started)
        done.append({"summary": summary(runs), "runs": runs})
        print_summary(done[-1]["summary"])
    print(f"wrote {RESULTS_DIR / 'drift.json'}")


def write(sizes: list[dict], started: float) -> None:
    write_result("drift", {
        "setup": {"world": WORLD, "drift_day": DRIFT_DAY, "drift_share": DRIFT_SHARE,
                  "first_checked_day": FIRST_CHECKED, "thresholds": asdict(THRESHOLDS),
                  "day_convention": "day index k = start_date + k; drift from the start of day d; the check "
                                    "of day d is the run on the first day after d"},
        "sizes": sorted(sizes, key=lambda x: x["summary"]["users"]),
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
