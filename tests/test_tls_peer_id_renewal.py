"""A hub whose certificate is renewed with a new key: at its next start the node says its TLS peer id
changed (users who pinned the old one with --hub-id must pin the new one) and config.json's tls_peer_id
holds the id it now presents, which a user pinning it reaches (real certificates, real TLS on 127.0.0.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest_twisted

from shiftpeer.cli import print_status
from shiftpeer.identity.certs import CertMaterial
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.nodedir import init_node_dir
from tests.helpers_node import eventually, listening_port
from tests.test_gossip_bans import logged  # noqa: F401  (a fixture)
from tests.test_peer_errors import LISTEN, _start, nodes  # noqa: F401  (nodes is a fixture)

CHANGED = "the TLS key changed"


def _renewed_pair(tmp_path: Path) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two certificates for 127.0.0.1 from one CA (scripts/make-certs), each with its own new key."""
    out, pairs = tmp_path / "certs", []
    for n, extra in enumerate(([], ["--force"])):
        assert make_certs([str(out), "--host", "127.0.0.1", "--new-ca", *extra]) == 0
        kept = (str(tmp_path / f"hub{n}.pem"), str(tmp_path / f"hub{n}.key"))
        shutil.copy(out / "127.0.0.1.pem", kept[0])
        shutil.copy(out / "127.0.0.1.key", kept[1])
        pairs.append(kept)
    return pairs[0], pairs[1]


def _stored(path: str) -> str:
    return json.loads((Path(path) / "config.json").read_text())["tls_peer_id"]


async def _port(hub) -> int:
    listener = next(s for s in hub.getServiceNamed("sync") if s.name.startswith("listen"))
    return (await listening_port(listener)).getHost().port


@pytest_twisted.ensureDeferred
async def test_a_certificate_renewed_with_a_new_key_updates_the_recorded_peer_id(tmp_path, nodes, logged,  # noqa: F811
                                                                                 capsys):
    """The operator replaces DIR/tls/ with a certificate for a new key: the hub's start logs one line naming
    the old and the new id, config.json and status give the new id, a user pinning it reaches the hub, and
    the next start says nothing; `shiftpeer status` shows the id."""
    (cert_a, key_a), (cert_b, key_b) = _renewed_pair(tmp_path)
    old, new = CertMaterial.from_files(cert_a, key_a).peer_id, CertMaterial.from_files(cert_b, key_b).peer_id
    assert old != new
    path = init_node_dir(tmp_path / "hub", user="op", hub=True, tls_cert=cert_a, tls_key=key_a,
                         listen=[LISTEN]).path
    assert _stored(path) == old
    shutil.copy(cert_b, Path(path) / "tls" / "cert.pem")   # the renewal docs/operators.md describes
    shutil.copy(key_b, Path(path) / "tls" / "key.pem")
    mode_before = (Path(path) / "config.json").stat().st_mode

    hub = await _start(nodes, path)
    changed = [line for line in logged if CHANGED in line]
    assert changed == [f"{CHANGED}: peer id {old} -> {new}; users who pinned {old} with --hub-id must pin {new} "
                       "(config.json tls_peer_id updated)"]
    assert _stored(path) == new and hub.status()["tls_peer_id"] == new
    print_status(hub.status())
    assert f"tls id:    {new}\n" in capsys.readouterr().out
    assert (Path(path) / "config.json").stat().st_mode == mode_before
    assert not list(Path(path).glob("config.json.tmp"))

    alice = await _start(nodes, init_node_dir(tmp_path / "alice", user="alice", connect=f"127.0.0.1:{await _port(hub)}",
                                              hub_id=_stored(path)).path)
    await eventually(lambda: alice.role("flows").flows.link.connected, timeout=10)

    await hub.stopService()
    nodes.remove(hub)
    logged.clear()
    await _start(nodes, path)
    assert not [line for line in logged if CHANGED in line or "presents" in line] and _stored(path) == new


@pytest_twisted.ensureDeferred
async def test_a_run_with_another_certificate_says_so_and_keeps_the_recorded_id(tmp_path, nodes, logged):  # noqa: F811
    """`twistd shiftpeer --tls-cert B --tls-key B` on a hub made with A presents B for that run only: the
    start says pinned users are refused while it runs, and config.json keeps A's id."""
    from shiftpeer.node import Node

    (cert_a, key_a), (cert_b, key_b) = _renewed_pair(tmp_path)
    old, new = CertMaterial.from_files(cert_a, key_a).peer_id, CertMaterial.from_files(cert_b, key_b).peer_id
    path = init_node_dir(tmp_path / "hub", user="op", hub=True, tls_cert=cert_a, tls_key=key_a,
                         listen=[LISTEN]).path
    hub = Node.from_directory(path, {"tls_cert": cert_b, "tls_key": key_b})
    nodes.append(hub)
    hub.startService()
    await hub.when_ready()
    said = [line for line in logged if "presents" in line]
    assert len(said) == 1 and f"peer id {new}, not the directory's {old}" in said[0]
    assert f"users who pinned {old} with --hub-id are refused" in said[0]
    assert not [line for line in logged if CHANGED in line]
    assert _stored(path) == old and hub.status()["tls_peer_id"] == new
