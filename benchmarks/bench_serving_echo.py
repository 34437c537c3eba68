"""Serving baseline: a bare gRPC echo server vs the real server, same messages, same load.

Three server kinds, each in its own process, measured in one run by the same load generator
(``--procs`` client processes x ``--threads`` threads, closed loop, ``--requests`` calls per
process after a warm-up, loopback 127.0.0.1 only):

- ``echo``: a generic gRPC handler on the ``RecommendItems`` method path that returns a
  pre-serialized ``RecommendResponse`` of the same size as a real answer (k entries): the floor
  of gRPC + Python on this machine.
- ``popularity``: the real server (``create_server``: servicer, validation, metrics, health)
  answering ``RecommendItems`` with the popularity fallback, every list fsync'd to the event log
  before the answer (group commit).
- ``popularity_nofsync``: the same with the event log's fsync off, to split the cost of durability
  from the cost of the server.

The lead's model path reuses :func:`measure` with its own server factory. Prints p50/p99 latency
and throughput with ratios to ``echo``; writes ``benchmarks/results/serving_echo.json``.

    python benchmarks/bench_serving_echo.py [--requests 2000 --procs 2 --threads 4 --k 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.common import peak_rss_mb, write_result  # noqa: E402

METHOD = "/recsys.v1.Recommender/RecommendItems"


def request_bytes(k: int, restaurant_id: str) -> bytes:
    from recsys.serving.v1 import recommender_pb2 as pb

    msg = pb.RecommendItemsRequest(user_id="123456", restaurant_id=restaurant_id, k=k,
                                   context=pb.RequestContext(local_hour=19, platform=pb.PLATFORM_IOS))
    msg.context.request_time.GetCurrentTime()
    return msg.SerializeToString()


def response_bytes(k: int) -> bytes:
    from recsys.serving.v1 import recommender_pb2 as pb

    return pb.RecommendResponse(
        request_id="f" * 32, model_version="popularity", degraded=True, degraded_reason="fallback:popularity",
        n_candidates=k, entries=[pb.Entry(id=str(1000 + i), score=12.5 - i, position=i, propensity=0.91)
                                 for i in range(k)],
    ).SerializeToString()


# ---------------------------------------------------------------- servers (child processes)
def _echo_server(ready, stop, k: int, threads: int) -> None:
    import grpc

    payload = response_bytes(k)
    server = grpc.server(futures.ThreadPoolExecutor(threads))
    handler = grpc.method_handlers_generic_handler(
        "recsys.v1.Recommender", {"RecommendItems": grpc.unary_unary_rpc_method_handler(lambda req, ctx: payload)})
    server.add_generic_rpc_handlers((handler,))
    ready.put((server.add_insecure_port("127.0.0.1:0"), os.getpid()))
    server.start()
    stop.wait()
    ready.put(peak_rss_mb())
    server.stop(0)


def serve_until_stopped(recommender, settings, log_dir: str, fsync: bool, ready, stop):
    """The real server (``create_server``) over ``recommender`` with a durable event log: report the
    port, serve until ``stop``, drain. Returns the closed event log (for its counters)."""
    from recsys.serving.eventlog import EventLog
    from recsys.serving.server import create_server

    log = EventLog(log_dir, fsync=fsync).open()
    server = create_server(settings, recommender, log)
    ready.put((server.add_insecure_port("127.0.0.1:0"), os.getpid()))
    server.start()
    stop.wait()
    server.stop(1).wait()
    log.close()
    return log


def _popularity_server(ready, stop, data_dir: str, log_dir: str, threads: int, fsync: bool) -> None:
    from recsys.config import load_config
    from recsys.serving.fallback import PopularityRecommender
    from recsys.serving.settings import ServingConfig

    config = load_config(environ={}, data_dir=Path(data_dir)).with_overrides(sim={"size": "tiny"})
    settings = ServingConfig(threads=threads, metrics_port=None)
    recommender = PopularityRecommender.for_config(config, settings).load()
    log = serve_until_stopped(recommender, settings, log_dir, fsync, ready, stop)
    ready.put({"peak_rss_mb": peak_rss_mb(), "events": log.appended, "group_commits": log.commits})


# ---------------------------------------------------------------- load generator (child processes)
def _load(addr: str, payload: bytes, n: int, threads: int, warmup: int, barrier, out) -> None:
    import grpc

    channel = grpc.insecure_channel(addr)
    call = channel.unary_unary(METHOD)  # bytes in, bytes out: the same for every server kind
    for _ in range(warmup):
        call(payload, timeout=10)
    per_thread = [np.empty(n // threads) for _ in range(threads)]

    def run(lat: np.ndarray) -> None:
        for i in range(len(lat)):
            t0 = time.perf_counter()
            call(payload, timeout=10)
            lat[i] = time.perf_counter() - t0

    workers = [threading.Thread(target=run, args=(lat,)) for lat in per_thread]
    barrier.wait()
    start = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put((np.concatenate(per_thread), start, time.time()))
    channel.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its threads so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process, started once (``server_target(ready, stop, *server_args)``) and loaded
    any number of times by :meth:`load`; :meth:`stop` returns what it reports on the way out."""

    def __init__(self, server_target, server_args: tuple):
        self._ctx = mp.get_context("spawn")
        self._ready, self._stop = self._ctx.Queue(), self._ctx.Event()
        self._process = self._ctx.Process(target=server_target, args=(self._ready, self._stop, *server_args))
        self.port = self.pid = None

    def start(self) -> "Server":
        self._process.start()
        self.port, self.pid = self._ready.get(timeout=300)
        return self

    def load(self, payload: bytes, *, requests: int, procs: int, threads: int, warmup: int = 100) -> dict:
        """One closed-loop run: ``procs`` client processes x ``threads`` threads, ``requests`` calls
        per process after ``warmup``. Besides latency and throughput: the server's CPU time per
        measured request (``server_cpu_ms``), read from /proc around the measured calls; it does
        not count time spent waiting for a core."""
        barrier, out = self._ctx.Barrier(procs + 1), self._ctx.Queue()  # the loaders after warm-up, and us
        loaders = [self._ctx.Process(target=_load, args=(f"127.0.0.1:{self.port}", payload, requests, threads, warmup,
                                                         barrier, out))
                   for _ in range(procs)]
        for p in loaders:
            p.start()
        barrier.wait()
        cpu_start = cpu_seconds(self.pid)
        results = [out.get(timeout=600) for _ in loaders]
        cpu = cpu_seconds(self.pid) - cpu_start
        for p in loaders:
            p.join()
        lat = np.concatenate([r[0] for r in results])
        wall = max(r[2] for r in results) - min(r[1] for r in results)
        return {"requests": int(lat.size), "p50_ms": float(np.percentile(lat, 50) * 1e3),
                "p99_ms": float(np.percentile(lat, 99) * 1e3), "mean_ms": float(lat.mean() * 1e3),
                "throughput_rps": float(lat.size / wall), "wall_seconds": wall,
                "server_cpu_ms": cpu / lat.size * 1e3}

    def stop(self) -> dict:
        self._stop.set()
        stats = self._ready.get(timeout=60)
        self._process.join()
        return stats if isinstance(stats, dict) else {"peak_rss_mb": stats}


def measure(server_target, server_args: tuple, payload: bytes, *, requests: int, procs: int, threads: int,
            warmup: int = 100) -> dict:
    """Start a server, load it once (:meth:`Server.load`), stop it; the numbers and its report."""
    server = Server(server_target, server_args).start()
    result = server.load(payload, requests=requests, procs=procs, threads=threads, warmup=warmup)
    return {**result, "server": server.stop()}


def _tiny_world(directory: Path) -> None:
    from recsys.config import load_config
    from recsys.contracts.validate import validate_dataset
    from recsys.simulation.run import simulate

    config = load_config(environ={}, data_dir=directory).with_overrides(sim={"size": "tiny"})
    simulate(config)
    validate_dataset(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured calls per client process")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per client process")
    parser.add_argument("--server-threads", type=int, default=16)
    parser.add_argument("--k", type=int, default=10, help="entries per answer")
    args = parser.parse_args(argv)
    load = dict(requests=args.requests, procs=args.procs, threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        tmp = Path(tmp)
        _tiny_world(tmp / "world")
        import polars as pl

        items = pl.read_parquet(tmp / "world" / "clean" / "items.parquet")
        restaurant = str(items.group_by("restaurant_id").len().sort(["len", "restaurant_id"], descending=True)[0, 0])
        payload = request_bytes(args.k, restaurant)
        results = {
            "echo": measure(_echo_server, (args.k, args.server_threads), payload, **load),
            "popularity": measure(_popularity_server, (str(tmp / "world"), str(tmp / "log-fsync"), args.server_threads,
                                                       True), payload, **load),
            "popularity_nofsync": measure(_popularity_server, (str(tmp / "world"), str(tmp / "log-nofsync"),
                                                               args.server_threads, False), payload, **load),
        }
    echo = results["echo"]
    ratios = {name: {"p50_x_echo": r["p50_ms"] / echo["p50_ms"], "p99_x_echo": r["p99_ms"] / echo["p99_ms"],
                     "throughput_x_echo": r["throughput_rps"] / echo["throughput_rps"]}
              for name, r in results.items() if name != "echo"}
    for name, r in results.items():
        print(f"{name:20s} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  {r['throughput_rps']:8.0f} req/s"
              + (f"  (p50 x{ratios[name]['p50_x_echo']:.2f}, p99 x{ratios[name]['p99_x_echo']:.2f}, "
                 f"throughput x{ratios[name]['throughput_x_echo']:.2f} of echo)" if name in ratios else ""))
    path = write_result("serving_echo", {
        "settings": {**load, "k": args.k, "server_threads": args.server_threads, "address": "127.0.0.1"},
        "message_bytes": {"request": len(payload), "response": len(response_bytes(args.k))},
        "results": results, "ratios": ratios,
    })
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
