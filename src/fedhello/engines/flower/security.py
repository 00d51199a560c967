"""TLS and SuperNode-authentication material for a Flower deployment, and the loopback rule.

`generate(folder, nodes, hosts)` writes, with `cryptography`:

- `ca.crt` (+ `ca.key`): a private CA; SuperNodes (`--root-certificates`), `flwr` (`root-certificates` in
  config.toml) and the SuperLink (`--ssl-ca-certfile`) trust it;
- `server.crt`, `server.key`: the SuperLink's certificate for 127.0.0.1, localhost, ::1 and `hosts`;
- `node-i`, `node-i.pub` (i < nodes): a SuperNode's EC P-384 key pair in the OpenSSH format Flower 1.42
  reads (`flower-supernode --auth-supernode-private-key node-i`, `flwr supernode register node-i.pub`).

`require_tls_off_loopback` is the one place that decides whether a SuperLink address may go without TLS.
From a shell (scripts/deploy-local.sh):

    python -m fedhello.engines.flower.security generate OUTDIR [--nodes K] [--host HOST ...]
    python -m fedhello.engines.flower.security check HOST_OR_ADDRESS
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedhello.errors import FedHelloError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's authentication key pair (OpenSSH files): the node signs with `private`, the SuperLink
    admits it once `public` is registered."""

    private: Path
    public: Path


@dataclass(frozen=True)
class Material:
    """The files of a TLS deployment: the CA everyone trusts, the SuperLink's certificate and key, and one
    key pair per authenticated SuperNode."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[NodeKey, ...] = ()


def generate(folder: Path, nodes: int = 0, hosts: Iterable[str] = (), days: int = 30) -> Material:
    """Write a CA, a server certificate for the loopback names plus `hosts`, and `nodes` node key pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedhello deployment CA")])
    ca = _certificate(ca_name, ca_name, ca_key.public_key(), ca_key, days)
    server_key = ec.generate_private_key(ec.SECP384R1())
    names = list(dict.fromkeys([*LOOPBACK_HOSTS, *hosts]))
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedhello SuperLink")])
    server = _certificate(server_name, ca_name, server_key.public_key(), ca_key, days, names)
    pem = serialization.Encoding.PEM
    _write(folder / "ca.key", _private_pem(ca_key), secret=True)
    return Material(
        ca_cert=_write(folder / "ca.crt", ca.public_bytes(pem)),
        server_cert=_write(folder / "server.crt", server.public_bytes(pem)),
        server_key=_write(folder / "server.key", _private_pem(server_key), secret=True),
        node_keys=tuple(generate_node_key(folder / f"node-{i}") for i in range(nodes)),
    )


def generate_node_key(private: Path) -> NodeKey:
    """Write an EC P-384 key pair as OpenSSH files `private` and `private.pub`."""
    key = ec.generate_private_key(ec.SECP384R1())
    openssh = serialization.PrivateFormat.OpenSSH
    _write(private, key.private_bytes(serialization.Encoding.PEM, openssh, serialization.NoEncryption()), secret=True)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return NodeKey(private, _write(private.with_name(private.name + ".pub"), line + b"\n"))


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP, IPv6 with or without brackets) is this machine's loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_host(address: str) -> str:
    """The host of `host`, `host:port`, `[v6]:port` or a bare IPv6 address."""
    if address.startswith("["):
        return address[1 : address.index("]")]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


def require_tls_off_loopback(address: str, tls: bool, fix: str = "set flower.tls=true") -> None:
    """Refuse plain HTTP (`--insecure`) to a SuperLink that is not on loopback, in one line naming `fix`."""
    if not tls and not is_loopback(address_host(address)):
        raise FedHelloError(
            f"SuperLink address '{address}' is not loopback: without TLS (--insecure) only "
            f"{', '.join(LOOPBACK_HOSTS)} are allowed (fix: {fix})"
        )


def _certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    days: int,
    hosts: Sequence[str] = (),
) -> x509.Certificate:
    """A CA certificate (no `hosts`) or a server certificate for `hosts`, signed by `signing_key`."""
    ca = not hosts
    now = datetime.now(UTC)
    usage = dict.fromkeys(
        ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only"], False
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, decipher_only=False, **usage),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, secret: bool = False) -> Path:
    path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`generate OUTDIR [--nodes K] [--host H ...]` or `check HOST_OR_ADDRESS`; errors as one line, exit 2."""
    parser = argparse.ArgumentParser(prog="python -m fedhello.engines.flower.security", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write CA, SuperLink certificate and SuperNode keys to OUTDIR")
    make.add_argument("outdir", type=Path)
    make.add_argument("--nodes", type=int, default=0, help="SuperNode key pairs node-0 .. node-(K-1)")
    make.add_argument("--host", action="append", default=[], help="another name or IP the SuperLink serves")
    check = commands.add_parser("check", help="exit 2 if HOST_OR_ADDRESS may not be used without TLS")
    check.add_argument("address")
    check.add_argument("--fix", default="pass --tls", help="the fix the error names")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            require_tls_off_loopback(args.address, tls=False, fix=args.fix)
        else:
            material = generate(args.outdir, args.nodes, args.host)
            print(f"TLS material in {args.outdir}: CA {material.ca_cert.name}, {len(material.node_keys)} node keys")
    except FedHelloError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
