"""The gRPC server: :func:`create_server` builds it, :func:`serve` runs one worker process,
:func:`serve_workers` runs N processes sharing the port.

Workers share the port through SO_REUSEPORT (the kernel spreads connections over them). Each has
its own event log directory ``<event_log_dir>/worker-<i>`` (one writer per file), its own metrics
port ``metrics_port + i``, and one BLAS/OpenMP/FAISS thread: parallelism comes from processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys.errors import ConfigError
from recsys.serving.domain import Recommender
from recsys.serving.eventlog import EventLog
from recsys.serving.logs import configure_logging
from recsys.serving.metrics import Metrics
from recsys.serving.sampling import FeatureSampleLogger
from recsys.serving.servicer import RecommenderServicer
from recsys.serving.settings import ServingConfig, resolve_dir, serving_config
from recsys.serving.v1 import recommender_pb2 as pb
from recsys.serving.v1 import recommender_pb2_grpc as pb_grpc

logger = logging.getLogger("recsys.serving.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Recommender"].full_name  # "recsys.v1.Recommender"
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def create_server(settings: ServingConfig, recommender: Recommender, event_log: EventLog, *,
                  metrics: Metrics | None = None, health_servicer: health.HealthServicer | None = None,
                  worker: int = 0, samples: FeatureSampleLogger | None = None) -> grpc.Server:
    """A server with the Recommender service, health checking and reflection; not bound, not started.

    The caller binds it (``server.add_insecure_port("host:port")``) and starts it. ``samples``: the
    feature-sample logger, for a caller that closes it before the event log (default: one of its own).
    """
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Only a multi-worker server shares its port; a single one fails loudly on a busy port.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="rpc"),
                         options=options, maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
    servicer = RecommenderServicer(recommender, event_log, settings, metrics, worker, samples)
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    health_servicer = health_servicer or health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    return server


def worker_log_dir(config, settings: ServingConfig, worker: int) -> Path:
    return resolve_dir(config.data_dir, settings.event_log_dir) / f"worker-{worker}"


def default_recommender(config, settings: ServingConfig) -> Recommender:
    """The policy ``settings.policy`` names, loaded: model, popularity, or auto (model when the
    registry names a serving version, else popularity)."""
    policy = settings.policy
    if policy == "auto":
        from recsys.registry import Registry

        serving = config.registry_dir.exists() and Registry.for_config(config).open().serving() is not None
        policy = "model" if serving else "popularity"
    if settings.ab_version is not None and policy != "model":
        raise ConfigError(f"serving.ab_version={settings.ab_version!r}: A/B arms need the model policy "
                          f"(policy={settings.policy!r} resolved to {policy!r})")
    if policy == "model":
        from recsys.serving.recommender import ModelRecommender

        return ModelRecommender(config, settings).load()
    if policy == "popularity":
        from recsys.serving.fallback import PopularityRecommender

        return PopularityRecommender.for_config(config, settings).load()
    raise ConfigError(f"serving.policy={settings.policy!r}: unknown policy")


def limit_threads() -> None:
    """One BLAS/OpenMP/FAISS thread per process (processes, not threads, give parallelism)."""
    for name in THREAD_ENV:
        os.environ[name] = "1"
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)


def serve(config, settings: ServingConfig | None = None, *, worker: int = 0, recommender: Recommender | None = None,
          stop: threading.Event | None = None) -> None:
    """Run one server process until SIGTERM/SIGINT (or ``stop``), then stop gracefully.

    Graceful stop: health goes NOT_SERVING, new calls are refused, calls in flight get
    ``grace_seconds`` to finish (their lists are logged), queued feature samples are logged, then
    the event log is closed.
    """
    settings = settings or serving_config(config)
    configure_logging(settings.log_level, worker)
    limit_threads()
    recommender = recommender or default_recommender(config, settings)
    limit_threads()
    metrics = Metrics()
    info = recommender.model_info()
    metrics.set_model_version(info.get("model_version", ""))
    metrics.set_arms(info)
    event_log = EventLog(worker_log_dir(config, settings, worker), segment_bytes=settings.segment_bytes).open()
    samples = FeatureSampleLogger(event_log, metrics)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    server = create_server(settings, recommender, event_log, metrics=metrics, health_servicer=health_servicer,
                           worker=worker, samples=samples)
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        event_log.close()
        raise ConfigError(f"cannot listen on {address}: {exc}") from None
    metrics_port = None
    if settings.metrics_port is not None:
        metrics_port = metrics.start_http(settings.metrics_port + worker if settings.metrics_port else 0, settings.host)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    logger.info("serving", extra={"fields": {"address": f"{settings.host}:{port}", "metrics_port": metrics_port,
                                             "event_log": str(event_log.directory),
                                             "model_version": recommender.model_info().get("model_version")}})
    # Not a bare stop.wait(): Python runs signal handlers in the main thread only, and a signal the
    # kernel delivers to another thread (gRPC's) does not wake a main thread blocked on a lock, so
    # SIGTERM could go unhandled for good (seen once in CI: a worker serving on after SIGTERM).
    while not stop.wait(timeout=0.5):
        pass
    logger.info("stopping", extra={"fields": {"grace_seconds": settings.grace_seconds}})
    health_servicer.enter_graceful_shutdown()
    server.stop(settings.grace_seconds).wait()
    samples.close(timeout=settings.grace_seconds)
    event_log.close()
    close = getattr(recommender, "close", None)  # the model recommender's reload watcher
    if close is not None:
        close()
    metrics.stop_http()
    logger.info("stopped", extra={"fields": {"events_logged": event_log.appended, "group_commits": event_log.commits}})


def _worker_main(config, settings: ServingConfig, worker: int) -> None:
    serve(config, settings, worker=worker)


def serve_workers(config, settings: ServingConfig | None = None) -> int:
    """Run ``settings.workers`` server processes on one port; return an exit code.

    One worker runs in this process. Several need a fixed port (not 0); the parent forwards
    SIGTERM/SIGINT to them and, if one dies, stops the others.
    """
    settings = settings or serving_config(config)
    if settings.workers == 1:
        serve(config, settings)
        return 0
    if settings.port == 0:
        raise ConfigError("serving.port=0 with several workers: they must share a fixed port")
    for name in THREAD_ENV:  # inherited by the spawned workers before they import numpy
        os.environ[name] = "1"
    configure_logging(settings.log_level, -1)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(config, settings, i), name=f"recsys-worker-{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()
    stopping = threading.Event()

    def stop_all() -> None:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    def on_signal(*_) -> None:
        stopping.set()
        stop_all()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("workers started", extra={"fields": {"pids": [p.pid for p in procs], "port": settings.port}})
    from multiprocessing.connection import wait

    wait([p.sentinel for p in procs])  # the first worker to exit
    if not stopping.is_set():
        dead = [p for p in procs if not p.is_alive()]
        logger.error("worker exited; stopping the others",
                     extra={"fields": {"worker": dead[0].name, "exitcode": dead[0].exitcode}})
        stop_all()
    for p in procs:
        p.join()
    return 0 if stopping.is_set() and all(p.exitcode == 0 for p in procs) else 1
