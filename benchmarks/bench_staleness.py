"""Staleness under taste drift: true CTR of a stale model with and without online updates, and of
the drift-triggered retrain, in the closed loop (simulated traffic against the real server).

World (``--size``): the log covers days [0, drift_day]; from ``drift_day`` on, a share
(``--drift-share``) of the users has a new taste (``recsys.simulation.world``). Two models, each
from the nightly on its own data directory (same world, same truth):

- ``stale``: trained on the log before the drift day (the model of the night before the drift);
- ``retrain``: trained on the whole log, the first drifted day included (the retrain a drift
  alert triggers the morning after).

Four arms: each model served by the real server, without and with the online updater job (each in
its own process). Traffic (``run_traffic``, in this process) on the day after the log, same seed in
every arm: the same users, in rounds (round r = each user's r-th session), at the same simulated
times. Measured from the truth (no click noise), per served list: its expected clicks as a share
of the best list's for the same request (the oracle: the request's candidates by true
attractiveness), which normalises away which restaurants an arm's earlier lists led users to open.
Per arm and surface, over each user's sessions after the first: drifting and stable users' mean
share, and the drift gap (stable minus drifting, within the arm, so a model-wide change such as a
ranker that one nightly ships and the other does not cancels out); paired lifts between arms.
Online updates only move menu rankings (user embeddings); the feed's lists are precomputed nightly.

Writes ``benchmarks/results/staleness.json`` and ``staleness.png``.

    python -m benchmarks.bench_staleness [--size tiny --drift-share 0.3 --rounds 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS (the children inherit it)

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.bench_updater import BENCH_TRAINING, ServingStack, serve_nightly_version
from benchmarks.common import RESULTS_DIR, write_result

ARMS = (("stale", False), ("stale", True), ("retrain", False), ("retrain", True))


def arm_name(model: str, updates: bool) -> str:
    return f"{model}+online" if updates else model


def _config(data_dir: Path, online: str, project: str, args):
    from recsys.config import load_config

    sim = {"size": args.size, "days": args.drift_day + 1, "drift_day": args.drift_day, "drift_share": args.drift_share}
    return load_config(environ={}, data_dir=data_dir, seed=args.seed).with_overrides(
        sim=sim, online_store=online, project=project, training=BENCH_TRAINING)


def stale_copy(world_dir: Path, target: Path, cutoff) -> None:
    """The world's raw tables and truth, the impressions cut at ``cutoff`` (the log of the night
    before the drift)."""
    shutil.copytree(world_dir / "truth", target / "truth")
    shutil.copytree(world_dir / "raw", target / "raw")
    impressions = target / "raw" / "impressions.parquet"
    pl.read_parquet(impressions).filter(pl.col("ts") < cutoff).write_parquet(impressions)


def train(config) -> dict:
    """Nightly + serving version; what the version was trained until."""
    from rich.console import Console

    from jobs.nightly import run_nightly
    from recsys.registry import Registry

    t0 = time.perf_counter()
    forced = serve_nightly_version(config, run_nightly(config, console=Console(quiet=True)))
    registry = Registry.for_config(config).open()
    meta = registry.show(registry.serving().version)
    directory = registry.version_dir(meta.version)
    return {"version": meta.version, "trained_until": meta.trained_until.isoformat(),
            "menu_ranker": (directory / "ranker.json").exists(), "promoted_despite_gate": forced,
            "seconds": round(time.perf_counter() - t0, 1)}


def oracle_clicks(truth, surface: str, user: int, ts_us: int, restaurant: int | None, slots: int) -> float:
    """Expected clicks of the best list of this request (its candidates by true attractiveness)."""
    _, entity = truth.candidates(surface, [user], [ts_us], None if restaurant is None else [restaurant])
    attr = truth.attractiveness(surface, np.full(len(entity), user), entity, np.full(len(entity), ts_us))
    best = np.sort(attr)[::-1][:slots]
    return float((truth.examination(np.arange(len(best))) * best).sum())


def served_frame(served, truth) -> pl.DataFrame:
    """One row per served list: surface, user, round (the user's session), drifting?, expected
    clicks of the list and of the oracle's list for the same request, slots."""
    from recsys.serving.events import to_us

    drifts = truth.world.user_drifts
    session: dict[int, int] = {}
    rows = []
    for s in served:
        if not s.ranked.entries:
            continue
        if s.surface == "feed":
            session[s.user_id] = session.get(s.user_id, -1) + 1
        ts_us = to_us(s.ts)
        restaurant = None if s.surface == "feed" else int(truth.world.item_restaurant[int(s.ranked.entries[0].id)])
        rows.append((s.surface, s.user_id, session.get(s.user_id, 0), bool(drifts[s.user_id]), float(sum(s.p_click)),
                     oracle_clicks(truth, s.surface, s.user_id, ts_us, restaurant, len(s.p_click)), len(s.p_click)))
    return pl.DataFrame(rows, schema=["surface", "user_id", "round", "drifting", "clicks", "oracle_clicks", "slots"],
                        orient="row")


def complete_rounds(frame: pl.DataFrame) -> int:
    """Rounds every user of the traffic finished (the budget may end one half-way)."""
    return int(frame.filter(pl.col("surface") == "feed").group_by("user_id").len()["len"].min())


SURFACES = ("feed", "menu")


def in_cell(surface: str, drifting: bool, rounds: range) -> pl.Expr:
    return ((pl.col("surface") == surface) & (pl.col("drifting") == drifting)
            & pl.col("round").is_between(rounds.start, rounds.stop - 1))


def per_user(frame: pl.DataFrame, surface: str, drifting: bool, rounds: range) -> pl.DataFrame:
    """Each user's true clicks as a share of the oracle's: normalises away which restaurants and
    menus the arm's earlier lists led the user to open."""
    return (frame.filter(in_cell(surface, drifting, rounds))
            .group_by("user_id").agg(v=pl.col("clicks").sum() / pl.col("oracle_clicks").sum()))


def interval(mean: float, se: float, n: int) -> dict:
    return {"mean": mean, "low": mean - 1.96 * se, "high": mean + 1.96 * se, "users": n}


def mean_of(values: pl.Series) -> dict:
    """Mean over users with a 95% normal interval."""
    return interval(float(values.mean()), float(values.std()) / np.sqrt(values.len()), values.len())


def drift_gap(frame: pl.DataFrame, surface: str, rounds: range) -> dict:
    """Stable minus drifting users' mean share of the oracle, within one arm (independent groups)."""
    stable = per_user(frame, surface, False, rounds)["v"]
    drifting = per_user(frame, surface, True, rounds)["v"]
    se = np.sqrt(stable.var() / stable.len() + drifting.var() / drifting.len())
    return interval(float(stable.mean() - drifting.mean()), float(se), stable.len() + drifting.len())


def paired_lift(a: pl.DataFrame, b: pl.DataFrame, surface: str, drifting: bool, rounds: range) -> dict:
    """Arm b minus arm a, user by user (the same users in every arm: the traffic's seed)."""
    pair = per_user(a, surface, drifting, rounds).join(per_user(b, surface, drifting, rounds), on="user_id",
                                                       suffix="_b")
    return mean_of(pair["v_b"] - pair["v"])


def analyse(frames: dict[str, pl.DataFrame], rounds: int) -> dict:
    """Per arm and surface: drifting and stable users' share of the oracle and the drift gap,
    over each user's sessions after the first (by then an online arm has folded in the user's own
    feedback); paired lifts between arms, also on the first session (for the online arms a
    placebo: nothing of the user's own is folded in yet)."""
    after, first = range(1, rounds), range(1)
    cells = {name: {surface: {"drifting": mean_of(per_user(f, surface, True, after)["v"]),
                              "stable": mean_of(per_user(f, surface, False, after)["v"]),
                              "gap": drift_gap(f, surface, after)}
                    for surface in SURFACES} for name, f in frames.items()}
    pairs = (("stale", "stale+online"), ("stale", "retrain"), ("retrain", "retrain+online"))
    lifts = {f"{b}_vs_{a}": {f"{surface}_{group}": {
        "sessions_after_first": paired_lift(frames[a], frames[b], surface, group == "drifting", after),
        "first_session": paired_lift(frames[a], frames[b], surface, group == "drifting", first)}
        for surface in SURFACES for group in ("drifting", "stable")} for a, b in pairs}
    return {"rounds": rounds, "of_oracle_sessions_after_first": cells, "paired_lifts": lifts}


def headline(cells: dict, rounds: int) -> str:
    def gap(arm: str, surface: str) -> str:
        g = cells[arm][surface]["gap"]
        return f"{g['mean']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}]"

    parts = []
    for surface in SURFACES:
        stale = cells["stale"][surface]
        parts.append(f"{surface}: stale model, drifting users {stale['drifting']['mean']:.3f} of the oracle's true "
                     f"clicks vs stable {stale['stable']['mean']:.3f} (drift gap {gap('stale', surface)}); gap with "
                     f"online updates {gap('stale+online', surface)}, after the retrain {gap('retrain', surface)}, "
                     f"both {gap('retrain+online', surface)}")
    return f"Sessions 2..{rounds} of the day after the drift. " + "; ".join(parts) + "."


def plot(cells: dict, models: dict, path: Path) -> None:
    """Per surface: each arm's drifting and stable users' share of the oracle, 95% intervals; an
    arm's label says whether its nightly shipped the menu ranker (a gate of its own)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(cells)
    labels = [f"{a}\nmenu: {'ranker' if models[a.split('+')[0]]['menu_ranker'] else 'ALS only'}" for a in arms]
    fig, axes = plt.subplots(1, len(SURFACES), figsize=(11, 4), sharey=False)
    for ax, surface in zip(axes, SURFACES):
        for offset, group, color in ((-0.1, "drifting", "tab:red"), (0.1, "stable", "tab:blue")):
            v = [cells[a][surface][group] for a in arms]
            x = np.arange(len(arms)) + offset
            ax.errorbar(x, [c["mean"] for c in v], yerr=[[c["mean"] - c["low"] for c in v],
                                                        [c["high"] - c["mean"] for c in v]],
                        fmt="o", color=color, capsize=3, label=f"{group} users")
        ax.set_xticks(range(len(arms)), labels, fontsize=8)
        ax.set_title(f"{surface}")
        ax.set_ylabel("true clicks / oracle's (per user, 95% CI)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Taste drift: the day after, by model and online updates (simulator ground truth)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_arm(ctx, config, truth, updates: bool, args) -> tuple[list, dict]:
    """Traffic against the server (and updater); the served lists and the run's summary."""
    from jobs.online_update import CONSUMER_DIR
    from recsys.simulation.traffic import TrafficSettings, run_traffic

    shutil.rmtree(config.data_dir / CONSUMER_DIR, ignore_errors=True)
    # ~2 calls a session (the feed, ~1 menu): a budget for a little more than ``rounds`` rounds
    settings = TrafficSettings(users=args.users, requests=int(args.rounds * args.users * 2.5), seed=args.seed,
                               feed_k=config.sim.feed_slots, menu_k=config.sim.menu_slots, max_seconds=3600,
                               timeout=5.0, keep_lists=True)
    with ServingStack(ctx, config, updates=updates) as stack:
        summary = run_traffic(stack.address, truth, settings)
        report = stack.updates_report() if updates else None
    out = summary.to_dict()
    if report is not None:
        out["updater"] = {"batches": report["batches"], "solves": report["users_written"],
                          "freshness_p99_ms": float(np.percentile(report["freshness_ms"], 99))
                          if report["freshness_ms"] else None}
    return summary.served, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--drift-day", type=int, default=13, help="first drifted day; the log ends the day after")
    parser.add_argument("--drift-share", type=float, default=0.3)
    parser.add_argument("--users", type=int, default=400, help="distinct users in the traffic (all, on tiny)")
    parser.add_argument("--rounds", type=int, default=6, help="sessions per user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--frames", type=Path, default=None,
                        help="also write each arm's served lists (one row each, with truth values) as Parquet here")
    args = parser.parse_args(argv)
    from recsys.serving.events import from_us
    from recsys.simulation.run import load_truth, simulate
    from recsys.simulation.world import DAY_US
    from recsys.testing import LocalRedis

    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-staleness-") as tmp:
        tmp = Path(tmp)
        with LocalRedis(tmp) as redis:
            configs = {"retrain": _config(tmp / "retrain", redis.url, "stale_retrain", args)}
            simulate(configs["retrain"])
            truth = load_truth(configs["retrain"])
            stale_copy(tmp / "retrain", tmp / "stale", from_us(truth.world.start_us + args.drift_day * DAY_US))
            configs["stale"] = _config(tmp / "stale", redis.url, "stale_stale", args)
            models = {name: train(config) for name, config in configs.items()}
            served, summaries = {}, {}
            for model, updates in ARMS:  # per model: without updates first (the updater writes online rows)
                name = arm_name(model, updates)
                config = configs[model].with_overrides(serving={"event_log_dir": f"events-{name}"})
                served[name], summaries[name] = run_arm(ctx, config, truth, updates, args)

    frames = {name: served_frame(lists, truth) for name, lists in served.items()}
    if args.frames is not None:
        args.frames.mkdir(parents=True, exist_ok=True)
        for name, f in frames.items():
            f.write_parquet(args.frames / f"{name}.parquet")
    rounds = min(args.rounds, *(complete_rounds(f) for f in frames.values()))
    result = analyse(frames, rounds)
    cells = result["of_oracle_sessions_after_first"]
    png = RESULTS_DIR / "staleness.png"
    plot(cells, models, png)
    drifts = truth.world.user_drifts
    text = headline(cells, rounds)
    path = write_result("staleness", {
        "headline": text,
        "settings": {"size": args.size, "drift_day": args.drift_day, "drift_share": args.drift_share,
                     "drifting_users": int(drifts.sum()), "users": len(drifts), "traffic_users": args.users,
                     "seed": args.seed, "traffic_day": args.drift_day + 1,
                     "updater": {"batch": 500, "poll_seconds": 1.0}},
        "models": models,
        "arms": summaries,
        **result,
        "plot": png.name,
        "seconds": round(time.perf_counter() - started, 1),
    })
    print(text)
    for pair, groups in result["paired_lifts"].items():
        for group, v in groups.items():
            a, f = v["sessions_after_first"], v["first_session"]
            print(f"{pair:28s} {group:14s} {a['mean']:+.4f} [{a['low']:+.4f}, {a['high']:+.4f}]   first session "
                  f"{f['mean']:+.4f} [{f['low']:+.4f}, {f['high']:+.4f}]")
    print(f"-> {path}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
