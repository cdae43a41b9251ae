"""What the ``shiftpeer`` command prints: shifts, feeds, status, replication progress."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from shiftpeer.api.token import METRICS_TOKEN_FILE
from shiftpeer.cli.client import ApiClient
from shiftpeer.cli.errors import CliError



def print_json(value: Any) -> None:
    """Exactly one JSON document on standard output."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def when_text(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def print_shift(shift: dict) -> None:
    print(f"id:        {shift.get('id')}")
    print(f"rev:       {shift.get('rev')}")
    print(f"space:     {shift.get('space')}")
    print(f"href:      {shift.get('href')}")
    print(f"summary:   {shift.get('summary', '')}")
    print(f"author:    {shift.get('author')}")
    print(f"created:   {when_text(shift.get('created'))}")
    print(f"modified:  {when_text(shift.get('modified'))}")
    print(f"in:        {', '.join(shift.get('databases', []))}")
    if shift.get("conflicts"):
        print(f"conflicts: {', '.join(shift['conflicts'])}")
    print(f"content:   {json.dumps(shift.get('content', {}), sort_keys=True)}")


def author_names(client: ApiClient, rows: list[dict]) -> dict[str, str]:
    """{account id: user name} for the authors of ``rows`` (GET /v1/names), to show people names rather
    than ids; empty when the node cannot say (no hub, or a node without the route)."""
    ids = sorted({r["author"] for r in rows if isinstance(r.get("author"), str)})[:100]
    if not ids:
        return {}
    try:
        return client.call("GET", "/names", query={"id": ids}).get("names") or {}
    except CliError:
        return {}


def who_text(account_id: Any, names: dict[str, str]) -> str:
    """A user's name when known, else the start of the account id."""
    return names.get(account_id) or _short(account_id)


def print_feed(result: dict, names: dict[str, str] | None = None) -> None:
    rows = result.get("rows", [])
    for s in rows:
        if s.get("type") == "comment":
            who = who_text(s.get("author"), names or {})
            print(f"{s.get('id')}  {when_text(s.get('created'))}  comment by {who}: {s.get('text', '')}")
        else:
            print(f"{s.get('id')}  {when_text(s.get('created'))}  {s.get('space')}  {s.get('href')}  {s.get('summary', '')}")
    if not rows:
        print("(no shifts)")
    print_more(result)


def print_more(result: dict) -> None:
    """The hint line for the next page, when there is one."""
    if result.get("next_cursor"):
        print(f"more: --cursor {result['next_cursor']}")


def _short(peer_id: Any) -> str:
    return peer_id[:12] if isinstance(peer_id, str) else "-"


def flow_text(r: dict) -> str:
    """``remote -> local`` for pulls and local copies, ``local -> remote`` for pushes, with the peer."""
    if r.get("direction") == "push":
        text = f"{r.get('local')} -> {r.get('remote')}"
    else:
        text = f"{r.get('remote')} -> {r.get('local')}"
    if r.get("peer"):
        text += f" @{r['peer']}"
    return text


class Progress:
    """Turns successive status samples into docs/s and an ETA per replication and overall."""

    WINDOW = 10.0  # seconds of samples the rate is measured over

    def __init__(self) -> None:
        self._samples: list[tuple[float, dict]] = []   # (time, {key: (seq, docs)})
        self.tracked: set = set()                      # replications seen behind at least once

    @staticmethod
    def key(r: dict) -> tuple:
        return (r.get("direction"), r.get("local"), r.get("remote"), r.get("peer_id"))

    def add(self, st: dict) -> None:
        now = st.get("time") if isinstance(st.get("time"), (int, float)) else time.time()
        sample = {}
        for r in st.get("replications", []):
            k = self.key(r)
            sample[k] = (r.get("seq", 0), r.get("docs", 0))
            if not r.get("caught_up") or r.get("lag", 0) > 0:
                self.tracked.add(k)
        self._samples.append((now, sample))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.WINDOW:
            self._samples.pop(0)

    def rates(self, k: tuple) -> tuple[float | None, float | None]:
        """(sequence numbers per second, documents per second) over the window; None without two samples."""
        with_k = [(t, sample) for t, sample in self._samples if k in sample]
        if len(with_k) < 2:   # a replication that started meanwhile is measured from its first sample
            return None, None
        (t0, first), (t1, last) = with_k[0], with_k[-1]
        if t1 <= t0:
            return None, None
        return ((last[k][0] - first[k][0]) / (t1 - t0), (last[k][1] - first[k][1]) / (t1 - t0))

    def overall(self, st: dict) -> dict:
        """Totals over the replications that were behind during this run: done, total, rates, ETA."""
        rows = [r for r in st.get("replications", []) if self.key(r) in self.tracked]
        # the bar measures copies from peers; local copies (which follow them) only when nothing else is behind
        remote = [r for r in rows if r.get("direction") != "local"]
        rows = remote or rows
        done = sum(r.get("seq", 0) for r in rows)
        total = sum(max(r.get("remote_seq", 0), r.get("seq", 0)) for r in rows)
        lag = sum(r.get("lag", 0) for r in rows)
        seq_rate = docs_rate = None
        rated = [self.rates(self.key(r)) for r in rows]
        if rated and all(x[0] is not None for x in rated):
            seq_rate = sum(x[0] for x in rated)
            docs_rate = sum(x[1] for x in rated)
        return {"rows": rows, "done": done, "total": total, "lag": lag, "seq_rate": seq_rate,
                "docs_rate": docs_rate, "eta": _eta(lag, seq_rate),
                "caught_up": all(r.get("caught_up") and r.get("lag", 0) == 0 for r in rows)}


def refused_line(r: dict) -> str:
    """One line on the revisions a replication's receiving side refused, naming the latest and why."""
    n = r.get("refused", 0)
    who = "the peer" if r.get("direction") == "push" else "this node"
    line = f"{n:,} revision{'s' if n != 1 else ''} refused by {who}"
    latest = (r.get("refused_latest") or [None])[-1]
    if latest:
        line += f"; latest {latest.get('id')} {latest.get('rev')}: {latest.get('code')}: {latest.get('reason')}"
    return line


def _eta(lag: int, rate: float | None) -> float | None:
    if lag <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return lag / rate


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_bar(done: int, total: int, width: int = 24) -> str:
    """``[#########...............]  37%``: the fraction of ``total`` reached."""
    frac = 1.0 if total <= 0 else max(0.0, min(1.0, done / total))
    filled = int(round(frac * width))
    return "[" + "#" * filled + "." * (width - filled) + f"] {frac * 100:3.0f}%"


def progress_line(done: int, total: int, docs_rate: float | None, eta: float | None, bar: bool) -> str:
    """One progress line: a bar on a terminal, plain numbers otherwise."""
    rate = "-" if docs_rate is None else f"{docs_rate:,.0f}"
    text = f"{done:,}/{total:,}  {rate} docs/s  ETA {_duration(eta)}"
    return (progress_bar(done, total) + "  " + text) if bar else text


def _ago(st: dict, then: Any) -> str:
    now = st.get("time")
    if not isinstance(then, (int, float)) or not isinstance(now, (int, float)):
        return "-"
    return _duration(max(0.0, now - then)) + " ago"


def _database_order(item: tuple[str, dict]) -> tuple:
    """The node's own databases by name, then the largest (most documents first), then the recent."""
    name, info = item
    why = info.get("why")
    rank = {"own": 0, "largest": 1, "recent": 2}.get(why, 3)
    return rank, -info.get("docs", 0) if why == "largest" else 0, name


def _database_rows(rows: list[tuple[str, dict]]) -> None:
    for name, info in rows:
        why = f"  ({info['why']})" if info.get("why") else ""
        print(f"  {name:<32} {info.get('docs', 0):>10,} docs  seq {info.get('seq', 0):,}{why}")


def print_databases(st: dict) -> None:
    """How many databases there are (as of the last count), a bounded few of them, and a page if asked."""
    totals = st.get("database_totals") or {}
    shown = st.get("databases", {})
    if totals.get("count") is None:
        line = "counting..." if totals else f"{len(shown)}"
    else:
        line = f"{totals['count']:,}"
        if totals.get("docs") is not None:
            # the total is a snapshot (a count runs at most every minute or so); the rows below are live
            line += f" holding {totals['docs']:,} docs at the last count, {_ago(st, totals.get('as_of'))}" \
                    f" (took {totals.get('seconds') or 0:.1f}s; the counts below are current)"
        if totals.get("scanning"):
            again = "counting again" if totals.get("docs") is not None else "counting their documents"
            line += f", {again} ({totals.get('scanned') or 0:,} read)"
    print(f"databases: {line}")
    _database_rows(sorted(shown.items(), key=_database_order))
    if totals.get("count") is not None and totals["count"] > len(shown):
        print(f"  ... {len(shown)} shown (own, largest, recently changed); "
              "'status --databases PREFIX' lists the others")
    page = st.get("database_page")
    if page is not None:
        under = f"under {page['prefix']!r}" if page.get("prefix") else "(all)"
        print(f"databases {under}: {page.get('total', 0):,}"
              + (f", after {page['after']}" if page.get("after") else ""))
        _database_rows([(r["name"], r) for r in page.get("rows", [])])
        if page.get("next"):
            print(f"  next page: --databases {page.get('prefix') or '*'!r} --after {page['next']}")


def print_gossip(gossip: dict | None, st: dict | None = None) -> None:
    """A full peer's gossip neighbours, the gossip events counted since start (those not zero), then its
    banned peers with why and since when (full ids, for 'shiftpeer gossip unban'); nothing on a node that
    does not gossip."""
    if gossip is None:
        return
    keeps = f" (keeps {gossip['low']}-{gossip['high']})" if gossip.get("low") is not None else ""
    known = f", {gossip['candidates']} known" if gossip.get("candidates") is not None else ""
    print(f"gossip:    {gossip.get('live', 0)} live neighbour(s){keeps}{known}, {gossip.get('banned', 0)} banned")
    for n in gossip.get("neighbours", []):
        extra = [f"{n['strikes']} strikes"] if n.get("strikes") else []
        if n.get("static"):
            extra.append("static")
        if n.get("down_for") is not None:
            extra.append(f"down {_duration(n['down_for'])}")
        print(f"  {n.get('address') or '-':<24} {n.get('direction', ''):<3} {n.get('state', ''):<10} "
              f"{_short(n.get('peer_id'))}" + (f"  ({', '.join(extra)})" if extra else ""))
    events = {name: n for name, n in (gossip.get("events") or {}).items() if n}
    if events:   # what docs/fullpeer.md says status counts: refusals, author conflicts, bans, unproven addresses
        print("  events since start: " + ", ".join(f"{name} {n:,}" for name, n in sorted(events.items())))
    for b in gossip.get("bans", []):
        since = "since before this node kept ban times" if b.get("since") is None \
            else f"since {when_text(b['since'])} ({_ago(st or {}, b['since'])})"
        print(f"  banned {b.get('peer_id')}  {b.get('why', '')}, {since}")
    if gossip.get("bans"):
        print("  ('shiftpeer gossip unban PEER_ID' or '--all' lifts a ban)")


def hub_line(hub: dict | None) -> str:
    """Where the node's flows reach a hub: --connect's address, or (a hub without one) the node itself."""
    if not hub:
        return "- (no --connect: register, publish and the other flows need a hub)"
    if hub.get("self"):
        via = hub.get("dials") or hub.get("listen")
        return f"this node itself, over its own listener {via} (key pinned; the operator's account)"
    return str(hub.get("address"))


def upload_line(up: dict) -> str:
    """The upload cap of ``status``: its rate, how long it held sync output back, what waits for it now."""
    return (f"upload cap: {up['max_bytes_per_second']:,} bytes/s; held sync output back "
            f"{up['paused_seconds']:,.1f} s since start; {up['queued_bytes']:,} bytes waiting")


def quota_line(q: dict) -> str:
    """A hub's quota by day in ``status``: its limits and what today (UTC) brought."""
    limits = [f"{q[key]:,} {what}" for key, what in (("docs_per_day", "documents"), ("bytes_per_day", "bytes"))
              if q.get(key) is not None]
    return (f"quota:     {' and '.join(limits)} a day per account; today ({q.get('day')} UTC) "
            f"{q.get('accounts_today', 0):,} accounts counted, {q.get('refused_today', 0):,} documents refused")


def print_status(st: dict, progress: Progress | None = None, bar: bool = False) -> None:
    """The human view of /v1/status; with ``progress`` (watch), rates, ETAs and bars for what is behind."""
    print(f"account:   {st.get('account')}" + (f" ({st['user']})" if st.get("user") else ""))
    if st.get("tls_peer_id") not in (None, st.get("account")):   # a hub certificate's key: what --hub-id pins
        print(f"tls id:    {st['tls_peer_id']}")
    print(f"roles:     {', '.join(st.get('roles', []))}")
    print(f"api:       {st.get('api')}")
    print(f"listen:    {', '.join(st.get('listen', [])) or '-'}")
    if st.get("metrics"):
        token = os.path.join(st.get("directory") or ".", METRICS_TOKEN_FILE)
        print(f"metrics:   {st['metrics']} (Authorization: Bearer, the token in {token})")
    print(f"hub:       {hub_line(st.get('hub'))}")
    peers = st.get("peers", [])
    if not peers:
        print("peers:     -")
    else:
        print("peers:")
        for p in peers:
            state = p.get("state") or ("connected" if p.get("connected") else "not connected")
            ident = f"  {_short(p.get('peer_id'))}" if p.get("peer_id") else ""
            print(f"  {p.get('address', '-'):<24} {p.get('kind', ''):<5} {state}{ident}")
            if p.get("last_error") and not p.get("connected"):
                print(f"    last error ({_ago(st, p.get('last_error_at'))}): {p['last_error']}")
    conns = st.get("connections", [])
    if conns:
        print(f"sync connections: {len(conns)}")
    if st.get("upload"):
        print(upload_line(st["upload"]))
    if st.get("quota"):
        print(quota_line(st["quota"]))
    print_databases(st)
    print_gossip(st.get("gossip"), st)
    reps = st.get("replications")
    if reps is None:  # a node from before the replications list
        for flow, n in sorted(st.get("replication_lag", {}).items()):
            print(f"  {flow:<32} lag {n}")
        return
    if not reps:
        print("replication: -")
        return
    print("replication:" + ("  all caught up" if st.get("caught_up") else ""))
    shown = reps if len(reps) <= 30 else [r for r in reps if not r.get("caught_up") or r.get("lag")][:30]
    for r in shown:
        flow = flow_text(r)
        if r.get("caught_up") and not r.get("lag"):
            state = "caught up"
        else:
            state = f"lag {r.get('lag', 0):,}" + ("" if r.get("caught_up") else ", catching up")
        line = f"  {r.get('direction', ''):<5} {flow:<48} {state:<25} seq {r.get('seq', 0):,}/{r.get('remote_seq', 0):,}"
        print(line)
        if r.get("refused"):
            print("        " + refused_line(r))
        if progress is not None and Progress.key(r) in progress.tracked and not (r.get("caught_up") and not r.get("lag")):
            seq_rate, docs_rate = progress.rates(Progress.key(r))
            print("        " + progress_line(r.get("seq", 0), r.get("remote_seq", 0), docs_rate,
                                             _eta(r.get("lag", 0), seq_rate), bar))
    if len(shown) < len(reps):
        print(f"  ... and {len(reps) - len(shown)} more, caught up")
