"""Online updater: freshness under the load test, sustained events/s, against the raw solve it wraps.

Setup: a redis-server of the benchmark's own (``recsys.testing.LocalRedis``), a simulated world
(``--size``), the nightly (one ALS point of the default 32 factors) published to it.

(a) Freshness under load. The real server (``recsys.serving.server.serve``: one worker, event log
with fsync) and the online updater job (``OnlineUpdateJob.run``, default batch and poll) run each
in its own process; ``--traffic-procs`` processes of simulated traffic
(``recsys.simulation.traffic.run_traffic``: the world's users, clicks and orders drawn from the
truth, one LogFeedback per session) call the server for ``--seconds``. Freshness of each menu
feedback that changed a user: from the server's receipt of the event to the end of the
updater's online write of that user's embedding (``BatchResult.freshness_ms``). The server
receives an event before it logs and acknowledges it, and a row is readable in Redis before the
write returns, so this bounds LogFeedback's ack -> embedding visible from above. Goal: p99 < 5 s.

(b) Sustained throughput. The whole log of (a) is replayed as a backlog by a fresh updater process
(committed offsets removed: the redelivery case, idempotent); records/s of ``run(once=True)``
after ``start()``, against the records/s the load test produced (ratio). Baseline of the solve, in
the same process: implicit's own ``AlternatingLeastSquares.recalculate_user`` on the same users'
confidence rows, as many calls as the updater made solves (and once batched, all users in one
call), and a sample of the project's wrapper ``ALSModel.recalculate_user`` that the updater calls;
ratios of the updater's solves/s to those. Also from (a), in the load's own window (the most
stable number on a shared machine): the updater's busy share, time in ``process()`` over the load
test's wall time; its inverse is the headroom over the load.

    python -m benchmarks.bench_updater [--size small --seconds 60 --traffic-procs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Self

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS (the children inherit it)

import numpy as np

from benchmarks.common import write_result

GOAL_P99_MS = 5000.0
RAW_REPEATS = 5
WRAPPER_CALLS = 300  # ALSModel.recalculate_user calls timed (slow enough that a sample suffices)
BENCH_TRAINING = {"search": {"factors": [32], "regularization": [0.1], "alpha": [10.0], "iterations": [10],
                             "trials": 1},
                  "ranker": {"window_days": 3, "heldout_days": 3}}


def _config(data_dir: str, online_store: str, project: str, size: str):
    from recsys.config import load_config

    return load_config(environ={}, data_dir=Path(data_dir), seed=7).with_overrides(
        sim={"size": size}, online_store=online_store, project=project, training=BENCH_TRAINING)


# ---------------------------------------------------------------- child processes
def _server(config, port: int) -> None:
    """The real server until SIGTERM (graceful stop: in-flight lists are logged)."""
    from recsys.serving.server import serve

    serve(config, config.serving.model_copy(update={"port": port, "metrics_port": None, "workers": 1}))


def _updater(config, ready, stop, out, batch: int, poll_seconds: float) -> None:
    """The online update job, as ``python -m jobs.online_update`` runs it, until ``stop``."""
    from jobs.online_update import OnlineUpdateJob
    from recsys.online import OnlineUpdater

    job = OnlineUpdateJob(config, OnlineUpdater(config), batch).start()
    ready.put(os.getpid())
    report = job.run(poll_seconds=poll_seconds, stop=stop)
    out.put({"batches": report.batches, "records": report.records, "users_written": report.users_written,
             "busy_seconds": report.busy_seconds, "freshness_ms": list(report.freshness_ms)})


def _traffic(config, address: str, seed: int, users: int, seconds: float, out) -> None:
    from recsys.simulation.run import load_truth
    from recsys.simulation.traffic import TrafficSettings, run_traffic

    settings = TrafficSettings(users=users, requests=10**9, seed=seed, feed_k=config.sim.feed_slots,
                               menu_k=config.sim.menu_slots, max_seconds=seconds, timeout=5.0)
    out.put(run_traffic(address, load_truth(config), settings).to_dict())


def _backlog(config, batch: int, users: list[int], out) -> None:
    """Replay the whole log with a fresh job; then the raw solves of the same users' rows."""
    from jobs.online_update import OnlineUpdateJob
    from recsys.online import OnlineUpdater

    job = OnlineUpdateJob(config, OnlineUpdater(config), batch).start()
    t0 = time.perf_counter()
    report = job.run(once=True)
    seconds = time.perf_counter() - t0
    rows = [job.updater.user_row(u) for u in users]  # the users' confidences after the backlog
    out.put({"records": report.records, "batches": report.batches, "solves": report.users_written,
             "seconds": seconds, "busy_seconds": report.busy_seconds,
             "raw": time_solves(job.updater.model, rows, calls=max(report.users_written, 1))})


def best_of(fn, repeats: int = RAW_REPEATS) -> float:
    """Fastest of ``repeats`` timings of ``fn()``: short loops on a shared machine, least disturbed."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def time_solves(model, rows: list, calls: int) -> dict:
    """implicit's own solve on ``rows`` (cycled ``calls`` times; and all rows in one batched call),
    and a sample of the project's wrapper ``ALSModel.recalculate_user``, which the updater calls."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    p = model.hyper
    als = AlternatingLeastSquares(factors=p.factors, regularization=p.regularization, alpha=p.alpha,
                                  dtype=np.float32, num_threads=1)
    als.user_factors, als.item_factors = model.user_factors, model.item_factors
    stacked = sp.vstack(rows).tocsr()
    with threadpool_limits(limits=1, user_api="blas"):
        als.recalculate_user(0, rows[0])  # YtY is computed once and cached: not in the timing
        raw_seconds = best_of(lambda: [als.recalculate_user(0, rows[i % len(rows)]) for i in range(calls)])
        batched_seconds = best_of(lambda: als.recalculate_user(np.arange(len(rows)), stacked))
        raw_vectors = als.recalculate_user(np.arange(len(rows)), stacked)
    wrapper_calls = min(calls, WRAPPER_CALLS)
    t0 = time.perf_counter()
    for i in range(wrapper_calls):
        model.recalculate_user(rows[i % len(rows)])
    wrapper_seconds = time.perf_counter() - t0
    # the baseline computes what the updater writes: its own solve gives the same vectors
    same = all(np.allclose(model.recalculate_user(rows[i]), raw_vectors[i], atol=1e-5)
               for i in range(0, len(rows), max(1, len(rows) // 20)))
    return {"calls": calls, "seconds": raw_seconds, "batched_users": len(rows), "batched_seconds": batched_seconds,
            "wrapper_calls": wrapper_calls, "wrapper_seconds": wrapper_seconds, "same_vectors_as_updater": bool(same)}


# ---------------------------------------------------------------- parent
def _log_census(config) -> dict:
    """Records of the load test's log: served lists, feedback, and the users of menu feedback."""
    from jobs.online_update import log_root
    from recsys.serving import events
    from recsys.serving.eventlog import EventLogReader
    from recsys.serving.sink import log_dirs

    served, feedback, menu_users = {}, 0, set()
    total = 0
    for directory in log_dirs(log_root(config)).values():
        for rec in EventLogReader(directory).read(0):
            r = events.decode(rec.payload)
            total += 1
            if r["type"] == events.SERVED:
                served[r["request_id"]] = (r["surface"], r["user_id"])
            elif r["type"] == events.FEEDBACK:
                feedback += 1
                surface, user = served.get(r["request_id"], (None, None))
                if surface == "menu" and user is not None:
                    menu_users.add(int(user))
    return {"records": total, "served": len(served), "feedback": feedback, "menu_feedback_users": sorted(menu_users)}


def _wait_caught_up(config, seconds: float = 120.0) -> None:
    from jobs.online_update import log_root, offset_file
    from recsys.serving.eventlog import EventLogReader
    from recsys.serving.sink import log_dirs

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dirs = log_dirs(log_root(config))
        if all(offset_file(config, s).load() >= EventLogReader(d).end_offset() for s, d in dirs.items()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"the updater did not catch up with the event log within {seconds:g}s")


def serve_nightly_version(config, summary: dict) -> str | None:
    """Make the nightly's version the serving one; the gate's refusal if it had to be forced.

    This benchmark measures the updater, not the model's quality: a version the gate refused (a
    small world's ALS may not beat popularity on the feed) is promoted anyway, and the JSON says so.
    """
    from recsys.registry import Registry
    from recsys.registry.publish import publish_version

    steps = summary["steps"]
    if steps["publish"]["published"]:
        return None
    Registry.for_config(config).open().promote(steps["register"]["version"], "bench_updater", force=True,
                                               publish=lambda v: publish_version(config, v))
    return steps["gate"]["summary"]


def _get(queue, process, seconds: float):
    """``queue.get`` that fails at once if ``process`` died instead of answering."""
    import queue as queues

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=0.5)
        except queues.Empty:
            if not process.is_alive():
                raise RuntimeError(f"{process.name} exited ({process.exitcode}) without answering") from None
    raise TimeoutError(f"{process.name}: no answer within {seconds:g}s")


class ServingStack:
    """The real server and, with ``updates``, the online updater job, each in its own process.

    ``with ServingStack(...) as stack``: both are started and ready (the server answers health
    checks, the updater has loaded and replayed); ``stack.address`` takes traffic;
    ``stack.updates_report()`` waits until the updater has consumed the whole log, stops it and
    returns its report. Leaving the block stops whatever still runs.
    """

    def __init__(self, ctx, config, *, updates: bool, batch: int = 500, poll_seconds: float = 1.0):
        self.ctx, self.config, self.updates = ctx, config, updates
        self.batch, self.poll_seconds = batch, poll_seconds
        self.procs: list = []
        self.address = ""

    def __enter__(self) -> Self:
        from recsys.serving.client import RecommenderClient
        from recsys.testing import free_port

        port = free_port()
        self.address = f"127.0.0.1:{port}"
        server = self.ctx.Process(target=_server, args=(self.config, port), name="bench-server")
        self.procs.append(server)
        server.start()
        if self.updates:
            self._ready, self._stop, self._out = self.ctx.Queue(), self.ctx.Event(), self.ctx.Queue()
            self._updater = self.ctx.Process(target=_updater, name="bench-updater", args=(
                self.config, self._ready, self._stop, self._out, self.batch, self.poll_seconds))
            self.procs.append(self._updater)
            self._updater.start()
        try:
            with RecommenderClient(self.address) as client:
                client.wait_until_serving(server.is_alive, seconds=180)
            if self.updates:
                _get(self._ready, self._updater, 180)
        except BaseException:
            self.__exit__()
            raise
        return self

    def updates_report(self) -> dict:
        _wait_caught_up(self.config)
        self._stop.set()
        report = _get(self._out, self._updater, 60)
        self._updater.join()
        return report

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()  # the server stops gracefully on SIGTERM
            p.join()


def load_test(ctx, config, args) -> dict:
    """(a): server, updater and traffic, each in its own process(es)."""
    with ServingStack(ctx, config, updates=True, batch=args.batch, poll_seconds=args.poll_seconds) as stack:
        traffic_out = ctx.Queue()
        procs = [ctx.Process(target=_traffic, args=(config, stack.address, seed, args.traffic_users, args.seconds,
                                                    traffic_out)) for seed in range(args.traffic_procs)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        summaries = [traffic_out.get(timeout=args.seconds + 300) for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        report = stack.updates_report()
    return {"traffic": summaries, "updater": report, "wall_seconds": wall}


def quantiles(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"samples": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="simulated world (tiny | small | medium)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load test duration")
    parser.add_argument("--traffic-procs", type=int, default=2, help="traffic processes (closed loop, one "
                                                                      "session at a time each)")
    parser.add_argument("--traffic-users", type=int, default=1000, help="distinct simulated users per process")
    parser.add_argument("--batch", type=int, default=500, help="updater micro-batch (the job's default)")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="updater idle poll (the job's default)")
    args = parser.parse_args(argv)
    from rich.console import Console

    from jobs.nightly import run_nightly
    from jobs.online_update import CONSUMER_DIR
    from recsys.simulation.run import simulate
    from recsys.testing import LocalRedis

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-updater-") as tmp, LocalRedis(Path(tmp)) as redis:
        config = _config(str(Path(tmp) / "world"), redis.url, "bench_updater", args.size)
        sim = simulate(config)
        t0 = time.perf_counter()
        forced = serve_nightly_version(config, run_nightly(config, console=Console(quiet=True)))
        nightly_seconds = time.perf_counter() - t0
        loaded = load_test(ctx, config, args)
        census = _log_census(config)
        shutil.rmtree(config.data_dir / CONSUMER_DIR)  # the backlog: every record again, from offset 0
        out = ctx.Queue()
        child = ctx.Process(target=_backlog, args=(config, args.batch, census["menu_feedback_users"], out))
        child.start()
        backlog = _get(out, child, 1800)
        child.join()

    result = build_result(args, sim, nightly_seconds, forced, loaded, census, backlog)
    print_summary(result)
    print(f"-> {write_result('updater', result)}")
    return 0


def build_result(args, sim, nightly_seconds: float, forced: str | None, loaded: dict, census: dict,
                 backlog: dict) -> dict:
    """The JSON: the load, freshness, the updater under load and on the backlog, the raw solve, ratios."""
    traffic, upd = loaded["traffic"], loaded["updater"]
    wall = loaded["wall_seconds"]
    requests = sum(t["requests"] for t in traffic)
    load = {"records": census["records"], "served": census["served"], "feedback": census["feedback"],
            "other_records": census["records"] - census["served"] - census["feedback"],  # e.g. feature samples
            "wall_seconds": wall, "records_per_s": census["records"] / wall,
            "feedback_per_s": census["feedback"] / wall, "requests": requests, "requests_per_s": requests / wall,
            "degraded_share": sum(t["degraded_share"] * t["requests"] for t in traffic) / max(1, requests),
            "failed_calls": sum(sum(t["errors"].values()) for t in traffic),
            "true_ctr": float(np.mean([t["true_ctr"] for t in traffic]))}
    freshness = {**quantiles(upd["freshness_ms"]), "goal_p99_ms": GOAL_P99_MS}
    freshness["goal_met"] = freshness["p99"] < GOAL_P99_MS
    raw = backlog["raw"]
    solves_per_s = backlog["solves"] / backlog["seconds"]
    raw_per_s = raw["calls"] / raw["seconds"]
    batched_per_s = raw["batched_users"] / raw["batched_seconds"]
    wrapper_per_s = raw["wrapper_calls"] / raw["wrapper_seconds"]
    return {
        "settings": {"size": args.size, "users": sim.users, "restaurants": sim.restaurants, "items": sim.items,
                     "factors": BENCH_TRAINING["search"]["factors"][0], "traffic_procs": args.traffic_procs,
                     "traffic_users": args.traffic_users, "seconds": args.seconds, "batch": args.batch,
                     "poll_seconds": args.poll_seconds, "online_store": "redis", "server_workers": 1,
                     "event_log_fsync": True, "nightly_seconds": round(nightly_seconds, 1),
                     "promoted_despite_gate": forced},
        "load": load,
        "freshness_ms": freshness,
        "updater_under_load": {"batches": upd["batches"], "records": upd["records"], "solves": upd["users_written"],
                               "busy_seconds": upd["busy_seconds"], "busy_share": upd["busy_seconds"] / wall},
        "backlog": {"records": backlog["records"], "batches": backlog["batches"], "solves": backlog["solves"],
                    "seconds": backlog["seconds"], "busy_seconds": backlog["busy_seconds"],
                    "records_per_s": backlog["records"] / backlog["seconds"], "solves_per_s": solves_per_s},
        "raw_solve": {**raw, "solves_per_s": raw_per_s, "batched_solves_per_s": batched_per_s,
                      "wrapper_solves_per_s": wrapper_per_s},
        "ratios": {
            "updater_vs_load_events": backlog["records"] / backlog["seconds"] / load["records_per_s"],
            "updater_vs_raw_solve": solves_per_s / raw_per_s,
            "updater_vs_raw_batched_solve": solves_per_s / batched_per_s,
            "wrapper_vs_raw_solve": wrapper_per_s / raw_per_s,
        },
    }


def print_summary(result: dict) -> None:
    load, f, b = result["load"], result["freshness_ms"], result["backlog"]
    raw, r = result["raw_solve"], result["ratios"]
    print(f"load: {load['requests_per_s']:.0f} req/s, {load['records_per_s']:.0f} log records/s "
          f"({load['feedback_per_s']:.0f} feedback/s), degraded {load['degraded_share']:.1%}, "
          f"{load['failed_calls']} failed calls")
    print(f"freshness receipt->online write: p50 {f['p50']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms "
          f"over {f['samples']} feedback (goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if f['goal_met'] else 'NOT met'}); "
          f"updater busy {result['updater_under_load']['busy_share']:.1%} of the load test")
    print(f"backlog: {b['records']} records in {b['seconds']:.2f} s = {b['records_per_s']:.0f} records/s "
          f"= x{r['updater_vs_load_events']:.1f} the load's rate")
    print(f"solves: updater {b['solves_per_s']:.0f}/s vs raw implicit recalculate_user {raw['solves_per_s']:.0f}/s "
          f"(x{r['updater_vs_raw_solve']:.3f}), raw batched {raw['batched_solves_per_s']:.0f}/s "
          f"(x{r['updater_vs_raw_batched_solve']:.4f}); the wrapper ALSModel.recalculate_user "
          f"{raw['wrapper_solves_per_s']:.0f}/s (x{r['wrapper_vs_raw_solve']:.3f} of raw)")


if __name__ == "__main__":
    raise SystemExit(main())
