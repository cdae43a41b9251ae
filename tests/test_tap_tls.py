"""`twistd shiftpeer --hub --tls-cert --tls-key --ca` override the directory's config for the run, with
the checks `shiftpeer init` makes."""

from __future__ import annotations

import json
import os

import pytest
from twisted.python import usage

from shiftpeer.identity.certs import CertMaterial
from shiftpeer.identity.makecerts import main as make_certs
from shiftpeer.nodedir import init_node_dir
from shiftpeer.syncwiring import tls_material
from shiftpeer.tap import makeService
from test_cli import run, start_node, stop_node
from test_tap import parse


@pytest.fixture
def certs(tmp_path):
    """Two hub certificates for 127.0.0.1 from two test CAs: {"a": (cert, key, ca), "b": ...}."""
    out = {}
    for name in ("a", "b"):
        d = tmp_path / f"certs-{name}"
        assert make_certs([str(d), "--host", "127.0.0.1", "--new-ca"]) == 0
        out[name] = (str(d / "127.0.0.1.pem"), str(d / "127.0.0.1.key"), str(d / "ca.pem"))
    return out


def test_hub_flag_makes_the_run_a_hub(tmp_path):
    """--hub turns on the hub roles for this run of a directory made without it."""
    path = init_node_dir(tmp_path / "x1", user="op").path
    node = makeService(parse("--data", path, "--hub"))
    assert node.settings.hub is True
    assert [r.name for r in node.roles] == ["user", "flows", "hub", "federation"]


def test_a_hub_run_without_certificate_logs_a_warning(tmp_path, certs):
    """Starting a hub without a certificate warns in the log that user nodes will refuse it; a hub
    given one does not warn."""
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[str] = []
    observer = lambda event: seen.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        path = init_node_dir(tmp_path / "x1", user="op").path
        makeService(parse("--data", path, "--hub"))
        warned = [line for line in seen if "user nodes refuse" in line]
        seen.clear()
        makeService(parse("--data", path, "--hub", "--tls-cert", certs["a"][0], "--tls-key", certs["a"][1]))
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(warned) == 1 and "--tls-cert/--tls-key" in warned[0]
    assert not [line for line in seen if "user nodes refuse" in line]


def test_tls_flags_win_over_the_directorys_certificate(tmp_path, certs, monkeypatch):
    """A hub made with certificate A runs with certificate B and CA B given as flags (relative paths
    are made absolute)."""
    cert_a, key_a, ca_a = certs["a"]
    cert_b, key_b, ca_b = certs["b"]
    path = init_node_dir(tmp_path / "hub", user="op", hub=True, tls_cert=cert_a, tls_key=key_a, ca=ca_a).path
    monkeypatch.chdir(tmp_path)
    node = makeService(parse("--data", path, "--tls-cert", os.path.relpath(cert_b), "--tls-key", key_b,
                             "--ca", os.path.relpath(ca_b)))
    assert node.settings.tls_cert == cert_b and node.settings.tls_key == key_b and node.settings.ca == ca_b
    assert tls_material(node).peer_id == CertMaterial.from_files(cert_b, key_b).peer_id
    assert tls_material(node).peer_id != CertMaterial.from_files(cert_a, key_a).peer_id
    kept = makeService(parse("--data", path))   # without flags the directory's own stay
    assert kept.settings.tls_cert == os.path.join(path, "tls", "cert.pem")


@pytest.mark.parametrize("argv, words", [
    (("--tls-cert", "{cert_a}"), "--tls-cert and --tls-key go together"),
    (("--tls-key", "{key_a}"), "--tls-cert and --tls-key go together"),
    (("--tls-cert", "{cert_a}", "--tls-key", "{key_a}"), "--tls-cert/--tls-key are for hubs: add --hub"),
    (("--hub", "--tls-cert", "{cert_a}", "--tls-key", "{key_b}"), "hub TLS certificate/key"),
    (("--hub", "--tls-cert", "{missing}", "--tls-key", "{key_a}"), "hub TLS certificate/key"),
    (("--ca", "{key_a}"), "--ca:"),
    (("--ca", "{missing}"), "--ca:"),
])
def test_bad_tls_flags_are_refused_like_init(tmp_path, certs, argv, words):
    """Half a pair, a certificate on a non-hub, a key that does not match and a CA file without a
    certificate are refused with init's messages."""
    path = init_node_dir(tmp_path / "n", user="u").path
    values = {"cert_a": certs["a"][0], "key_a": certs["a"][1], "key_b": certs["b"][1],
              "missing": str(tmp_path / "missing.pem")}
    with pytest.raises(usage.UsageError, match=words):
        parse("--data", path, *(a.format(**values) for a in argv))


def test_real_twistd_accepts_hub_and_certificate_flags(tmp_path, certs, capsys):
    """`twistd -n shiftpeer --data x1 --hub --tls-cert ... --tls-key ...` runs the directory of a user
    node as a hub (no 'option --hub not recognized'; its status lists the hub role)."""
    cert, key, _ = certs["a"]
    path = str(tmp_path / "x1")
    assert run(capsys, "init", path, "--user", "op")[0] == 0
    proc = start_node(path, str(tmp_path / "x1.log"),
                      node_args=("--hub", "--tls-cert", cert, "--tls-key", key,
                                 "--listen", "tcp:0:interface=127.0.0.1"))
    try:
        status, out, err = run(capsys, "--data", path, "status", "--json")
        assert status == 0, err
        assert "hub" in json.loads(out)["roles"], (out, err)
    finally:
        stop_node(proc)
