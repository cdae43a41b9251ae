"""make-certs: hub certificates for tests and demos, signed by a (test) CA.

    python -m shiftpeer.identity.makecerts OUTDIR --host NAME [--ca-cert F --ca-key F | --new-ca]

writes OUTDIR/ca.pem (the CA certificate to give users as --ca), OUTDIR/NAME.pem (the hub
certificate) and OUTDIR/NAME.key (its key, mode 0600). scripts/make-certs runs this with the
committed TEST CA in certs/, which must never be trusted for anything real.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .certs import (
    CertificateError,
    cert_pem,
    generate_private_key,
    load_cert_chain,
    load_private_key,
    make_ca,
    make_hub_cert,
    write_key,
)
from .keys import KeyFileError, peer_id_of_public_key

TEST_CA_NAME = "shiftpeer TEST CA - NOT FOR REAL USE"


def make_test_ca(cert_path: Path, key_path: Path) -> None:
    """Generate the committed test CA (run once; its key is test material, not a secret)."""
    key, cert = make_ca(TEST_CA_NAME)
    write_key(key_path, key)
    cert_path.write_bytes(cert_pem(cert))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="make-certs",
        description="Make a hub certificate for tests and demos, signed by the TEST CA.",
    )
    p.add_argument("outdir", help="directory to write ca.pem, NAME.pem, NAME.key into")
    p.add_argument("--host", required=True, help="the hub's host name (or IP address)")
    p.add_argument("--key-type", choices=("ed25519", "ecdsa"), default="ed25519",
                   help="hub key type (ed25519: the hub's account id equals its TLS peer id)")
    p.add_argument("--ca-cert", help="CA certificate (PEM)")
    p.add_argument("--ca-key", help="CA private key (PEM)")
    p.add_argument("--new-ca", action="store_true",
                   help="make a fresh throwaway CA in OUTDIR instead (ca.pem, ca.key)")
    p.add_argument("--force", action="store_true", help="replace an existing NAME.key/NAME.pem")
    args = p.parse_args(argv)
    out = Path(args.outdir)
    host = args.host
    if not host or "/" in host or host.startswith("."):
        p.error(f"--host {host!r} is not a host name")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if args.new_ca:
            # One throwaway CA per OUTDIR: reuse it when it is already there.
            if (out / "ca.key").exists():
                ca_cert = load_cert_chain(out / "ca.pem")[0]
                ca_key = load_private_key(out / "ca.key")
            else:
                ca_key, ca_cert = make_ca(TEST_CA_NAME)
                write_key(out / "ca.key", ca_key)
        else:
            if not (args.ca_cert and args.ca_key):
                p.error("give --ca-cert and --ca-key, or --new-ca")
            ca_cert = load_cert_chain(args.ca_cert)[0]
            ca_key = load_private_key(args.ca_key)
        if peer_id_of_public_key(ca_key.public_key()) != peer_id_of_public_key(ca_cert.public_key()):
            raise CertificateError("the CA key does not belong to the CA certificate")
        pem, keyf = out / f"{host}.pem", out / f"{host}.key"
        if keyf.exists() or pem.exists():
            if not args.force:
                print(f"make-certs: {keyf} or {pem} exists; use --force to replace", file=sys.stderr)
                return 1
            keyf.unlink(missing_ok=True)
        key, cert = make_hub_cert(ca_key, ca_cert, host, generate_private_key(args.key_type))
        write_key(keyf, key)
        pem.write_bytes(cert_pem(cert))
        (out / "ca.pem").write_bytes(cert_pem(ca_cert))
    except (CertificateError, KeyFileError, OSError) as e:
        print(f"make-certs: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'ca.pem'}, {pem}, {keyf} (peer id {peer_id_of_public_key(key.public_key())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
