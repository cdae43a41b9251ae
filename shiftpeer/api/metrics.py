"""``--metrics ENDPOINT``: Prometheus metrics of a node, read from its live state at scrape time.

| metric | type | labels | what |
| --- | --- | --- | --- |
| `shiftpeer_up` | gauge | `account`, `roles` | 1 while the node runs |
| `shiftpeer_sync_connections` | gauge | | authenticated sync connections, both directions |
| `shiftpeer_peers` | gauge | `kind`, `state` | outgoing peers (--connect, --peer) by state |
| `shiftpeer_peer_connected` | gauge | `address`, `kind` | 1 when that outgoing peer is connected |
| `shiftpeer_docs_replicated_in_total` | counter | | documents stored from peers since start |
| `shiftpeer_docs_replicated_out_total` | counter | | documents sent to peers since start |
| `shiftpeer_replication_lag` | gauge | `direction`, `local`, `remote`, `peer` | changes a replication is behind |
| `shiftpeer_replication_caught_up` | gauge | same | 1 once it has caught up |
| `shiftpeer_replications_behind` | gauge | | replications not caught up |
| `shiftpeer_sync_refused_total` | counter | | replication requests refused (policy, unknown database, limits) |
| `shiftpeer_sync_revisions_refused_total` | counter | `by` | revisions left out of a stored batch by the receiving side's rules: `peer` (what we pushed or fed), `here` (what we pulled) |
| `shiftpeer_sync_frames_rejected_total` | counter | `code` | connections closed on a bad frame (protocol violations) |
| `shiftpeer_bad_revisions_total` | counter | `via` | genuinely signed documents refused on their own because their revision does not check (docs/protocol.md section 9), by where they came: `sync` (pull, push, live, gossip), `deliver` (the hub's RPC), `query` (a hub's answer on a user node) |
| `shiftpeer_sync_connections_refused_total` | counter | `limit` | connections refused by a cap: `total` (all listeners), `block` (per /16 or /48), `network` (per /24 or /64), `address` (per IP), `peer` (per identity) |
| `shiftpeer_sync_upload_paused_seconds_total` | counter | | seconds the upload cap (``max_upload_bytes_per_second``) held sync output back |
| `shiftpeer_sync_upload_queued_bytes` | gauge | | bytes waiting for the upload cap now |
| `shiftpeer_quota_refused_total` | counter | `limit` | documents a hub refused because their author had used up a quota by day (hub.json `quota`): `docs` (`docs_per_day`), `bytes` (`bytes_per_day`) |
| `shiftpeer_rpc_refused_total` | counter | `method` | RPC calls from peers refused (e.g. a hub's "not a member") or failed |
| `shiftpeer_api_refused_total` | counter | `status` | local API requests answered with a 4xx |
| `shiftpeer_databases` | gauge | | logical databases, as of the last count (``shiftpeer.census``) |
| `shiftpeer_documents` | gauge | | live documents in all of them, as of the same count |
| `shiftpeer_database_count_age_seconds` | gauge | | seconds since that count finished |
| `shiftpeer_database_docs` | gauge | `db` | documents of the node's own and the largest databases |
| `shiftpeer_database_seq` | gauge | `db` | update sequence of the same databases |
| `shiftpeer_local_replication_lag` | gauge | `flow` | lag of local copies (kept for older dashboards) |

A hub holds a database per user (a million inboxes): a series per database would explode Prometheus'
cardinality, so the per-database series are only the node's own databases and the ``census.TOP``
largest (those ``status`` marks ``own`` or ``largest``, never the recently changed ones, which churn),
capped at ``MAX_DB_SERIES``; the rest is in the totals. Replications are capped at
``MAX_REPLICATION_SERIES`` (those furthest behind first).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from shiftpeer.api.service import url_of
from shiftpeer.api.token import METRICS_TOKEN_FILE, bearer_matches
from shiftpeer.startup import ListeningService
from shiftpeer.sync.limits import REFUSING_CAPS

#: Where a document refused for its revision came in (``factory.counters["bad_revision.<via>"]``).
BAD_REVISION_VIAS = ("sync", "deliver", "query")
#: Which limit of a hub's quota by day refused a document (``factory.counters["quota_refused.<limit>"]``).
QUOTA_LIMITS = ("docs", "bytes")

MAX_DB_SERIES = 50
MAX_REPLICATION_SERIES = 200


class NodeCollector:
    """Reads the node's status and sync counters at scrape time, so nothing is kept in step by hand."""

    def __init__(self, node: Any):
        self._node = node

    def collect(self):
        node = self._node
        status = node.status() if node.store is not None else None
        factory = getattr(node, "sync_factory", None)
        counters = dict(getattr(factory, "counters", {}) or {})
        api_counts = dict(getattr(node.api, "refused", {}) or {})

        up = GaugeMetricFamily("shiftpeer_up", "1 while the node runs", labels=["account", "roles"])
        conns = GaugeMetricFamily("shiftpeer_sync_connections", "Authenticated sync connections")
        peers = GaugeMetricFamily("shiftpeer_peers", "Outgoing peers by state", labels=["kind", "state"])
        peer_up = GaugeMetricFamily("shiftpeer_peer_connected", "1 when the outgoing peer is connected",
                                    labels=["address", "kind"])
        docs_in = CounterMetricFamily("shiftpeer_docs_replicated_in", "Documents stored from peers")
        docs_out = CounterMetricFamily("shiftpeer_docs_replicated_out", "Documents sent to peers")
        rlabels = ["direction", "local", "remote", "peer"]
        lag = GaugeMetricFamily("shiftpeer_replication_lag", "Changes a replication is behind", labels=rlabels)
        caught = GaugeMetricFamily("shiftpeer_replication_caught_up", "1 once the replication caught up",
                                   labels=rlabels)
        behind = GaugeMetricFamily("shiftpeer_replications_behind", "Replications not caught up")
        refused = CounterMetricFamily("shiftpeer_sync_refused", "Replication requests refused")
        revs_refused = CounterMetricFamily("shiftpeer_sync_revisions_refused",
                                           "Revisions the receiving side's rules left out of a batch", labels=["by"])
        rejected = CounterMetricFamily("shiftpeer_sync_frames_rejected",
                                       "Connections closed on a bad frame, by violation code", labels=["code"])
        bad_revs = CounterMetricFamily("shiftpeer_bad_revisions", "Genuinely signed documents refused on their "
                                       "own because their revision does not check", labels=["via"])
        conns_refused = CounterMetricFamily("shiftpeer_sync_connections_refused",
                                            "Sync connections refused by a connection cap", labels=["limit"])
        upload_paused = CounterMetricFamily("shiftpeer_sync_upload_paused_seconds",
                                            "Seconds the upload cap held sync output back")
        upload_queued = GaugeMetricFamily("shiftpeer_sync_upload_queued_bytes", "Bytes waiting for the upload cap")
        quota_refused = CounterMetricFamily("shiftpeer_quota_refused", "Documents refused over their author's quota "
                                            "by day", labels=["limit"])
        api_refused = CounterMetricFamily("shiftpeer_api_refused", "Local API requests answered with a 4xx",
                                          labels=["status"])
        rpc_refused = CounterMetricFamily("shiftpeer_rpc_refused", "RPC calls from peers refused or failed",
                                          labels=["method"])
        n_dbs = GaugeMetricFamily("shiftpeer_databases", "Logical databases, as of the last count")
        n_docs = GaugeMetricFamily("shiftpeer_documents", "Live documents in all databases, as of the last count")
        age = GaugeMetricFamily("shiftpeer_database_count_age_seconds", "Seconds since the last database count")
        docs = GaugeMetricFamily("shiftpeer_database_docs", "Documents of the node's own and largest databases",
                                 labels=["db"])
        seq = GaugeMetricFamily("shiftpeer_database_seq", "Update sequence of the node's own and largest databases",
                                labels=["db"])
        gossip_events = CounterMetricFamily("shiftpeer_gossip_events", "Gossiped documents refused, author "
                                            "conflicts (not held against the relay), bad revisions, "
                                            "neighbours banned, announced addresses not proven",
                                            labels=["event"])
        local_lag = GaugeMetricFamily("shiftpeer_local_replication_lag", "Changes not yet copied", labels=["flow"])

        docs_in.add_metric([], counters.get("docs_in", 0))
        docs_out.add_metric([], counters.get("docs_out", 0))
        refused.add_metric([], counters.get("refused", 0))
        revs_refused.add_metric(["peer"], counters.get("revs_refused_by_peer", 0))
        revs_refused.add_metric(["here"], counters.get("revs_refused", 0))
        for name, n in sorted(counters.items()):
            if name.startswith("violation."):
                rejected.add_metric([name[len("violation."):]], n)
        for via in BAD_REVISION_VIAS:
            bad_revs.add_metric([via], counters.get("bad_revision." + via, 0))
        for limit in QUOTA_LIMITS:
            quota_refused.add_metric([limit], counters.get("quota_refused." + limit, 0))
        for limit in REFUSING_CAPS:
            conns_refused.add_metric([limit], counters.get("connections_refused." + limit, 0))
        for name, n in sorted(counters.items()):
            if name.startswith("rpc_refused."):
                rpc_refused.add_metric([name[len("rpc_refused."):]], n)
        for name, n in sorted(counters.items()):
            if name.startswith("gossip."):
                gossip_events.add_metric([name[len("gossip."):]], n)
        for code, n in sorted(api_counts.items()):
            api_refused.add_metric([str(code)], n)
        conns.add_metric([], len(getattr(factory, "connections", ()) or ()))
        cap = getattr(factory, "upload_cap", None)
        upload_paused.add_metric([], cap.paused_seconds() if cap is not None else 0)
        upload_queued.add_metric([], cap.queued if cap is not None else 0)

        if status is not None:
            up.add_metric([status["account"], ",".join(status["roles"])], 1)
            by_state: dict[tuple[str, str], int] = {}
            for p in status["peers"]:
                state = p.get("state") or ("connected" if p["connected"] else "connecting")
                by_state[(p["kind"], state)] = by_state.get((p["kind"], state), 0) + 1
                peer_up.add_metric([p["address"], p["kind"]], 1 if p["connected"] else 0)
            for (kind, state), n in sorted(by_state.items()):
                peers.add_metric([kind, state], n)
            totals = status["database_totals"]
            if totals["count"] is not None:
                n_dbs.add_metric([], totals["count"])
            if totals["docs"] is not None:
                n_docs.add_metric([], totals["docs"])
                age.add_metric([], max(0.0, status["time"] - totals["as_of"]))
            stable = [(name, info) for name, info in status["databases"].items()
                      if info.get("why") in ("own", "largest")]
            for name, info in sorted(stable, key=lambda kv: -kv[1]["docs"])[:MAX_DB_SERIES]:
                docs.add_metric([name], info["docs"])
                seq.add_metric([name], info["seq"])
            reps = status.get("replications", [])
            behind.add_metric([], sum(1 for r in reps if not r["caught_up"] or r["lag"]))
            seen = set()
            for r in sorted(reps, key=lambda r: -r["lag"])[:MAX_REPLICATION_SERIES]:
                labels = [r["direction"], r["local"], r["remote"], r.get("peer") or ""]
                if tuple(labels) in seen:
                    continue
                seen.add(tuple(labels))
                lag.add_metric(labels, r["lag"])
                caught.add_metric(labels, 1 if r["caught_up"] else 0)
            for flow, n in status["replication_lag"].items():
                local_lag.add_metric([flow], n)
        return [up, conns, peers, peer_up, docs_in, docs_out, lag, caught, behind, refused, revs_refused, rejected,
                bad_revs, conns_refused, upload_paused, upload_queued, quota_refused, rpc_refused, api_refused, gossip_events, n_dbs, n_docs, age, docs, seq, local_lag]


def count_rpc_refusals(factory: Any) -> None:
    """Wrap the factory's RPC handlers so each refused or failed call counts in
    ``factory.counters["rpc_refused.<method>"]`` (the hub's answer to "not a member", "name taken"...)."""
    from twisted.internet.defer import maybeDeferred

    def counted(method: str, handler: Any) -> Any:
        def call(conn: Any, args: Any) -> Any:
            def refused(f: Any) -> Any:
                factory.counters["rpc_refused." + method] += 1
                return f

            return maybeDeferred(handler, conn, args).addErrback(refused)

        call.counted = True
        return call

    for method, handler in list(factory.rpc_handlers.items()):
        if not getattr(handler, "counted", False):
            factory.rpc_handlers[method] = counted(method, handler)


class MetricsResource(Resource):
    """The Prometheus text, for a scraper that sends ``Authorization: Bearer <DIR/metrics.token>``: on a hub
    the replication labels name group and inbox databases and the peers reading them (who reads which
    group), so the port is never open to whoever reaches it. The token only reads metrics; the API's is
    another."""

    isLeaf = True
    log = Logger()

    def __init__(self, registry: CollectorRegistry, token: str):
        super().__init__()
        if not token.strip():
            raise ValueError("the metrics token is empty: an empty bearer would pass")
        self._registry = registry
        self._token = token.encode("ascii")
        self.refused = 0

    def render_GET(self, request: Any) -> bytes:
        if not bearer_matches(request, self._token):
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:   # a scraper misconfigured asks every few seconds
                self.log.warn("refused {n} metrics scrape(s) without the metrics token, the last from {peer}",
                              n=self.refused, peer=str(request.getClientAddress()))
            request.setResponseCode(401)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"www-authenticate", b'Bearer realm="shiftpeer metrics"')
            return f"missing or wrong metrics token: send 'Authorization: Bearer <DIR/{METRICS_TOKEN_FILE}>'\n".encode()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class MetricsService(ListeningService):
    """Serves the metrics (on any path, e.g. /metrics) on the given endpoint string; ``url`` once bound."""

    log = Logger()

    def __init__(self, node: Any, endpoint: str, token: str):
        registry = CollectorRegistry()
        registry.register(NodeCollector(node))
        site = Site(MetricsResource(registry, token))
        site.noisy = False
        super().__init__(serverFromString(node.reactor, endpoint), site, "--metrics", endpoint)
        self.setName("metrics")
        self.url: str | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._waitingForPort.addCallback(self._listened)

    def _listened(self, port: Any) -> Any:
        if port is None:   # a late bind failure, already logged
            return None
        self.url = url_of(port.getHost()) + "/metrics"
        self.log.info("metrics at {url}", url=self.url)
        return port

    def stopService(self) -> Any:
        self.url = None
        return super().stopService()
