"""RecommendItems on the model path against two baselines measured in the same run.

Servers, each in its own process, loaded by the same generator (``bench_serving_echo.Server.load``:
client processes x threads, closed loop, loopback):

- ``echo``: the bare gRPC echo server (a pre-serialized answer of the same size);
- ``floor``: a generic gRPC handler that parses the request, does the SAME Feast online read as the
  model path (same columns, one entity row) and the same FAISS scoring of the same 200 candidates,
  and returns a pre-serialized answer: the floor of any implementation of this path;
- ``model``: the real server (``create_server`` + ``ModelRecommender``: read, FAISS, ranker,
  filters, exploration, top k, event log) with the event log's fsync OFF (the floor does no
  logging), and ``model_fsync`` with it on (durable group commit, the production setting).

Catalog scale: the model version is SYNTHETIC (random 64-dim item and user vectors, 200 candidate
items per restaurant with neighbouring ids, the nightly's ranker.json and precomputed feed
lists), committed and published through the registry like a nightly version; once with a 10k-item
catalog, once with 1M items. The item feature table holds the tiny world's items, so the
synthetic candidates read null item features (the ranker's defaults): the arithmetic is the same.
Online store: a redis-server of the benchmark's own when one is on PATH, else SQLite.

Memory: peak RSS of the model server vs the raw bytes of the item index (N x 64 float32), the user
embeddings and the item feature table.

Rounds: per catalog, the four servers are started once and loaded in turn ``--rounds`` times, the
order rotated each round, so the runs a ratio pairs are seconds apart (on this shared machine a
server's CPU time per request moved by 15% between runs a minute apart). Each number is the median
over rounds, each ratio the median of per-round ratios. ``server_cpu_ms`` is the server process's
CPU time per request, which does not count time spent waiting for a core.

    python -m benchmarks.bench_serving [--requests 300 --procs 2 --threads 4 --rounds 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent import futures
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from benchmarks.bench_serving_echo import Server, _echo_server, response_bytes, serve_until_stopped  # noqa: E402
from benchmarks.common import write_result  # noqa: E402
from recsys.testing import free_port  # noqa: E402

DIM, CANDIDATES, K = 64, 200, 10
FAST_TRAINING = {"search": {"factors": [8], "regularization": [0.1], "alpha": [2.0], "iterations": [5], "trials": 1},
                 "ranker": {"window_days": 3, "heldout_days": 3}}


def _config(data_dir: str, online_store: str, project: str):
    from recsys.config import load_config

    return load_config(environ={}, data_dir=Path(data_dir), seed=7).with_overrides(
        sim={"size": "tiny"}, online_store=online_store, project=project, training=FAST_TRAINING)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that across
    exec, so a spawned server would report the peak of the benchmark process that started it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---------------------------------------------------------------- servers (child processes)
def _model_server(ready, stop, data_dir: str, online_store: str, project: str, log_dir: str, threads: int,
                  fsync: bool) -> None:
    from recsys.serving.recommender import ModelRecommender
    from recsys.serving.server import limit_threads
    from recsys.serving.settings import ServingConfig

    limit_threads()
    config = _config(data_dir, online_store, project)
    settings = ServingConfig(threads=threads, metrics_port=None, epsilon=0.1)
    recommender = ModelRecommender(config, settings, poll_seconds=0).load()
    serve_until_stopped(recommender, settings, log_dir, fsync, ready, stop)
    b = recommender.bundle
    raw = {"index_bytes": int(b.menu.index.vectors.nbytes), "item_features_bytes": b.menu.items.nbytes}
    ready.put({"peak_rss_mb": peak_rss_mb(), "model_version": b.version, **raw})


def _floor_server(ready, stop, data_dir: str, online_store: str, project: str, threads: int) -> None:
    """Parse the request, the same online read, FAISS scores of the same candidates, return."""
    import grpc

    from recsys.features.store import open_store
    from recsys.ranking.index import ItemIndex
    from recsys.ranking.ranker import LinearRanker
    from recsys.registry import Registry
    from recsys.serving.server import limit_threads
    from recsys.serving.stages import OnlineReader, menu_columns, parse_menu
    from recsys.serving.v1 import recommender_pb2 as pb

    limit_threads()
    config = _config(data_dir, online_store, project)
    registry = Registry.for_config(config).open()
    directory = registry.version_dir(registry.serving().version)
    index = ItemIndex.load(directory / "index/items.faiss")
    ranker_path = directory / "ranker.json"
    columns = menu_columns(LinearRanker.load(ranker_path) if ranker_path.exists() else None)
    reader = OnlineReader(open_store(config), columns, futures.ThreadPoolExecutor(threads))
    payload = response_bytes(K)

    def handle(request: bytes, context) -> bytes:
        msg = pb.RecommendItemsRequest.FromString(request)
        row = reader.read({"user_id": int(msg.user_id), "restaurant_id": int(msg.restaurant_id)}, 1.0)
        inputs = parse_menu(row)
        index.score(inputs.user_vector, inputs.candidate_ids)
        return payload

    server = grpc.server(futures.ThreadPoolExecutor(threads))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("recsys.v1.Recommender", {
        "RecommendItems": grpc.unary_unary_rpc_method_handler(handle)}),))
    reader.read({"user_id": 0, "restaurant_id": 0}, 30.0)  # warm-up: Feast loads its registry
    ready.put((server.add_insecure_port("127.0.0.1:0"), os.getpid()))
    server.start()
    stop.wait()
    server.stop(0)
    ready.put({"peak_rss_mb": peak_rss_mb(), "index_bytes": int(index.vectors.nbytes)})


# ---------------------------------------------------------------- the synthetic versions
def synthetic_version(config, source: str, n_items: int, seed: int = 0) -> str:
    """A registry version with a random ``n_items`` x 64 catalog, 200 candidates per restaurant."""
    import polars as pl

    from recsys.ranking.index import ItemIndex
    from recsys.registry import Registry
    from recsys.registry.publish import read_version_outputs, write_version_outputs

    rng = np.random.default_rng(seed)
    registry = Registry.for_config(config).open()
    version = f"bench-{n_items}"
    frames = read_version_outputs(registry, source)
    users = frames["user_embedding"]["user_id"]
    rests = frames["restaurant_candidates"]["restaurant_id"].to_numpy()
    item_ids = np.arange(n_items, dtype=np.int64)
    vectors = rng.standard_normal((n_items, DIM), dtype=np.float32) / np.sqrt(DIM)
    cand = [((r * CANDIDATES + np.arange(CANDIDATES)) % n_items).tolist() for r in rests]
    out = {
        "user_embedding": pl.DataFrame({"user_id": users, "embedding": rng.standard_normal(
            (len(users), DIM), dtype=np.float32).tolist()}).with_columns(
            pl.col("embedding").cast(pl.List(pl.Float32))),
        "item_embedding": pl.DataFrame({"item_id": item_ids[:1000], "embedding": vectors[:1000].tolist()}).with_columns(
            pl.col("embedding").cast(pl.List(pl.Float32))),
        "restaurant_candidates": pl.DataFrame({"restaurant_id": rests, "item_ids": cand,
                                               "scores": [[1.0] * CANDIDATES for _ in rests]}).with_columns(
            pl.col("scores").cast(pl.List(pl.Float32))),
        "user_top_restaurants": frames["user_top_restaurants"].drop("model_version"),
    }
    out = {k: v.with_columns(pl.lit(version).alias("model_version")) for k, v in out.items()}
    meta = registry.show(source)
    if registry.exists(version):
        return version
    with registry.stage(version) as area:
        write_version_outputs(area, out)
        ItemIndex.build(vectors, item_ids).save(area.artifact("index/items.faiss"))
        if (registry.version_dir(source) / "ranker.json").exists():
            shutil.copyfile(registry.version_dir(source) / "ranker.json", area.artifact("ranker.json"))
        area.commit(trained_until=meta.trained_until, data_fingerprint=meta.data_fingerprint,
                    feature_definitions_hash=meta.feature_definitions_hash, params={"synthetic": n_items},
                    metrics={}, gate={}, status="candidate", code_version=meta.code_version)
    return version


def _redis(directory: Path) -> tuple[str, subprocess.Popen | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return "sqlite", None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.025)
    return f"redis://127.0.0.1:{port}", proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="measured calls per client process and round")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--server-threads", type=int, default=8)
    parser.add_argument("--catalogs", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds; medians are reported")
    args = parser.parse_args(argv)
    load = dict(requests=args.requests, procs=args.procs, threads=args.threads)
    from rich.console import Console

    from jobs.nightly import run_nightly
    from recsys.registry import Registry
    from recsys.registry.publish import publish_version
    from recsys.serving.v1 import recommender_pb2 as pb
    from recsys.simulation.run import simulate, world_path

    with tempfile.TemporaryDirectory(prefix="bench-serving-model-") as tmp:
        tmp = Path(tmp)
        online, redis_proc = _redis(tmp)
        try:
            project = "bench_serving"
            config = _config(str(tmp / "world"), online, project)
            simulate(config)
            # Without the ground truth the ranker ships on its held-out AUC alone (on the tiny world
            # its true CTR does not beat ALS-only, so the nightly would drop it): the model path
            # measured must include the ranker.
            world_path(config).unlink()
            source = run_nightly(config, console=Console(file=open(os.devnull, "w")))["steps"]["register"]["version"]
            registry = Registry.for_config(config).open()
            if not (registry.version_dir(source) / "ranker.json").exists():
                raise SystemExit(f"version {source} has no ranker: the benchmark would not measure the full path")
            user = int(__import__("polars").read_parquet(
                registry.version_dir(source) / "embeddings/user_embedding.parquet")["user_id"][0])
            payload = pb.RecommendItemsRequest(user_id=str(user), restaurant_id="1", k=K).SerializeToString()
            rounds: dict[str, list[dict]] = {}
            servers: dict[str, dict] = {}
            versions = {n: synthetic_version(config, source, n) for n in args.catalogs}
            common = (str(config.data_dir), online, project)
            for n, version in versions.items():
                registry.promote(version, "benchmark", publish=lambda v: publish_version(config, v))
                group = {f"echo_{n}": Server(_echo_server, (K, args.server_threads)),
                         f"floor_{n}": Server(_floor_server, (*common, args.server_threads)),
                         f"model_{n}": Server(_model_server, (*common, str(tmp / f"log-{n}"), args.server_threads,
                                                              False)),
                         f"model_fsync_{n}": Server(_model_server, (*common, str(tmp / f"logf-{n}"),
                                                                    args.server_threads, True))}
                for server in group.values():
                    server.start()
                # Every server of the catalog is up (idle ones cost nothing) and they are loaded in
                # turn, the order rotated each round: a burst of load from elsewhere on this shared
                # machine hits one short run, and each ratio pairs runs seconds apart.
                names = list(group)
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        rounds.setdefault(name, []).append(group[name].load(payload, **load))
                servers.update({name: server.stop() for name, server in group.items()})
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait()

    metrics = ("p50_ms", "p99_ms", "throughput_rps", "server_cpu_ms")
    # Each server's numbers: the median over rounds (per metric); the full rounds are kept too.
    results = {name: {**runs[0], **{m: float(np.median([x[m] for x in runs])) for m in metrics},
                      "rounds": [{m: x[m] for m in metrics} for x in runs], "server": servers[name]}
               for name, runs in rounds.items()}

    def ratio(a: str, b: str) -> dict:
        """Median over rounds of the per-round ratio (both servers measured in the same round)."""
        pairs = list(zip(rounds[a], rounds[b]))
        return {key: float(np.median([x[m] / y[m] for x, y in pairs]))
                for key, m in (("p50", "p50_ms"), ("p99", "p99_ms"), ("throughput", "throughput_rps"),
                               ("server_cpu", "server_cpu_ms"))}

    ratios = {}
    for n in args.catalogs:
        ratios[f"model_{n}_vs_floor"] = ratio(f"model_{n}", f"floor_{n}")
        ratios[f"model_fsync_{n}_vs_floor"] = ratio(f"model_fsync_{n}", f"floor_{n}")
        ratios[f"model_{n}_vs_echo"] = ratio(f"model_{n}", f"echo_{n}")
        ratios[f"floor_{n}_vs_echo"] = ratio(f"floor_{n}", f"echo_{n}")
    if len(args.catalogs) == 2:
        small, large = args.catalogs
        ratios["p50_catalog_large_vs_small"] = {
            "model": ratio(f"model_{large}", f"model_{small}")["p50"],
            "floor": ratio(f"floor_{large}", f"floor_{small}")["p50"]}
    memory = {}
    for n in args.catalogs:
        s = results[f"model_{n}"]["server"]
        raw_users = 400 * DIM * 4
        raw = s["index_bytes"] + raw_users + s["item_features_bytes"]
        memory[str(n)] = {"peak_rss_mb": s["peak_rss_mb"], "raw_embeddings_index_mb": raw / 2**20,
                          "rss_over_raw": s["peak_rss_mb"] / (raw / 2**20),
                          "floor_peak_rss_mb": results[f"floor_{n}"]["server"]["peak_rss_mb"]}
    for name, r in results.items():
        print(f"{name:22s} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  {r['throughput_rps']:8.0f} req/s  "
              f"server CPU {r['server_cpu_ms']:.2f} ms/request")
    for name, r in ratios.items():
        print(f"{name:32s} " + "  ".join(f"{k} x{v:.2f}" for k, v in r.items()))
    for n, m in memory.items():
        print(f"memory {n:>8s} items: peak RSS {m['peak_rss_mb']:.0f} MB, raw embeddings+index+item table "
              f"{m['raw_embeddings_index_mb']:.1f} MB (floor server {m['floor_peak_rss_mb']:.0f} MB)")
    path = write_result("serving", {
        "settings": {**load, "rounds": args.rounds, "server_threads": args.server_threads, "k": K, "candidates": CANDIDATES, "dim": DIM,
                     "catalogs": args.catalogs, "online_store": "redis" if online != "sqlite" else "sqlite",
                     "synthetic_index": True, "ranker": True, "address": "127.0.0.1"},
        "results": results, "ratios": ratios, "memory": memory,
    })
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
