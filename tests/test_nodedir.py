"""The node directory: init writes key, certificate and config; load reads them back."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from helpers_identity import make_pki
from shiftpeer.identity import NodeKey
from shiftpeer.identity.certs import CertMaterial, cert_pem, key_pem
from shiftpeer.nodedir import DEFAULT_API, NodeDirError, init_node_dir, load_node_dir


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_init_writes_a_private_key_and_config(tmp_path):
    """init makes a 0700 directory with a 0600 node key, its certificate and config.json, no store."""
    d = tmp_path / "alice"
    cfg = init_node_dir(d, user="alice", listen=["tcp:7471"], connect="hub.example:7471",
                        peers=["peer.example:7471"], full_peer=True)
    assert _mode(d) == 0o700 and _mode(d / "node.key") == 0o600
    assert (d / "node.pem").exists() and (d / "config.json").exists()
    assert not (d / "store").exists()
    assert cfg.account_id == NodeKey.load(d).account_id == cfg.tls_peer_id
    assert cfg.user == "alice" and cfg.roles == ["user", "full-peer"] and not cfg.hub and cfg.full_peer
    assert cfg.listen == ["tcp:7471"] and cfg.connect == "hub.example:7471"
    assert cfg.peers == ["peer.example:7471"] and cfg.api == DEFAULT_API
    assert cfg.store_path == str(d.absolute() / "store")
    doc = json.loads((d / "config.json").read_text())
    assert doc["account_id"] == cfg.account_id and doc["store"] == "store"


def test_load_reads_back(tmp_path):
    """load_node_dir returns the same config that init returned."""
    cfg = init_node_dir(tmp_path / "n", user="bob", full_peer=True, api="tcp:7480:interface=127.0.0.1")
    again = load_node_dir(tmp_path / "n")
    assert again == cfg and again.full_peer and again.api == "tcp:7480:interface=127.0.0.1"
    assert again.load_key().account_id == cfg.account_id
    assert isinstance(again.tls_material(), NodeKey)


def test_init_refuses_a_non_empty_directory(tmp_path):
    """init never overwrites: a non-empty directory (e.g. an existing node) is refused."""
    d = tmp_path / "n"
    first = init_node_dir(d, user="alice")
    with pytest.raises(NodeDirError, match="not empty"):
        init_node_dir(d, user="alice")
    assert load_node_dir(d).account_id == first.account_id


def test_init_accepts_an_empty_existing_directory(tmp_path):
    """An existing empty directory is fine (e.g. a freshly made volume)."""
    cfg = init_node_dir(tmp_path, user="alice")
    assert cfg.path == str(tmp_path.absolute())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"user": ""}, "user name"),
        ({"user": "a/b"}, "user name"),
        ({"user": "al", "connect": "nohostport"}, "HOST:PORT"),
        ({"user": "al", "peers": ["host:99999"]}, "HOST:PORT"),
        ({"user": "al", "listen": [""]}, "endpoint"),
        ({"user": "al", "hub": True, "tls_cert": "x.pem"}, "go together"),
    ],
)
def test_init_rejects_bad_arguments_before_writing(tmp_path, kwargs, match):
    """Bad arguments are refused with a clear message and nothing is written."""
    d = tmp_path / "n"
    with pytest.raises(NodeDirError, match=match):
        init_node_dir(d, **kwargs)
    assert not d.exists()


def test_hub_with_ed25519_tls_key_uses_it_as_node_key(tmp_path):
    """A hub given an Ed25519 TLS key uses it as its node key: account id == TLS peer id."""
    pki = make_pki(tmp_path, "hub.example")
    (tmp_path / "hub.pem").write_bytes(cert_pem(*pki.hub.chain))
    (tmp_path / "hub.key").write_bytes(key_pem(pki.hub.private_key))
    cfg = init_node_dir(tmp_path / "hub", user="hub", hub=True, tls_cert=tmp_path / "hub.pem",
                        tls_key=tmp_path / "hub.key", listen=["tcp:7471"])
    assert cfg.hub and cfg.roles == ["user", "hub"]
    assert cfg.account_id == cfg.tls_peer_id == pki.hub.peer_id
    assert _mode(Path(cfg.tls_key)) == 0o600
    material = load_node_dir(tmp_path / "hub").tls_material()
    assert isinstance(material, CertMaterial) and material.peer_id == cfg.account_id


def test_hub_with_ecdsa_tls_key_keeps_a_separate_node_key(tmp_path):
    """A hub with a non-Ed25519 certificate signs with its own node key; peers see the x-id."""
    pki = make_pki(tmp_path, "hub.example", kind="ecdsa")
    (tmp_path / "hub.pem").write_bytes(cert_pem(*pki.hub.chain))
    (tmp_path / "hub.key").write_bytes(key_pem(pki.hub.private_key))
    cfg = init_node_dir(tmp_path / "hub", user="hub", hub=True, tls_cert=tmp_path / "hub.pem",
                        tls_key=tmp_path / "hub.key", ca=pki.ca_path)
    assert cfg.tls_peer_id.startswith("x") and cfg.account_id != cfg.tls_peer_id
    assert Path(cfg.ca).read_bytes() == pki.ca_path.read_bytes()


def test_mismatched_tls_key_refused(tmp_path):
    """A TLS key that does not belong to the certificate is refused before anything is written."""
    pki = make_pki(tmp_path, "hub.example")
    (tmp_path / "hub.pem").write_bytes(cert_pem(*pki.hub.chain))
    (tmp_path / "hub.key").write_bytes(NodeKey.generate().private_pem())
    with pytest.raises(NodeDirError, match="does not belong"):
        init_node_dir(tmp_path / "hub", user="hub", hub=True, tls_cert=tmp_path / "hub.pem",
                      tls_key=tmp_path / "hub.key")
    assert not (tmp_path / "hub").exists()


def test_bad_ca_file_refused(tmp_path):
    """A --ca file that holds no certificate is refused."""
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(NodeDirError, match="--ca"):
        init_node_dir(tmp_path / "n", user="alice", ca=tmp_path / "ca.pem")


def test_load_errors_are_clear(tmp_path):
    """Loading a missing directory, a directory without config, bad JSON or a wrong key fails clearly."""
    with pytest.raises(NodeDirError, match="no such directory"):
        load_node_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NodeDirError, match="shiftpeer init"):
        load_node_dir(tmp_path / "empty")
    d = tmp_path / "n"
    init_node_dir(d, user="alice")
    cfg_text = (d / "config.json").read_text()
    (d / "config.json").write_text("{not json")
    with pytest.raises(NodeDirError, match="not JSON"):
        load_node_dir(d)
    doc = json.loads(cfg_text)
    del doc["roles"]
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(NodeDirError, match="roles"):
        load_node_dir(d)
    doc = json.loads(cfg_text)
    doc["account_id"] = NodeKey.generate().account_id
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(NodeDirError, match="node.key"):
        load_node_dir(d)
    (d / "config.json").write_text(cfg_text)
    (d / "node.key").unlink()
    with pytest.raises(NodeDirError, match="node key"):
        load_node_dir(d)


def test_make_certs_writes_usable_hub_material(tmp_path, capsys):
    """make-certs with the committed TEST CA writes ca.pem, NAME.pem, a 0600 NAME.key, and refuses to overwrite."""
    from shiftpeer.identity.makecerts import main

    root = Path(__file__).resolve().parent.parent / "certs"
    args = [str(tmp_path), "--host", "hub.test", "--ca-cert", str(root / "test-ca.pem"),
            "--ca-key", str(root / "test-ca.TEST-ONLY-NOT-SECRET.key")]
    assert main(args) == 0
    assert _mode(tmp_path / "hub.test.key") == 0o600
    assert (tmp_path / "ca.pem").read_bytes() == (root / "test-ca.pem").read_bytes()
    material = CertMaterial.from_files(tmp_path / "hub.test.pem", tmp_path / "hub.test.key")
    assert len(material.peer_id) == 52
    assert main(args) == 1
    assert main(args + ["--force"]) == 0
    assert main([str(tmp_path / "fresh"), "--host", "h.test", "--new-ca"]) == 0
    assert (tmp_path / "fresh" / "ca.key").exists()


@pytest.mark.parametrize("edit, words", [
    (lambda doc: {**doc, "version": 2}, "has config version 2; this shiftpeer reads version 1"),
    (lambda doc: {k: v for k, v in doc.items() if k != "version"}, "has config version None"),
    (lambda doc: [doc], "is not a JSON object"),
    (lambda doc: {**doc, "roles": "user"}, "field 'roles' has the wrong type"),
    (lambda doc: {**doc, "listen": "tcp:7000"}, "field 'listen' has the wrong type"),
    (lambda doc: {**doc, "hub_id": "bogus"}, "\"hub_id\" 'bogus' is not a peer id"),
    (lambda doc: {**doc, "hub_id": NodeKey.generate().account_id, "connect": None},
     "\"hub_id\" pins the hub this node connects to"),
])
def test_a_config_json_of_another_version_or_shape_is_refused_naming_it(tmp_path, edit, words):
    """A config.json from another shiftpeer version, or edited into the wrong shape, is refused with the
    file's path and what is wrong (the node, backup and restore all load it this way), not misread."""
    d = tmp_path / "n"
    init_node_dir(d, user="alice")
    cfg = d / "config.json"
    cfg.write_text(json.dumps(edit(json.loads(cfg.read_text()))))
    with pytest.raises(NodeDirError) as refused:
        load_node_dir(d)
    assert str(refused.value).startswith(f"{d.absolute() / 'config.json'}") and words in str(refused.value)


def test_a_node_key_others_can_read_is_warned_about(tmp_path):
    """node.key is the account: a mode that lets others read it loads, with a warning saying to chmod it."""
    from twisted.logger import globalLogPublisher

    d = tmp_path / "n"
    init_node_dir(d, user="alice")
    warnings: list[str] = []

    def observe(event: dict) -> None:
        if "readable by others" in event.get("log_format", ""):
            warnings.append(event["log_format"].format(**event))

    globalLogPublisher.addObserver(observe)
    try:
        load_node_dir(d)
        assert warnings == []
        os.chmod(d / "node.key", 0o644)
        load_node_dir(d)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert warnings == [f"{d.absolute()}/node.key is readable by others (mode 0o644); chmod 600 it"]
