"""Status and metrics on a hub-sized store: 20,000 logical databases, real LMDB, a real node and its API.

Status answers with totals and a bounded set of databases, never reading every database on the reactor
thread; a prefix query pages through the rest; the metrics carry no series per database.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from shiftpeer.api.token import METRICS_TOKEN_FILE, read_token
from shiftpeer.census import RECENT, TOP, own_databases
from shiftpeer.store import Store
from tests.helpers_node import ApiTestClient, eventually, listening_port, make_node, node_cli

N = 20_000
#: Every 1000th inbox holds documents (inbox/u19000 the most, 20); the other inboxes are empty.
FULL = {f"inbox/u{i:05d}": i // 1000 + 1 for i in range(0, N, 1000)}
#: At most this many databases are shown: the node's own, the largest and the recently changed.
BOUND = len(own_databases()) + TOP + RECENT


def make_store(path: str) -> int:
    """N inboxes in one write transaction, some with documents; returns the documents written."""
    store = Store(path, sync=False)
    try:
        with store.write_txn() as w:
            for i in range(N):
                db = store.create_database(f"inbox/u{i:05d}", txn=w)
                for j in range(FULL.get(db.name, 0)):
                    db.put(f"d{j}", {"n": j}, txn=w)
    finally:
        store.close()
    return sum(FULL.values())


@pytest.fixture
def hub_sized(tmp_path):
    """A running node (user roles, metrics on) whose store holds N inboxes; the first count finished."""
    directory = str(tmp_path / "n")
    docs = make_store(os.path.join(directory, "store"))
    node = make_node(directory, metrics="tcp:0:interface=127.0.0.1")
    node.startService()
    pytest_twisted.blockon(Deferred.fromCoroutine(eventually(lambda: node.census.as_of is not None, timeout=60)))
    yield node, docs
    pytest_twisted.blockon(node.stopService())


async def client_for(node) -> ApiTestClient:
    return ApiTestClient(await node.when_ready(), read_token(node.settings.directory))


@pytest_twisted.ensureDeferred
async def test_status_of_20000_databases_is_totals_and_a_bounded_few(hub_sized, monkeypatch):
    """With 20,000 inboxes, status counts them all (databases and documents) but lists only the node's
    own, the largest and the recently changed databases, and reads no other database to answer."""
    node, docs = hub_sized
    inbox = node.store.database("inbox/u00007")
    inbox.put("new", {"n": 1})                      # changed now: shown as recent
    c = await client_for(node)
    reads: list[str] = []
    real = node.store.database

    def database(name):
        reads.append(name)
        return real(name)

    monkeypatch.setattr(node.store, "database", database)
    monkeypatch.setattr(node.store, "list_databases", lambda prefix="": pytest.fail("status listed databases"))
    code, body = await c.request("GET", "/v1/status")
    monkeypatch.undo()

    assert code == 200
    totals = body["database_totals"]
    own = [d for d in own_databases() if node.store.has_database(d)]
    assert totals["count"] == N + len(own) and totals["docs"] == docs
    assert not totals["scanning"] and totals["shown"] == len(body["databases"]) <= BOUND
    assert len(reads) <= BOUND
    assert len(json.dumps(body)) < 20_000
    shown = body["databases"]
    assert {name for name, info in shown.items() if info["why"] == "own"} == set(own)
    largest = sorted(FULL, key=lambda n: -FULL[n])[:TOP]
    assert all(shown[name]["why"] == "largest" and shown[name]["docs"] == FULL[name] for name in largest[:5])
    assert shown["inbox/u00007"] == {"docs": 1, "seq": 1, "why": "recent"}
    assert not any(name.startswith("inbox/") and name not in FULL for name in shown if name != "inbox/u00007")


@pytest_twisted.ensureDeferred
async def test_databases_under_a_prefix_page_by_page(hub_sized):
    """?databases=PREFIX&limit=N lists the databases under PREFIX in name order with their counts, and
    ``after`` the ``next`` of a page gives the following one, down to the last page."""
    node, _ = hub_sized
    c = await client_for(node)
    code, body = await c.request("GET", "/v1/status?databases=inbox/u010&limit=4")
    page = body["database_page"]
    assert code == 200 and page["total"] == 100 and page["prefix"] == "inbox/u010"
    assert [r["name"] for r in page["rows"]] == [f"inbox/u0100{i}" for i in range(4)]
    assert page["rows"][0] == {"name": "inbox/u01000", "docs": FULL["inbox/u01000"], "seq": FULL["inbox/u01000"]}
    assert page["next"] == "inbox/u01003" and len(body["databases"]) <= BOUND

    seen = []
    after = None
    for _ in range(30):
        query = "/v1/status?databases=inbox/u019&limit=37" + (f"&after={after}" if after else "")
        code, body = await c.request("GET", query)
        assert code == 200
        seen += [r["name"] for r in body["database_page"]["rows"]]
        after = body["database_page"]["next"]
        if after is None:
            break
    assert seen == [f"inbox/u019{i:02d}" for i in range(100)]

    code, body = await c.request("GET", "/v1/status?databases=*&limit=3")
    page = body["database_page"]
    assert code == 200 and page["total"] == len(node.store.list_databases()) > N and page["prefix"] == ""
    assert [r["name"] for r in page["rows"]] == ["inbox/u00000", "inbox/u00001", "inbox/u00002"]

    for query, word in (("?limit=3", "databases=PREFIX"), ("?databases=inbox/&limit=0", "limit"),
                        ("?databases=inbox/&limit=x", "limit"), ("?database=inbox/", "unknown")):
        code, body = await c.request("GET", "/v1/status" + query)
        assert code == 400 and word in body["error"], (query, body)


@pytest_twisted.ensureDeferred
async def test_metrics_of_20000_databases_have_totals_and_few_series(hub_sized):
    """The metrics carry the number of databases and documents, and per-database series only for the
    node's own and the largest databases: not one per inbox."""
    node, docs = hub_sized
    port = await listening_port(node.getServiceNamed("metrics"))
    url = f"http://127.0.0.1:{port.getHost().port}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    token = read_token(node.settings.directory, METRICS_TOKEN_FILE)
    ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    text = await deferToThread(lambda: opener.open(ask, timeout=10).read().decode())
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = {name: float(v) for name, _, v in (line.rpartition(" ") for line in lines)}
    assert values["shiftpeer_databases"] == node.census.count >= N
    assert values["shiftpeer_documents"] >= docs
    per_db = [k for k in values if k.startswith("shiftpeer_database_docs{")]
    assert 0 < len(per_db) <= len(own_databases()) + TOP
    assert 'shiftpeer_database_docs{db="inbox/u19000"}' in values       # the largest
    assert len(text) < 20_000


@pytest_twisted.ensureDeferred
async def test_cli_status_prints_the_count_and_pages(hub_sized, capsys):
    """`shiftpeer status` says how many databases there are; --databases lists a page and the next;
    --json stays one JSON document."""
    node, _ = hub_sized
    await node.when_ready()
    d = node.settings.directory
    cli = node_cli(capsys, d)

    status, out = await deferToThread(cli, "status")
    assert status == 0
    assert f"databases: {node.census.count:,} holding" in out
    assert "'status --databases PREFIX' lists the others" in out
    status, out = await deferToThread(cli, "status", "--databases", "inbox/u0000", "--limit", "3")
    assert status == 0 and "databases under 'inbox/u0000': 10" in out
    assert "inbox/u00002" in out and "inbox/u00003" not in out and "--after inbox/u00002" in out
    every = len(node.store.list_databases())
    status, out = await deferToThread(cli, "status", "--databases", "*", "--limit", "1")
    assert status == 0 and f"databases (all): {every:,}" in out and "--databases '*' --after inbox/u00000" in out
    status, err = await deferToThread(cli, "status", "--databases", "")
    assert status == 2 and "'*' lists every database" in err
    status, out = await deferToThread(cli, "status", "--json", "--databases", "inbox/", "--limit", "2")
    body = json.loads(out)
    assert status == 0 and body["database_page"]["total"] == N and len(body["database_page"]["rows"]) == 2


@pytest_twisted.ensureDeferred
async def test_count_runs_again_on_housekeeping_and_stop_waits_for_it(tmp_path):
    """A later housekeeping tick counts again once the interval passed (new databases show in the
    totals), and stopping the node while a count runs waits for it before the store closes."""
    node = make_node(str(tmp_path / "n"))
    node.census.min_interval = node.census.spacing = 0.0
    node.startService()
    try:
        await eventually(lambda: node.census.as_of is not None, timeout=20)
        before = node.census.count
        for i in range(5):
            node.store.create_database(f"group/g{i}")
        node.housekeeping_step()
        await eventually(lambda: node.census.count == before + 5, timeout=20)
        assert node.status()["database_totals"]["count"] == before + 5
        with node.store.write_txn() as w:
            for i in range(N // 4):
                node.store.create_database(f"inbox/x{i}", txn=w)
        scan = node.census.refresh(force=True)
        assert scan is not None
    finally:
        await node.stopService()
    assert scan.called and node.store is None and not node.census.scanning



def test_cli_says_when_the_first_count_is_still_running(capsys):
    """While the first count runs, `shiftpeer status` shows the number of databases already listed and
    how far the document count got; before that, that it is counting."""
    from shiftpeer.cli import print_databases

    totals = {"count": 1_000_005, "docs": None, "as_of": None, "seconds": None, "scanning": True,
              "scanned": 12_000}
    print_databases({"time": 100.0, "databases": {}, "database_totals": totals})
    assert capsys.readouterr().out.startswith("databases: 1,000,005, counting their documents (12,000 read)")
    print_databases({"time": 100.0, "databases": {}, "database_totals": dict(totals, count=None, scanned=0)})
    assert capsys.readouterr().out == "databases: counting...\n"
