"""Certificates for a test cluster: the stack's CAs as components/tokens.py makes them with
pulumi-tls (ECDSA P-256, self-signed, CN `<cluster>-<ca>`, the key as an `EC PRIVATE KEY`), and the
leaf certificates k3s issues from them (pkg/daemons/control/deps/deps.go: the API server's serving
certificate from server-ca, client certificates from client-ca, etcd's from etcd/server-ca)."""

from __future__ import annotations

import datetime
import functools
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flakefleet.plan.specs import K3S_CAS

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, PEM."""

    cert: str
    key: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca(cn: str) -> Pair:
    """A CA as pulumi-tls' SelfSignedCert makes it (is_ca_certificate, cert_signing, SKID)."""
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - DAY).not_valid_after(now + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                         content_commitment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def leaf(issuer: Pair, cn: str, orgs: tuple[str, ...] = (), *, client: bool = True, server: bool = False,
         names: tuple[str, ...] = ()) -> Pair:
    """A certificate `issuer` signs: a client (CN user, O groups), a server (SANs `names`), or both."""
    ca_key = serialization.load_pem_private_key(issuer.key.encode(), None)
    ca_cert = x509.load_pem_x509_certificate(issuer.cert.encode())
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] * client + [ExtendedKeyUsageOID.SERVER_AUTH] * server
    builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - DAY).not_valid_after(now + 365 * DAY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False,
                                            content_commitment=False, data_encipherment=False, key_agreement=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    if names:
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key))


def stack_cas(cluster: str) -> dict[str, Pair]:
    """The stack's five k3s CAs (K3S_CAS: server-ca, client-ca, request-header-ca, etcd/...)."""
    return {name: ca(f"{cluster}-{name.replace('/', '-')}") for name in K3S_CAS}


@functools.cache
def fleet_cas() -> dict[str, Pair]:
    """The stack CAs every test fleet of this process uses (tests/local_fleet.py's TEST_CAS):
    made once, real, so the real API serves from them."""
    return stack_cas("ff-local")


def as_environment(cas: dict[str, Pair]) -> dict[str, str]:
    """The CAs as the delivery runner's environment carries them (K3S_CAS' variable names)."""
    return {env: (pair.cert, pair.key)[i] for name, pair in cas.items() for i, env in enumerate(K3S_CAS[name])}
