"""``--metrics ENDPOINT``: Prometheus text exposition of the node's database counts and local lag."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site


class NodeCollector:
    """Reads the node's status at scrape time, so nothing is kept in step by hand."""

    def __init__(self, node: Any):
        self._node = node

    def collect(self):
        docs = GaugeMetricFamily("shiftpeer_database_docs", "Documents per logical database", labels=["db"])
        seq = GaugeMetricFamily("shiftpeer_database_seq", "Update sequence per logical database", labels=["db"])
        lag = GaugeMetricFamily("shiftpeer_local_replication_lag", "Changes not yet copied", labels=["flow"])
        if self._node.store is not None:
            status = self._node.status()
            for name, info in status["databases"].items():
                docs.add_metric([name], info["docs"])
                seq.add_metric([name], info["seq"])
            for flow, n in status["replication_lag"].items():
                lag.add_metric([flow], n)
        return [docs, seq, lag]


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class MetricsService(StreamServerEndpointService):
    """Serves /metrics (any path) on the given endpoint string."""

    def __init__(self, node: Any, endpoint: str):
        registry = CollectorRegistry()
        registry.register(NodeCollector(node))
        site = Site(MetricsResource(registry))
        site.noisy = False
        super().__init__(serverFromString(node.reactor, endpoint), site)
        self.setName("metrics")
