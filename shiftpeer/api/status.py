"""What the status route reports about replication: one entry per running replication, with its progress.

Three kinds, each ``{"direction", "local", "remote", "peer", "seq", "remote_seq", "lag", "caught_up", "docs"}``:

- ``pull``: a remote database copied into a local one over a sync connection. ``seq`` is the checkpoint
  (the source sequence stored here), ``remote_seq`` the source's latest sequence we know of (its head
  when the replication was accepted, then every batch it announced since).
- ``push``: a local database copied into a peer's. ``seq`` is what the peer acknowledged, ``remote_seq``
  our own database's sequence (the head to reach).
- ``local``: a role's ``LocalReplication`` inside this node (``user/private -> user/feed`` and so on).

``lag`` is ``remote_seq - seq``, in source sequence numbers: an upper bound on the changes still to copy
(a document changed twice counts once in the changes feed). A client turns two samples into docs/s and
an ETA (``shiftpeer status --watch``, ``shiftpeer sync --wait``).

``refused`` counts the revisions the receiving side's rules left out (a push: the peer's; a pull: ours), and
``refused_latest`` lists the last few as ``{"id", "rev", "code", "reason"}``: a push that is caught up may
still have had some refused (docs/protocol.md section 6).
"""

from __future__ import annotations

from typing import Any

#: Refused revisions listed per replication in status (the Replication keeps more).
REFUSED_SHOWN = 5


def _peer_names(node: Any) -> dict[int, str]:
    """id(connection) -> the HOST:PORT we dialled, for outgoing connections."""
    names = {}
    for address, svc in getattr(node, "peer_clients", {}).items():
        conn = getattr(svc, "connection", None)
        if conn is not None:
            names[id(conn)] = address
    return names


def _pull_head(puller: Any) -> int:
    """The source's latest known sequence for a puller (the sync hook, else what is queued)."""
    handle = puller.handle
    head = getattr(handle, "remote_seq", None)
    queued = [b.seq for b in getattr(puller, "queue", ())]
    return max([handle.seq, *queued, *([head] if isinstance(head, int) else [])])


def _entry(direction: str, local: str, remote: str, peer: Any, peer_id: Any, seq: int, head: int,
           caught_up: bool, docs: int, live: bool, handle: Any = None) -> dict:
    latest = list(getattr(handle, "refused", ()))[-REFUSED_SHOWN:]
    return {
        "direction": direction, "local": local, "remote": remote, "peer": peer, "peer_id": peer_id,
        "seq": seq, "remote_seq": head, "lag": max(0, head - seq), "caught_up": bool(caught_up),
        "docs": docs, "live": live, "refused": getattr(handle, "refused_count", 0),
        "refused_latest": [{"id": r.docid, "rev": r.rev, "code": r.code, "reason": r.reason} for r in latest],
    }


def sync_replications(node: Any) -> list[dict]:
    """Every pull and push running on the node's sync connections, with its progress."""
    factory = getattr(node, "sync_factory", None)
    store = getattr(node, "store", None)
    if factory is None or store is None:
        return []
    names = _peer_names(node)
    out = []
    for conn in sorted(getattr(factory, "connections", ()), key=lambda c: str(getattr(c, "peer_id", ""))):
        mgr = getattr(conn, "replications", None)
        if mgr is None:
            continue
        peer_id = getattr(conn, "peer_id", None)
        peer = names.get(id(conn)) or (peer_id[:16] if isinstance(peer_id, str) else None)
        for puller in list(getattr(mgr, "pullers", {}).values()):
            h = puller.handle
            out.append(_entry("pull", h.local_db, h.remote_db, peer, peer_id, h.seq, _pull_head(puller),
                              h.is_caught_up, h.docs, h.live, h))
        for local_db, h in list(getattr(mgr, "pushes", {}).values()):
            head = store.database(local_db).update_seq() if store.has_database(local_db) else h.seq
            out.append(_entry("push", h.local_db, h.remote_db, peer, peer_id, h.seq, head, h.is_caught_up,
                              h.docs, h.live, h))
    return out


def local_replications(node: Any) -> list[dict]:
    """The roles' LocalReplications (one local database into another), with their progress."""
    store = getattr(node, "store", None)
    if store is None:
        return []
    out = []
    for role in list(getattr(node, "roles", ())):
        for r in list(getattr(role, "replications", ()) or ()):
            if not (store.has_database(r.source) and store.has_database(r.target)):
                continue
            done, head = r.progress()
            out.append(_entry("local", r.target, r.source, None, None, done, head, done >= head, 0, True))
    return out


def replications(node: Any) -> list[dict]:
    """Local replications first, then those over sync connections."""
    return local_replications(node) + sync_replications(node)


def peers(node: Any) -> list[dict]:
    """The outgoing peers (--connect, --peer, and gossip neighbours dialled), with their connection state."""
    out = []
    for address, svc in list(getattr(node, "peer_clients", {}).items()):
        conn = getattr(svc, "connection", None)
        connected = conn is not None and not getattr(conn, "_closing", False)
        out.append({
            "address": address,
            "kind": svc.name.split()[0] if getattr(svc, "name", None) else "peer",
            "connected": connected,
            "state": "connected" if connected else ("connecting" if getattr(svc, "running", False) else "stopped"),
            "peer_id": getattr(conn, "peer_id", None),
            # why the last attempt failed or the last connection ended; None once authenticated
            "last_error": getattr(svc, "last_error", None),
            "last_error_at": getattr(svc, "last_error_at", None),
        })
    return out


def gossip(node: Any) -> dict | None:
    """The gossip neighbours of a full peer (or of a hub's federation), None on a node that does not gossip."""
    from shiftpeer.gossip.report import neighbours_report

    for role in list(getattr(node, "roles", ())):
        g = getattr(role, "gossip", None)
        if g is not None:
            clients = getattr(node, "peer_clients", {})
            static = {a: clients[a] for a in node.settings.peers if a in clients}
            return neighbours_report(g, getattr(role, "neighbours", None), static, _peer_names(node),
                                     node.clock.seconds())
    return None


def upload(node: Any) -> dict | None:
    """The upload cap, when one is set (``max_upload_bytes_per_second``): its rate, the seconds it has held
    sync output back since the node started, and the bytes waiting for it now; None without a cap."""
    cap = getattr(getattr(node, "sync_factory", None), "upload_cap", None)
    if cap is None:
        return None
    return {"max_bytes_per_second": int(cap.rate), "paused_seconds": round(cap.paused_seconds(), 3),
            "queued_bytes": cap.queued}


def quota(node: Any) -> dict | None:
    """A hub's quota by day (hub.json ``quota``, roles/quota.py) and today's use of it; None without one."""
    hub = getattr(getattr(node, "role", lambda name: None)("hub"), "hub", None)
    q = getattr(hub, "quota", None)
    return q.status() if q is not None and q.on else None
