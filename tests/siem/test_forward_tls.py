"""Forwarding over TLS (``tls://``): the certificate is checked against the given CA, and delivery is confirmed
the same way as over TCP (a TLS 1.3 server's session tickets are the only bytes it sends, and are not EOF)."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.audit.siem_forward import Destination, Forwarder
from broker.db import make_session_factory
from tests.fixtures.broker import Plant
from tests.siem.test_forward_semantics import seqs


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TLSCollector:
    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    while select.select([conn], [], [], 0.5)[0] or conn.pending():
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        self.received += chunk
            except (ssl.SSLError, OSError):
                continue  # a client that refused our certificate

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[TLSCollector, Path]]:
    cert, key = self_signed(tmp_path, "collector")
    running = TLSCollector(cert, key)
    try:
        yield running, cert
    finally:
        running.close()


def test_forwarding_over_tls_checks_the_certificate_and_delivers(
    plant: Plant, collector: tuple[TLSCollector, Path], tmp_path: Path
) -> None:
    server, ca_file = collector
    destination = Destination.parse(f"tls://127.0.0.1:{server.port}")

    def forwarder(ca: Path) -> Forwarder:
        return Forwarder(session_factory=make_session_factory(plant.engine), destination=destination,
                         clock=plant.clock, ssl_context=destination.ssl_context(ca), batch_size=5,
                         ack_timeout=3.0, connect_timeout=2.0)

    stranger, _ = self_signed(tmp_path, "stranger")
    refused = forwarder(stranger)
    with pytest.raises(ssl.SSLCertVerificationError):
        refused.step()  # a collector we were not told to trust gets nothing
    assert refused.cursor() == 0
    refused.release()

    sender = forwarder(ca_file)
    assert sender.drain() == plant.last_seq()
    plant.add_site("over-tls")
    assert sender.drain() == 1
    server.close()
    assert seqs(bytes(server.received)) == list(range(1, plant.last_seq() + 1))
