"""The ``shiftpeer`` command: makes node directories and drives a running node through its local API.

It imports nothing from Twisted and talks HTTP with urllib, so each call starts fast. Exit status:
0 success, 1 the node refused or failed the request, 2 bad command line, 3 no node is running for DIR,
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Sequence

from shiftpeer import __version__, jsontext, times, urls

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130   # 128 + SIGINT, what shells report for a command stopped by Ctrl-C
TIMEOUT = 30.0


class CliError(Exception):
    """An error to print as one line on standard error, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR):
        super().__init__(message)
        self.message = message
        self.status = status


# -- talking to the node ------------------------------------------------------------------------


#: The file every node directory has (shiftpeer.nodedir.CONFIG_FILE; not imported: the CLI starts fast).
CONFIG_FILE = "config.json"


def check_node_dir(directory: str) -> None:
    """Exit 2 with what to do when ``directory`` is not a node directory (missing, or neither a config.json
    nor a running node's api.url), so a wrong --data is not mistaken for a node that is not running."""
    if not os.path.isdir(directory):
        raise CliError(
            f"{directory} is not a node directory: make one with 'shiftpeer init {directory} --user NAME'",
            EXIT_USAGE,
        )
    if not any(os.path.isfile(os.path.join(directory, name)) for name in (CONFIG_FILE, "api.url")):
        raise CliError(f"{directory} is not a shiftpeer node directory (it has no {CONFIG_FILE}): "
                       "give --data the directory 'shiftpeer init' made", EXIT_USAGE)


class ApiClient:
    """A minimal JSON client for the node's local API, found through DIR/api.url and DIR/api.token."""

    def __init__(self, directory: str):
        self.directory = directory
        check_node_dir(directory)
        self._not_running = (
            f"no node is running for {directory}: start it with 'twistd -n --pidfile= shiftpeer --data {directory}'"
        )
        try:
            with open(os.path.join(directory, "api.url")) as f:
                self.url = f.read().strip()
            with open(os.path.join(directory, "api.token")) as f:
                self.token = f.read().strip()
        except FileNotFoundError:
            raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
        except PermissionError as e:
            raise CliError(f"cannot read the node's API files in {directory}: {e.strerror}") from None
        if not self.url.startswith("http"):
            raise CliError(f"the node's API listens on {self.url}; this command needs a tcp API endpoint")
        # Never send the token through a proxy: the API is on loopback.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """Send one request and return the decoded JSON answer, or raise CliError with the node's message."""
        url = self.url + "/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=TIMEOUT) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise CliError(_error_message(e)) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (ConnectionRefusedError, FileNotFoundError)):
                raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
            raise CliError(f"cannot reach the node at {self.url}: {e.reason}") from None
        except ConnectionError:
            raise CliError(self._not_running, EXIT_NOT_RUNNING) from None
        except TimeoutError:
            raise CliError(f"the node at {self.url} did not answer within {TIMEOUT:.0f}s") from None


#: How long `sync --wait` without --timeout waits for a node that is not running (yet) to answer.
START_WAIT = 30.0


class StartingNodeClient:
    """The API of a node that may still be starting: twistd was just launched and has not written
    api.url yet (or a stale one from a killed node is still there). Each call retries, re-reading the
    node directory, until the node answers or ``patience`` seconds have passed since it first did not."""

    POLL = 0.1

    def __init__(self, directory: str, patience: float):
        check_node_dir(directory)
        self.directory = directory
        self.patience = patience

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """ApiClient.call, waiting (bounded) while no node is running for the directory."""
        deadline = None
        while True:
            try:
                return ApiClient(self.directory).call(method, path, body, query)
            except CliError as e:
                if e.status != EXIT_NOT_RUNNING:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.patience
                    sys.stderr.write(f"waiting for the node for {self.directory} to start "
                                     f"(up to {self.patience:g}s)\n")
                    sys.stderr.flush()
                if now >= deadline:
                    raise CliError(f"{e.message} (waited {self.patience:g}s)", EXIT_NOT_RUNNING) from None
            time.sleep(self.POLL)


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(e.read()).get("error")
    except Exception:
        message = None
    return message or f"the node answered HTTP {e.code} {e.reason}"


# -- output -------------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    """Exactly one JSON document on standard output."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _when(t: Any) -> str:
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
    print(f"created:   {_when(shift.get('created'))}")
    print(f"modified:  {_when(shift.get('modified'))}")
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


def _who(account_id: Any, names: dict[str, str]) -> str:
    """A user's name when known, else the start of the account id."""
    return names.get(account_id) or _short(account_id)


def print_feed(result: dict, names: dict[str, str] | None = None) -> None:
    rows = result.get("rows", [])
    for s in rows:
        if s.get("type") == "comment":
            who = _who(s.get("author"), names or {})
            print(f"{s.get('id')}  {_when(s.get('created'))}  comment by {who}: {s.get('text', '')}")
        else:
            print(f"{s.get('id')}  {_when(s.get('created'))}  {s.get('space')}  {s.get('href')}  {s.get('summary', '')}")
    if not rows:
        print("(no shifts)")
    print_more(result)


def print_more(result: dict) -> None:
    """The hint line for the next page, when there is one."""
    if result.get("next_cursor"):
        print(f"more: --cursor {result['next_cursor']}")


def _short(peer_id: Any) -> str:
    return peer_id[:12] if isinstance(peer_id, str) else "-"


def _flow(r: dict) -> str:
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
    """A full peer's gossip neighbours, then its banned peers with why and since when (full ids, for
    'shiftpeer gossip unban'); nothing on a node that does not gossip."""
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
    for b in gossip.get("bans", []):
        since = "since before this node kept ban times" if b.get("since") is None \
            else f"since {_when(b['since'])} ({_ago(st or {}, b['since'])})"
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


def print_status(st: dict, progress: Progress | None = None, bar: bool = False) -> None:
    """The human view of /v1/status; with ``progress`` (watch), rates, ETAs and bars for what is behind."""
    print(f"account:   {st.get('account')}" + (f" ({st['user']})" if st.get("user") else ""))
    print(f"roles:     {', '.join(st.get('roles', []))}")
    print(f"api:       {st.get('api')}")
    print(f"listen:    {', '.join(st.get('listen', [])) or '-'}")
    if st.get("metrics"):
        print(f"metrics:   {st['metrics']}")
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
        flow = _flow(r)
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


# -- commands -----------------------------------------------------------------------------------


def _content(text: str | None) -> Any:
    if text is None:
        return None
    try:
        value = jsontext.loads(text)
    except ValueError as e:
        raise CliError(f"--content is not valid JSON ({e}); e.g. --content '{{\"text\": \"hi\"}}'", EXIT_USAGE) from None
    if not isinstance(value, dict):
        raise CliError("--content must be a JSON object, e.g. --content '{\"text\": \"hi\"}'", EXIT_USAGE)
    return value


#: A hub without a certificate is allowed (peers dialling it with --peer pin nothing and accept it), but
#: user nodes check the hub's name against a CA and refuse it: say so while the fix is one command away.
HUB_WITHOUT_CERT = (
    "shiftpeer: warning: the hub {dir} has no certificate (--tls-cert/--tls-key): it will present its\n"
    "  self-signed node certificate, which user nodes refuse (they check the hub's host name against\n"
    "  --ca or the system's CAs) unless they pin its key ('init ... --connect HOST:PORT --hub-id {account}');\n"
    "  nodes dialling it with --peer sync with it too. For users without the pin, make a\n"
    "  certificate with 'scripts/make-certs OUTDIR --host NAME' (or use one from a CA), start the hub\n"
    "  with 'twistd shiftpeer --data {dir} --tls-cert OUTDIR/NAME.pem --tls-key OUTDIR/NAME.key' (on every\n"
    "  start; or init a new hub directory with those flags) and give users --ca OUTDIR/ca.pem.\n"
)


def cmd_init(args: argparse.Namespace) -> int:
    try:
        from shiftpeer.nodedir import NodeDirArgumentError, init_node_dir
    except ImportError:
        raise CliError("this shiftpeer build cannot create node directories (shiftpeer.nodedir missing)")
    kwargs = dict(
        user=args.user, hub=args.hub, tls_cert=args.tls_cert, tls_key=args.tls_key, full_peer=args.full_peer,
        listen=args.listen, api=args.api, connect=args.connect, peers=args.peer, ca=args.ca,
        hub_id=args.hub_id,
    )
    try:
        config = init_node_dir(args.dir, **kwargs)
    except NodeDirArgumentError as e:   # a bad command line: nothing was written
        raise CliError(f"init: {e} (see 'shiftpeer init --help')", EXIT_USAGE) from None
    except (FileExistsError, ValueError, OSError) as e:
        raise CliError(f"cannot create node directory {args.dir}: {e}") from None
    account = getattr(config, "account_id", None)
    if account is None:
        from shiftpeer.node import load_key

        account = load_key(args.dir, config).account_id
    if args.hub and not args.tls_cert:
        sys.stderr.write(HUB_WITHOUT_CERT.format(dir=args.dir, account=account))
    print(account)
    return 0


def cmd_shift_new(client: ApiClient, args: argparse.Namespace) -> int:
    body = {"space": args.space, "href": args.href}
    if args.summary is not None:
        body["summary"] = args.summary
    content = _content(args.content)
    if content is not None:
        body["content"] = content
    result = client.call("POST", "/shifts", body)
    if args.json:
        print_json(result)
    else:
        print(result["id"])
    return 0


def cmd_shift_edit(client: ApiClient, args: argparse.Namespace) -> int:
    body: dict = {}
    if args.summary is not None:
        body["summary"] = args.summary
    content = _content(args.content)
    if content is not None:
        body["content"] = content
    if not body:
        raise CliError("nothing to change: give --summary TEXT and/or --content JSON", EXIT_USAGE)
    if args.rev is not None:
        body["rev"] = args.rev
    result = client.call("PATCH", f"/shifts/{_quote(args.id)}", body)
    print_json(result) if args.json else print(result["rev"])
    return 0


def cmd_shift_delete(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("DELETE", f"/shifts/{_quote(args.id)}")
    print_json(result) if args.json else print(f"deleted {result['id']}")
    return 0


def cmd_shift_show(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("GET", f"/shifts/{_quote(args.id)}")
    print_json(result) if args.json else print_shift(result)
    return 0


def cmd_shift_publish(client: ApiClient, args: argparse.Namespace) -> int:
    if not (args.public or args.group or args.to):
        raise CliError("say where to publish: --public, --group NAME and/or --to USER", EXIT_USAGE)
    body = {"public": args.public, "groups": args.group, "to": args.to}
    result = client.call("POST", f"/shifts/{_quote(args.id)}/publish", body)
    targets = result.get("targets") or {}
    failed = {t: o for t, o in targets.items() if str(o).startswith("error")}
    if args.json:
        print_json(result)
    elif result.get("public") and args.public or len(failed) < len(targets):
        print(f"published {args.id}" + (" publicly" if result.get("public") and args.public else ""))
        for target, outcome in sorted(targets.items()):
            if target not in failed:
                print(f"  {target}: {outcome}")
    if not failed:
        return 0
    for target, outcome in sorted(failed.items()):
        sys.stderr.write(f"shiftpeer: not published to {target}: {str(outcome).removeprefix('error: ')}\n")
    sys.stderr.write(f"shiftpeer: the hub refused {len(failed)} of {len(targets)} target(s); "
                     "they are left out of the shift's audience\n")
    return EXIT_ERROR


def cmd_feed(client: ApiClient, args: argparse.Namespace) -> int:
    query = {"limit": args.limit}
    for name in ("href", "domain", "space", "author", "group", "thread", "type", "cursor"):
        value = getattr(args, name)
        if value:
            query[name] = value
    for flag in ("following", "favorites"):
        if getattr(args, flag):
            query[flag] = "1"
    query.update(_time_range(args))
    result = client.call("GET", "/feed", query=query)
    if args.json:
        print_json(result)
    else:
        comments = [r for r in result.get("rows", []) if r.get("type") == "comment"]
        print_feed(result, author_names(client, comments))
    return 0


def _time_range(args: argparse.Namespace) -> dict:
    """--since/--until (already parsed to seconds) as query parameters; a swapped range is exit 2."""
    try:
        times.check_range(args.since, args.until)
    except times.BadTime as e:
        raise CliError(str(e), EXIT_USAGE) from None
    return {name: repr(value) for name in ("since", "until") if (value := getattr(args, name)) is not None}


def page_url(value: str) -> str:
    """argparse type of --href: an absolute http(s) URL (the node would refuse anything else, and a refusal
    from the node is exit 1, not the usage error it is). Passed on as given: the node normalizes it."""
    try:
        urls.normalize_href(value)
    except urls.BadHref as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


#: The API's page size bounds (shiftpeer.shifts.MAX_LIMIT; not imported: it pulls in Twisted).
MAX_LIMIT = 500


def _limit_arg(text: str) -> int:
    """argparse type of --limit: a page size the node accepts, so a bad one is a usage error (exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return n


def _time_arg(text: str) -> float:
    """argparse type of --since/--until: seconds since the epoch or ISO 8601 with a zone."""
    try:
        return times.parse_time(text)
    except times.BadTime as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_status(client: ApiClient, args: argparse.Namespace) -> int:
    query = {}
    if args.databases == "":
        raise CliError("--databases needs a prefix such as inbox/ ('*' lists every database)", EXIT_USAGE)
    if args.databases is not None:
        query = {"databases": args.databases, "limit": args.limit, "after": args.after}
        query = {k: v for k, v in query.items() if v is not None}
    elif args.after or args.limit is not None:
        raise CliError("--limit and --after page a database listing: give --databases PREFIX too", EXIT_USAGE)
    if args.watch is None:
        result = client.call("GET", "/status", query=query)
        print_json(result) if args.json else print_status(result)
        return 0
    tty = sys.stdout.isatty()
    progress = Progress()
    try:
        while True:
            result = client.call("GET", "/status", query=query)
            progress.add(result)
            if args.json:
                sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
            else:
                sys.stdout.write("\x1b[H\x1b[2J" if tty else "\n")
                print_status(result, progress, bar=tty)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _ready(st: dict) -> str | None:
    """Why the node is not in step yet (None when it is): a peer not connected, a replication behind."""
    for p in st.get("peers", []):
        if not p.get("connected"):
            why = f": {p['last_error']}" if p.get("last_error") else ""
            return f"not connected to {p.get('kind', 'peer')} {p.get('address')}{why}"
    for r in st.get("replications", []):
        if not r.get("caught_up") or r.get("lag", 0):
            return f"{_flow(r)} is {r.get('lag', 0)} changes behind"
    return None


def cmd_sync(client: ApiClient, args: argparse.Namespace) -> int:
    """Show replication progress; with --wait, follow it until every peer is connected and caught up."""
    tty = sys.stderr.isatty() and not args.json
    progress = Progress()
    interval = 0.2
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last_line = 0.0
    steady = 0
    while True:
        st = client.call("GET", "/status")
        progress.add(st)
        why = _ready(st)
        summary = progress.overall(st)
        if not args.wait:
            break
        steady = steady + 1 if why is None else 0
        if steady >= 2:   # in step on two samples in a row: replications a new connection starts are seen
            break
        now = time.monotonic()
        if tty:
            if summary["total"]:
                line = progress_line(summary["done"], summary["total"], summary["docs_rate"], summary["eta"], True)
                line += "" if why is None else f"  ({why})"
            else:
                line = f"waiting: {why or 'settling'}"
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif why is not None and now - last_line >= 2.0:
            last_line = now
            sys.stderr.write(progress_line(summary["done"], summary["total"], summary["docs_rate"],
                                           summary["eta"], False) + f"  ({why})\n")
            sys.stderr.flush()
        if deadline is not None and now > deadline:
            if tty:
                sys.stderr.write("\n")
            raise CliError(f"not in step after {args.timeout:g}s: {why or 'still settling'} "
                           "(see 'shiftpeer status')")
        time.sleep(interval)
    if tty:
        sys.stderr.write("\r\x1b[K")
    result = {"caught_up": why is None, "waiting_for": why, "replications": st.get("replications", []),
              "peers": st.get("peers", [])}
    if args.json:
        print_json(result)
    elif why is None:
        n = len(st.get("replications", []))
        print(f"in step: {len(st.get('peers', []))} peer(s) connected, {n} replication(s) caught up")
    else:
        print(f"not in step: {why}")
        for r in st.get("replications", []):
            if not r.get("caught_up") or r.get("lag"):
                print(f"  {_flow(r)}: " + progress_line(r.get("seq", 0), r.get("remote_seq", 0), None, None, False))
    return 0


def cmd_sync_dir(args: argparse.Namespace) -> int:
    """`sync`: with --wait, a node that is still starting is waited for (within --timeout, else START_WAIT),
    so `twistd ... & shiftpeer sync --wait` works; without --wait, a node not running is exit 3 at once."""
    if not args.wait:
        return cmd_sync(ApiClient(args.data), args)
    return cmd_sync(StartingNodeClient(args.data, START_WAIT if args.timeout is None else args.timeout), args)


def cmd_invite(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/hub/invites", {})
    print_json(result) if args.json else print(result["token"])
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Put a backup back as the node's store; refused while a node runs on the directory. The directory's
    lock (shiftpeer.nodelock) is held throughout, so no node can start on a half-restored store."""
    from shiftpeer.backup import BackupError, restore, store_path
    from shiftpeer.nodelock import RESTORE, NodeBusy, lock_node_dir

    try:
        store_path(args.data)   # a node directory, before a lock file is made in it
        lock = lock_node_dir(args.data, RESTORE)
    except BackupError as e:
        raise CliError(str(e)) from None
    except NodeBusy as e:
        then = "stop it first, then restore" if e.holder != RESTORE else "wait for it to finish"
        raise CliError(f"{e}: {then}") from None
    except OSError as e:
        raise CliError(f"cannot lock {args.data}: {e.strerror or e}") from None
    try:
        info = restore(args.data, args.infile)
    except BackupError as e:
        raise CliError(str(e)) from None
    finally:
        lock.release()
    if args.json:
        print_json(info)
    else:
        kept = f"; the previous store is kept in {info['previous']}" if info["previous"] else ""
        print(f"restored {args.infile} as {info['store']} (schema {info['schema']}){kept}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """A consistent, compacted copy of the node's LMDB store in one file, the node running or not."""
    from shiftpeer.backup import BackupError, backup

    try:
        info = backup(args.data, args.outfile, force=args.force)
    except BackupError as e:
        raise CliError(str(e)) from None
    if args.json:
        print_json(info)
    else:
        print(f"backed up {info['store']} to {info['path']} ({info['bytes']:,} bytes, schema {info['schema']})")
    return 0


def cmd_register(client: ApiClient, args: argparse.Namespace) -> int:
    body = {}
    if args.name:
        body["name"] = args.name
    if args.invite:
        body["token"] = args.invite
    result = client.call("POST", "/register", body)
    print_json(result) if args.json else print(result.get("message", "registered"))
    return 0


def cmd_group(client: ApiClient, args: argparse.Namespace) -> int:
    name = _quote(args.name)
    if args.group_cmd == "new":
        body: dict = {"name": args.name}
        if args.open:
            body["open"] = True
        if args.join_level:
            body["join_level"] = args.join_level
        result = client.call("POST", "/groups", body)
    elif args.group_cmd == "invite":
        body = {"user": args.user}
        if args.level:
            body["level"] = args.level
        result = client.call("POST", f"/groups/{name}/invite", body)
    elif args.group_cmd == "remove":
        result = client.call("POST", f"/groups/{name}/remove", {"user": args.user})
    elif args.group_cmd == "level":
        result = client.call("POST", f"/groups/{name}/level", {"user": args.user, "level": args.level})
    elif args.group_cmd == "join":
        result = client.call("POST", f"/groups/{name}/join", {})
    elif args.group_cmd == "leave":
        result = client.call("POST", f"/groups/{name}/leave", {})
    else:
        result = client.call("GET", f"/groups/{name}/members")
        if not args.json:
            for m in result.get("members", []):
                print(f"{m.get('user')}  {m.get('level', '')}")
            return 0
    print_json(result) if args.json else print(result.get("message", "ok"))
    return 0


COMMENT_USAGE = "comment SHIFT_ID TEXT | comment edit COMMENT_ID TEXT [--rev REV] | comment delete COMMENT_ID"


def comment_request(args: argparse.Namespace) -> tuple[str, str, dict | None]:
    """(method, path, body) for ``comment ID TEXT`` (add), ``comment edit ID TEXT [--rev REV]`` or
    ``comment delete ID``; a usage error otherwise. A shift id is never the word edit or delete (ids are
    22 random characters), so the old form keeps working."""
    words = args.words
    if words[0] == "edit" and len(words) == 3:
        body = {"text": words[2]} if args.rev is None else {"text": words[2], "rev": args.rev}
        return "PATCH", f"/comments/{_quote(words[1])}", body
    if args.rev is not None:
        raise CliError(f"--rev goes with 'comment edit' only (usage: {COMMENT_USAGE})", EXIT_USAGE)
    if words[0] == "delete" and len(words) == 2:
        return "DELETE", f"/comments/{_quote(words[1])}", None
    if len(words) != 2 or words[0] in ("edit", "delete"):
        raise CliError(f"usage: {COMMENT_USAGE}", EXIT_USAGE)
    return "POST", f"/shifts/{_quote(words[0])}/comments", {"text": words[1]}


def cmd_comment(client: ApiClient, args: argparse.Namespace) -> int:
    method, path, body = comment_request(args)
    result = client.call(method, path, body)
    if args.json:
        print_json(result)
    elif method == "PATCH":
        print(result["rev"])
    elif method == "DELETE":
        print(f"deleted {result['id']}")
    else:
        print(result.get("id", "ok"))
    return 0


def cmd_follow(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/follows", {"user": args.user, "on": not args.off})
    print_json(result) if args.json else print(("unfollowed " if args.off else "following ") + args.user)
    return 0


def cmd_favorite(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", f"/shifts/{_quote(args.id)}/favorite", {"on": not args.off})
    print_json(result) if args.json else print(("unfavorited " if args.off else "favorited ") + args.id)
    return 0


def cmd_messages(client: ApiClient, args: argparse.Namespace) -> int:
    if args.mark_read:
        result = client.call("POST", "/messages/read", {})
        print_json(result) if args.json else print(f"all read ({result.get('unread', 0)} unread)")
        return 0
    query = {"limit": args.limit}
    if args.unread:
        query["unread"] = "1"
    if args.cursor:
        query["cursor"] = args.cursor
    result = client.call("GET", "/messages", query=query)
    if args.json:
        print_json(result)
    else:
        rows = result.get("rows", [])
        names = author_names(client, [m for m in rows if not m.get("from")])
        for m in rows:
            mark = " " if m.get("read") else "*"
            who = m.get("from") or _who(m.get("author"), names)
            print(f"{mark} {_when(m.get('created'))}  {who}  {m.get('text', '')}")
        if not result.get("rows"):
            print("(no messages)")
        print_more(result)
    return 0


def cmd_notice(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.call("POST", "/notices", {"text": args.text})
    print_json(result) if args.json else print(result.get("id", "ok"))
    return 0


def cmd_gossip_unban(client: ApiClient, args: argparse.Namespace) -> int:
    """Lift gossip bans (POST /v1/gossip/unban): the peers are dialled and accepted again."""
    if args.all == bool(args.peer_ids):
        raise CliError("give PEER_ID... or --all ('shiftpeer status' lists the banned peers)", EXIT_USAGE)
    result = client.call("POST", "/gossip/unban", {"all": True} if args.all else {"peers": args.peer_ids})
    if args.json:
        print_json(result)
    else:
        lifted = result.get("lifted", [])
        print(f"lifted {len(lifted)} ban(s)" + "".join(f"\n  {p}" for p in lifted)
              + f"\n{result.get('banned', 0)} still banned")
    return 0


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# -- argument parsing ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that exits with EXIT_USAGE and a one-line message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (DESIGN.md's contract), one sub-command per operation."""
    p = _Parser(prog="shiftpeer", description="Make shiftpeer nodes and drive a running one.")
    p.add_argument("--data", metavar="DIR", default=os.environ.get("SHIFTPEER_DATA"),
                   help="node directory (default: $SHIFTPEER_DATA)")
    p.add_argument("--version", action="version", version=f"shiftpeer {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def reader(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="print one JSON document")
        # --data may also follow the command ('shiftpeer feed --data DIR').
        sp.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help="node directory")
        return sp

    init = sub.add_parser("init", help="create a node directory and its account key")
    init.add_argument("dir", metavar="DIR")
    init.add_argument("--user", required=True, metavar="NAME")
    init.add_argument("--hub", action="store_true", help="run the hub (publishing server) role")
    init.add_argument("--tls-cert", metavar="FILE")
    init.add_argument("--tls-key", metavar="FILE")
    init.add_argument("--full-peer", action="store_true")
    init.add_argument("--listen", action="append", default=[], metavar="ENDPOINT")
    init.add_argument("--api", metavar="ENDPOINT")
    init.add_argument("--connect", metavar="HOST:PORT")
    init.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    init.add_argument("--ca", metavar="FILE", help="trust root for the hub's certificate")
    init.add_argument("--hub-id", metavar="PEER_ID",
                      help="pin the hub's key: its TLS peer id (tls_peer_id in the hub's config.json; the account "
                           "id init printed, unless its certificate has an RSA/ECDSA key). Its certificate is "
                           "then checked by key; with --ca too, by both")
    init.set_defaults(func=cmd_init, needs_node=False)

    register = reader(sub.add_parser("register", help="create the account on the hub"))
    register.add_argument("--name", metavar="NAME", help="account name on the hub (default: the init --user)")
    register.add_argument("--invite", metavar="TOKEN", help="invitation token, for hubs that require one")
    register.set_defaults(func=cmd_register)

    shift = sub.add_parser("shift", help="make, change and show shifts")
    ssub = shift.add_subparsers(dest="shift_cmd", metavar="ACTION", parser_class=_Parser)
    ssub.required = True
    new = reader(ssub.add_parser("new", help="create a private shift; prints its id"))
    new.add_argument("--space", required=True, metavar="NAME")
    new.add_argument("--href", required=True, metavar="URL", type=page_url)
    new.add_argument("--summary", metavar="TEXT")
    new.add_argument("--content", metavar="JSON")
    new.set_defaults(func=cmd_shift_new)
    edit = reader(ssub.add_parser("edit", help="write a new revision of your shift"))
    edit.add_argument("id", metavar="ID")
    edit.add_argument("--summary", metavar="TEXT")
    edit.add_argument("--content", metavar="JSON")
    edit.add_argument("--rev", metavar="REV", help="the revision you edited (refused if it changed since)")
    edit.set_defaults(func=cmd_shift_edit)
    delete = reader(ssub.add_parser("delete", help="delete your shift everywhere it went"))
    delete.add_argument("id", metavar="ID")
    delete.set_defaults(func=cmd_shift_delete)
    publish = reader(ssub.add_parser("publish", help="publish publicly, to groups, or to users"))
    publish.add_argument("id", metavar="ID")
    publish.add_argument("--public", action="store_true")
    publish.add_argument("--group", action="append", default=[], metavar="NAME")
    publish.add_argument("--to", action="append", default=[], metavar="USER")
    publish.set_defaults(func=cmd_shift_publish)
    show = reader(ssub.add_parser("show", help="show a shift, its conflicts and where it lives"))
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=cmd_shift_show)

    feed = reader(sub.add_parser("feed", help="query your feed, newest first"))
    for name, meta in (("href", "URL"), ("domain", "D"), ("space", "S"), ("author", "U"), ("group", "G")):
        feed.add_argument(f"--{name}", metavar=meta, type=page_url if name == "href" else None)
    feed.add_argument("--thread", metavar="ID", help="comments on the shift ID")
    feed.add_argument("--type", metavar="TYPE", help="only documents of this type: shift (the default), comment, message or notice")
    feed.add_argument("--following", action="store_true", help="only authors you follow")
    feed.add_argument("--favorites", action="store_true", help="only shifts you favorited")
    feed.add_argument("--limit", type=_limit_arg, default=50, metavar="N", help=f"rows per page (1-{MAX_LIMIT})")
    feed.add_argument("--since", type=_time_arg, metavar="T",
                      help=f"created at or after T: seconds since the epoch or ISO 8601 with a zone ({times.EXAMPLE})")
    feed.add_argument("--until", type=_time_arg, metavar="T", help="created before T (same forms as --since)")
    feed.add_argument("--cursor", metavar="CURSOR", help="next_cursor of the previous page")
    feed.set_defaults(func=cmd_feed)

    group = sub.add_parser("group", help="groups: new, invite, join, leave, members, remove, level")
    gsub = group.add_subparsers(dest="group_cmd", metavar="ACTION", parser_class=_Parser)
    gsub.required = True
    new_group = reader(gsub.add_parser("new", help="create a group; you are its owner"))
    new_group.add_argument("name", metavar="NAME")
    new_group.add_argument("--open", action="store_true", help="anyone may join without an invitation")
    new_group.add_argument("--join-level", metavar="LEVEL", help="level of members who join an open group")
    new_group.set_defaults(func=cmd_group)
    for action, text in (("join", "join a group you were invited to (or an open one)"),
                         ("leave", "leave a group"), ("members", "list members and their levels")):
        g = reader(gsub.add_parser(action, help=text))
        g.add_argument("name", metavar="NAME")
        g.set_defaults(func=cmd_group)
    invite = reader(gsub.add_parser("invite", help="invite a user"))
    invite.add_argument("name", metavar="NAME")
    invite.add_argument("user", metavar="USER")
    invite.add_argument("--level", metavar="LEVEL", help="read, publish or admin (the hub's default otherwise)")
    invite.set_defaults(func=cmd_group)
    remove = reader(gsub.add_parser("remove", help="remove a member"))
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("user", metavar="USER")
    remove.set_defaults(func=cmd_group)
    level = reader(gsub.add_parser("level", help="change a member's level"))
    level.add_argument("name", metavar="NAME")
    level.add_argument("user", metavar="USER")
    level.add_argument("level", metavar="LEVEL")
    level.set_defaults(func=cmd_group)

    comment = reader(sub.add_parser("comment", help="comment on a shift; edit or delete your comment",
                                    usage=f"shiftpeer {COMMENT_USAGE}"))
    comment.add_argument("words", nargs="+", metavar="ARG",
                         help="SHIFT_ID TEXT (add), edit COMMENT_ID TEXT, or delete COMMENT_ID")
    comment.add_argument("--rev", metavar="REV", help="with edit: the revision you edited (refused if it changed)")
    comment.set_defaults(func=cmd_comment, check=comment_request)

    follow = reader(sub.add_parser("follow", help="follow a user (feed --following)"))
    follow.add_argument("user", metavar="USER")
    follow.add_argument("--off", action="store_true", help="unfollow")
    follow.set_defaults(func=cmd_follow)
    favorite = reader(sub.add_parser("favorite", help="favorite a shift (feed --favorites)"))
    favorite.add_argument("id", metavar="ID")
    favorite.add_argument("--off", action="store_true", help="unfavorite")
    favorite.set_defaults(func=cmd_favorite)

    messages = reader(sub.add_parser("messages", help="your messages and notices, newest first"))
    messages.add_argument("--unread", action="store_true", help="only those not yet read")
    messages.add_argument("--limit", type=_limit_arg, default=50, metavar="N", help=f"rows per page (1-{MAX_LIMIT})")
    messages.add_argument("--cursor", metavar="CURSOR", help="next_cursor of the previous page")
    messages.add_argument("--mark-read", action="store_true", help="mark every message read")
    messages.set_defaults(func=cmd_messages)

    status = reader(sub.add_parser("status", help="roles, peers, database counts, replication lag"))
    status.add_argument("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
                        help="refresh every SECONDS (default 2) until interrupted")
    status.add_argument("--databases", metavar="PREFIX",
                        help="also list the databases whose names start with PREFIX ('*' for all), a page at a time")
    status.add_argument("--limit", type=_limit_arg, metavar="N",
                        help="with --databases: at most N per page (1-500, default 100)")
    status.add_argument("--after", metavar="NAME", help="with --databases: the page after NAME (the 'next' shown)")
    status.set_defaults(func=cmd_status)

    sync = reader(sub.add_parser("sync", help="replication progress (exit 0 in step or not); --wait follows it "
                                              "until in step"))
    sync.add_argument("--wait", action="store_true",
                      help="wait until every peer is connected and every replication caught up, "
                           "with a progress bar on a terminal (a node still starting is waited for)")
    sync.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="with --wait: give up after this (exit 1; exit 3 if the node never answered)")
    sync.set_defaults(func=cmd_sync_dir, needs_node=False, needs_data=True)

    invite_token = reader(sub.add_parser("invite", help="hub operators: make a one-use registration token"))
    invite_token.set_defaults(func=cmd_invite)

    backup = reader(sub.add_parser("backup", help="copy the node's store to OUTFILE (running or stopped)"))
    backup.add_argument("outfile", metavar="OUTFILE")
    backup.add_argument("--force", action="store_true", help="replace OUTFILE if it exists")
    backup.set_defaults(func=cmd_backup, needs_node=False, needs_data=True)
    restore = reader(sub.add_parser("restore", help="replace the stopped node's store with a backup"))
    restore.add_argument("infile", metavar="INFILE")
    restore.set_defaults(func=cmd_restore, needs_node=False, needs_data=True)

    gossip = sub.add_parser("gossip", help="full peers and hubs: lift gossip bans")
    gossub = gossip.add_subparsers(dest="gossip_cmd", metavar="ACTION", parser_class=_Parser)
    gossub.required = True
    unban = reader(gossub.add_parser("unban", help="lift the ban of gossip neighbours ('status' lists them)"))
    unban.add_argument("peer_ids", nargs="*", metavar="PEER_ID", help="full peer id(s), as status lists them")
    unban.add_argument("--all", action="store_true", help="lift every ban")
    unban.set_defaults(func=cmd_gossip_unban)

    notice = reader(sub.add_parser("notice", help="hub operators: post a notice to system/messages"))
    notice.add_argument("text", metavar="TEXT")
    notice.set_defaults(func=cmd_notice)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shiftpeer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "needs_node", True) or getattr(args, "needs_data", False):
            if not args.data:
                raise CliError(f"{args.command} needs --data DIR (the node directory)", EXIT_USAGE)
        if getattr(args, "check", None) is not None:
            args.check(args)  # a bad command line is exit 2 whether or not the node runs
        if getattr(args, "needs_node", True):
            status = args.func(ApiClient(args.data), args)
        else:
            status = args.func(args)
    except CliError as e:
        sys.stderr.write(f"shiftpeer: {e.message}\n")
        return e.status
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        # Ctrl-C: one line, not a traceback. The terminal echoed ^C without a line break.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + f"shiftpeer: {args.command} interrupted; "
                         "a request it had sent may still complete on the node (see 'shiftpeer status')\n")
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
