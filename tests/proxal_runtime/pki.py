"""Throwaway certificates for the TLS tests: a CA, a server and clients, as PEM files."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """PEM paths: `ca` signed the server and `client`; `rogue_ca` signed `rogue_client`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A one-day certificate: a CA when `issuer` is None (self-signed), else a leaf."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        purposes = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def make_pki(directory: Path) -> Pki:
    """Write ca, server (SANs localhost and 127.0.0.1), client, rogue-ca and rogue-client."""
    directory.mkdir(parents=True, exist_ok=True)
    leaves = {}
    for ca_name, leaf_names in (("ca", ("server", "client")), ("rogue-ca", ("rogue-client",))):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _certificate(f"proxal test {ca_name}", ca_key, None)
        _write(directory / ca_name, ca_cert, None)
        for leaf in leaf_names:
            key = ec.generate_private_key(ec.SECP256R1())
            sans: list[x509.GeneralName] = [
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]
            cert = _certificate(leaf, key, (ca_cert.subject, ca_key), sans)
            _write(directory / leaf, cert, key)
            leaves[leaf] = directory / leaf
    return Pki(
        ca=directory / "ca.crt",
        server_cert=leaves["server"].with_suffix(".crt"),
        server_key=leaves["server"].with_suffix(".key"),
        client_cert=leaves["client"].with_suffix(".crt"),
        client_key=leaves["client"].with_suffix(".key"),
        rogue_ca=directory / "rogue-ca.crt",
        rogue_client_cert=leaves["rogue-client"].with_suffix(".crt"),
        rogue_client_key=leaves["rogue-client"].with_suffix(".key"),
    )
