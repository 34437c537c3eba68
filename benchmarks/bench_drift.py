"""Taste drift detection against the simulator's ground truth, over 20 worlds (issue 6; the
CI-sized version is tests/integration/test_monitor_drift.py).

Per seed and size, two worlds identical but for drift: in one, 10% of users redraw their taste at
the start of day index d = 20 (of 22); the other has no drift, only the simulator's weekly and
hourly seasonality and its restaurant openings. ``recsys monitor drift``'s check
(:func:`recsys.monitoring.drift.daily_drift` with the choice rows) runs on every day from 15 (the
first with a full 14-day window and a reference day) to d + 1:

- detection: does the check of day d alert (the run on the first day after d), of d + 1, and the
  first alerting day minus d;
- false alerts: alerting checks of the no-drift world over days 15 .. d + 1, and of the drift world
  before d.

Baselines measured on the same worlds:

- the cuisine statistic (the previous alert): the surprise shift of ``cuisine_llr`` against the
  same weekday of earlier weeks, checked from day 14;
- PSI/KS only: the per-feature alerts without any surprise shift;
- without the dispersion scaling: the choice shift's sampling z;
- the ceilings: each statistic with the day's own non-drifted users (known from the truth) as
  the reference: no reference noise, no seasonality, what z the day's data can give at best.

The no-drift world is simulated up to ``--null-world-users`` (10,000): above, a seed's two worlds
cost too much here, and the drift world's days before d are the days without drift. Sizes of an
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
    CHOICE_STRATUM_EDGES,
    MIN_STRATUM_ROWS,
    STRATUM_EDGES,
    DriftThresholds,
    daily_drift,
    stratum_buckets,
)
from recsys.monitoring.features import CHOICE_LLR, LLR, MONITORED, user_day_choice, user_day_features
from recsys.simulation.run import load_truth, simulate

DRIFT_DAY = 20
DRIFT_SHARE = 0.1
FIRST_CHECKED = 14  # cuisine: baseline days 0..6 for day 7, the same weekday a week later is day 14
FIRST_CHOICE = 15  # choice: a 14-day window for day 14, the day before as the reference of day 15
WORLD = {"size": "small", "requests_per_user_day": 1.5, "days": DRIFT_DAY + 2}
THRESHOLDS = DriftThresholds()
SWEEP = (2.5, 3.0, 3.5, 4.0)


def world(tmp: Path, seed: int, users: int, drift: bool):
    sim = {**WORLD, "n_users": users, **({"drift_day": DRIFT_DAY, "drift_share": DRIFT_SHARE} if drift else {})}
    config = load_config(environ={}, data_dir=tmp / f"{seed}_{users}_{drift}", seed=seed).with_overrides(sim=sim)
    simulate(config)
    raw = config.raw_dir
    imp, rest = pl.scan_parquet(raw / "impressions.parquet"), pl.scan_parquet(raw / "restaurants.parquet")
    return config, user_day_features(imp, rest), user_day_choice(imp, rest)


def check(frame: pl.DataFrame, choice: pl.DataFrame, start: date, k: int) -> dict:
    day = start + timedelta(days=k)
    report = daily_drift(frame, day, MONITORED, choice=choice, thresholds=THRESHOLDS)
    cuisine = daily_drift(frame, day, MONITORED, thresholds=THRESHOLDS).surprise
    s = report.surprise
    return {"k": k, "day": str(day), "alert": report.alert, "checked": s is not None,
            "z": s.z if s else None, "surprise_alert": bool(s and s.alert),
            "z_sampling": s.z * np.sqrt(s.dispersion) if s else None, "dispersion": s.dispersion if s else None,
            "alert_sampling": bool(s and s.z * np.sqrt(s.dispersion) > THRESHOLDS.surprise_z),
            "psi_ks_alerts": [r.feature for r in report.rows if r.alert],
            "cuisine_z": cuisine.z if cuisine else None, "cuisine_alert": bool(cuisine and cuisine.alert)}


def ceiling_z(frame: pl.DataFrame, day: date, drifts: np.ndarray, feature: str = LLR,
              strata: dict = STRATUM_EDGES) -> float:
    """z of the day's mean against its own non-drifted users' mean, stratum by stratum, taken as
    known (no reference noise): the most the day's data can say with this statistic."""
    rows = (frame.filter(pl.col("day") == day).with_columns(stratum_buckets(strata))
            .with_columns(pl.col("user_id").is_in(np.flatnonzero(drifts).tolist()).alias("_drifted")))
    keys = [f"_s_{c}" for c in strata]
    null = (rows.filter(~pl.col("_drifted")).group_by(keys)
            .agg(pl.col(feature).mean().alias("_m"), pl.col(feature).var().alias("_v"), pl.len().alias("_n"))
            .filter(pl.col("_n") >= MIN_STRATUM_ROWS))
    both = rows.join(null, on=keys, how="inner")
    return float((both[feature] - both["_m"]).sum() / np.sqrt(both["_v"].sum()))


def one_seed(tmp: Path, seed: int, users: int, null_world: bool) -> dict:
    out: dict = {"seed": seed, "users": users}
    for drift in (True, False) if null_world else (True,):
        config, frame, choice = world(tmp, seed, users, drift)
        start = config.sim.start_date
        checks = [check(frame, choice, start, k) for k in range(FIRST_CHECKED, DRIFT_DAY + 2)]
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
                "ceiling_z_day_d": ceiling_z(choice, d, drifts, CHOICE_LLR, CHOICE_STRATUM_EDGES),
                "ceiling_z_day_d_plus_1": ceiling_z(choice, d + timedelta(days=1), drifts, CHOICE_LLR,
                                                    CHOICE_STRATUM_EDGES),
                "cuisine_ceiling_z_day_d": ceiling_z(frame, d, drifts),
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
    none_all = [c for r in runs if "none" in r for c in r["none"]["checks"]]
    pre_all = [c for r in runs for c in r["drift"]["checks"] if c["k"] < DRIFT_DAY]
    none_checks, pre_checks = [c for c in none_all if c["checked"]], [c for c in pre_all if c["checked"]]
    none_cuisine = [c for c in none_all if c["cuisine_z"] is not None]
    pre_cuisine = [c for c in pre_all if c["cuisine_z"] is not None]
    day_d = [r["drift"]["checks"][DRIFT_DAY - FIRST_CHECKED] for r in runs]
    day_d1 = [r["drift"]["checks"][DRIFT_DAY + 1 - FIRST_CHECKED] for r in runs]
    z_d = np.array([c["z"] for c in day_d])
    ceiling = np.array([x["ceiling_z_day_d"] for x in drift])
    first_alert = [next((c["k"] - DRIFT_DAY for c in x["checks"] if c["k"] >= DRIFT_DAY and c["cuisine_alert"]), None)
                   for x in drift]
    return {
        "seeds": len(runs), "users": runs[0]["users"], "statistic": CHOICE_LLR,
        "detection_rate_day_d": rate(x["alert_day_d"] for x in drift),
        "detection_rate_day_d_plus_1": rate(x["alert_day_d_plus_1"] for x in drift),
        "detected_by_day_d_plus_1": rate(x["detection_day_minus_d"] is not None for x in drift),
        "false_alert_rate_no_drift": rate(c["alert"] for c in none_checks),  # None: no no-drift world
        "false_alerts_no_drift": int(sum(c["alert"] for c in none_checks)), "checks_no_drift": len(none_checks),
        "false_alerts_drift_world_before_d": int(sum(c["alert"] for c in pre_checks)),
        "checks_drift_world_before_d": len(pre_checks),
        "mean_z_day_d": float(z_d.mean()), "min_z_day_d": float(z_d.min()),
        "mean_z_day_d_plus_1": float(np.mean([c["z"] for c in day_d1])),
        "max_z_no_drift": max((c["z"] for c in none_checks), default=None),
        "sd_z_no_drift": float(np.std([c["z"] for c in none_checks])) if none_checks else None,
        "max_z_drift_world_before_d": max(c["z"] for c in pre_checks),
        "mean_dispersion_no_drift": rate(c["dispersion"] for c in none_checks),
        "mean_ceiling_z_day_d": float(ceiling.mean()),
        "z_to_ceiling_day_d": float(z_d.mean() / ceiling.mean()),
        # The same checks at other alert thresholds (PSI/KS never alerted: the z decides).
        "by_threshold": {str(t): {
            "detection_rate_day_d": rate(c["z"] > t for c in day_d),
            "detection_rate_day_d_plus_1": rate(c["z"] > t for c in day_d1),
            "false_alerts_no_drift": int(sum(c["z"] > t for c in none_checks)),
            "false_alerts_drift_world_before_d": int(sum(c["z"] > t for c in pre_checks)),
        } for t in SWEEP},
        "without_dispersion_scaling": {
            "detection_rate_day_d": rate(c["alert_sampling"] for c in day_d),
            "detection_rate_day_d_plus_1": rate(c["alert_sampling"] for c in day_d1),
            "mean_z_day_d": float(np.mean([c["z_sampling"] for c in day_d])),
            "false_alerts_no_drift": int(sum(c["alert_sampling"] for c in none_checks)),
            "false_alerts_drift_world_before_d": int(sum(c["alert_sampling"] for c in pre_checks)),
            "max_z_no_drift": max((c["z_sampling"] for c in none_checks), default=None),
            "sd_z_no_drift": float(np.std([c["z_sampling"] for c in none_checks])) if none_checks else None,
            "max_z_drift_world_before_d": max(c["z_sampling"] for c in pre_checks),
        },
        "baseline_cuisine_llr": {
            "detection_rate_day_d": rate(c["cuisine_alert"] for c in day_d),
            "detection_rate_day_d_plus_1": rate(c["cuisine_alert"] for c in day_d1),
            "detected_by_day_d_plus_1": rate(x is not None for x in first_alert),
            "mean_z_day_d": float(np.mean([c["cuisine_z"] for c in day_d])),
            "mean_z_day_d_plus_1": float(np.mean([c["cuisine_z"] for c in day_d1])),
            "mean_ceiling_z_day_d": float(np.mean([x["cuisine_ceiling_z_day_d"] for x in drift])),
            "false_alerts_no_drift": int(sum(c["cuisine_alert"] for c in none_cuisine)),
            "checks_no_drift": len(none_cuisine),
            "false_alerts_drift_world_before_d": int(sum(c["cuisine_alert"] for c in pre_cuisine)),
            "checks_drift_world_before_d": len(pre_cuisine),
            "max_z_no_drift": max((c["cuisine_z"] for c in none_cuisine), default=None),
            "sd_z_no_drift": float(np.std([c["cuisine_z"] for c in none_cuisine])) if none_cuisine else None,
        },
        "baseline_psi_ks_only": {
            "detection_rate_day_d": rate(bool(c["psi_ks_alerts"]) for c in day_d),
            "false_alert_rate_no_drift": rate(bool(c["psi_ks_alerts"]) for c in none_all),
        },
    }


def print_seed(r: dict) -> None:
    c, c1 = r["drift"]["checks"][DRIFT_DAY - FIRST_CHECKED:DRIFT_DAY + 2 - FIRST_CHECKED]
    null = [x for x in r.get("none", {}).get("checks", []) + r["drift"]["checks"][:DRIFT_DAY - FIRST_CHECKED]
            if x["checked"]]
    false = [(x["day"], round(x["z"], 2), x["psi_ks_alerts"]) for x in null if x["alert"]]
    print(f"users {r['users']:>7,} seed {r['seed']:2d}: z day d {c['z']:5.2f} d+1 {c1['z']:5.2f} (ceiling "
          f"{r['drift']['ceiling_z_day_d']:5.2f}, sampling z {c['z_sampling']:5.2f}, cuisine {c['cuisine_z']:5.2f}), "
          f"alert d {c['alert']!s:5} d+1 {c1['alert']!s:5} | without drift: max z "
          f"{max(x['z'] for x in null):.2f}, false alerts {false}", flush=True)


def print_summary(s: dict) -> None:
    b, c, w = s["baseline_psi_ks_only"], s["baseline_cuisine_llr"], s["without_dispersion_scaling"]
    print(f"users {s['users']:,}: detection on day d {pct(s['detection_rate_day_d'], 0)} (cuisine "
          f"{pct(c['detection_rate_day_d'], 0)}, PSI/KS only {pct(b['detection_rate_day_d'], 0)}), d+1 "
          f"{pct(s['detection_rate_day_d_plus_1'], 0)}, by d+1 {pct(s['detected_by_day_d_plus_1'], 0)}; false "
          f"alerts: no-drift world {s['false_alerts_no_drift']}/{s['checks_no_drift']} (cuisine "
          f"{c['false_alerts_no_drift']}/{c['checks_no_drift']}), drift world before d "
          f"{s['false_alerts_drift_world_before_d']}/{s['checks_drift_world_before_d']}; mean z day d "
          f"{s['mean_z_day_d']:.2f} (sampling {w['mean_z_day_d']:.2f}, cuisine {c['mean_z_day_d']:.2f}) = "
          f"{s['z_to_ceiling_day_d']:.2f}x the ceiling {s['mean_ceiling_z_day_d']:.2f}", flush=True)


def kept_sizes(users: list[int]) -> list[dict]:
    """The sizes of an earlier run (benchmarks/results/drift.json) that this run does not redo, their
    summaries recomputed from their runs: a large size can be run on its own and join the others.
    Sizes measured before the choice statistic are dropped (their numbers are in docs/MONITORING.md)."""
    path = RESULTS_DIR / "drift.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text()).get("sizes", [])
    kept = [[rethreshold(r) for r in s["runs"]] for s in earlier
            if s["summary"]["users"] not in users and s["summary"].get("statistic") == CHOICE_LLR]
    return [{"summary": summary(runs), "runs": runs} for runs in kept]


def rethreshold(run: dict) -> dict:
    """An earlier run's alerts at this run's threshold, from the z values it kept (the default
    threshold may have moved since; PSI/KS alerts are kept as they were)."""
    def check_alerts(c: dict) -> dict:
        surprise = bool(c["checked"] and c["z"] > THRESHOLDS.surprise_z)
        return {**c, "surprise_alert": surprise, "alert": surprise or bool(c["psi_ks_alerts"]),
                "alert_sampling": bool(c["checked"] and c["z_sampling"] > THRESHOLDS.surprise_z)}

    out = dict(run)
    checks = [check_alerts(c) for c in run["drift"]["checks"]]
    after = [c for c in checks if c["k"] >= DRIFT_DAY]
    first = next((c for c in after if c["alert"]), None)
    out["drift"] = {**run["drift"], "checks": checks, "alert_day_d": after[0]["alert"],
                    "alert_day_d_plus_1": after[1]["alert"],
                    "detection_day_minus_d": first["k"] - DRIFT_DAY if first else None,
                    "false_alerts_before_d": sum(c["alert"] for c in checks if c["k"] < DRIFT_DAY)}
    if "none" in run:
        none = [check_alerts(c) for c in run["none"]["checks"]]
        out["none"] = {**run["none"], "checks": none, "false_alerts": sum(c["alert"] for c in none)}
    return out


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
                  "first_checked_day": FIRST_CHOICE, "first_checked_day_cuisine": FIRST_CHECKED, "thresholds": asdict(THRESHOLDS),
                  "day_convention": "day index k = start_date + k; drift from the start of day d; the check "
                                    "of day d is the run on the first day after d"},
        "sizes": sorted(sizes, key=lambda x: x["summary"]["users"]),
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
    })


if __name__ == "__main__":
    main()
