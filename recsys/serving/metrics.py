"""Prometheus metrics of one server process, in their own registry (so tests can run several).

Exposed by :meth:`Metrics.start_http` (``prometheus_client.start_http_server``); with N workers,
worker i serves them on ``metrics_port + i``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram("recsys_rpc_latency_seconds", "Server-side latency per RPC.", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("recsys_rpc_errors_total", "RPCs that ended with a non-OK status.",
                              ["method", "code"], registry=r)
        self.degraded = Counter("recsys_degraded_total", "Lists answered by a fallback, by reason.",
                                ["method", "reason"], registry=r)
        self.events = Counter("recsys_events_logged_total", "Records made durable in the event log.",
                              ["type"], registry=r)
        self.model = Gauge("recsys_model_version_info", "1 for the model version being served.",
                           ["version"], registry=r)
        self.arms = Gauge("recsys_ab_arm_share", "Share of users each A/B arm's version serves.",
                          ["arm", "version"], registry=r)
        self.feature_samples = Counter("recsys_feature_samples_total",
                                       "Sampled requests' feature rows: logged, dropped (queue full), failed.",
                                       ["outcome"], registry=r)
        self._http = None
        self._children: dict[tuple, object] = {}

    def child(self, metric, **labels):
        """``metric.labels(**labels)``, kept: ``labels()`` validates and locks on every call (~3 us),
        twice per request on the hot path."""
        key = (id(metric), *labels.items())  # the metrics live as long as this object
        got = self._children.get(key)
        if got is None:
            got = self._children.setdefault(key, metric.labels(**labels))
        return got

    def set_model_version(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version=version).set(1)

    def set_arms(self, info: dict[str, str]) -> None:
        """From model info: ``arm:<name>`` -> version and ``ab_share`` (no arms: nothing)."""
        self.arms.clear()
        if "arm:treatment" in info:
            share = float(info["ab_share"])
            self.arms.labels(arm="control", version=info["arm:control"]).set(1.0 - share)
            self.arms.labels(arm="treatment", version=info["arm:treatment"]).set(share)

    def start_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve /metrics on ``host:port`` (0: a free port); return the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return server.server_address[1]

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
