"""The connection options of Stream.open: token auth, max_payload and TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import jetkit as jk
from conftest import ExternalServer, wait_until


@pytest.mark.slow
async def test_a_store_opened_with_a_token_admits_only_clients_that_give_it(
    tmp_path: Path, topic: str
) -> None:
    store = tmp_path / "store"
    async with jk.Stream.open(store_dir=store, token="secret") as s:
        assert s.embedded and s.connect_info()["token"] == "secret"
        url = s.server_url
        assert url is not None
        with pytest.raises(jk.ConnectionError, match=r"(?i)authorization"):
            await jk.Stream.open(servers=[url], token="wrong", connect_timeout=2)
        with pytest.raises(jk.ConnectionError, match=r"(?i)authorization"):
            await jk.Stream.open(servers=[url], connect_timeout=2)
        got: list[bytes] = []

        async def handler(data: bytes) -> None:
            got.append(data)

        await s.subscribe(topic, handler)
        async with jk.Stream.open(servers=[url], token="secret") as other:
            await other.publish(topic, b"with the token")
            await wait_until(lambda: got == [b"with the token"])
        async with jk.Stream.open(store_dir=store, token="secret") as attached:
            assert not attached.embedded  # the same store, reached with the same token
            await attached.healthy()


@pytest.mark.slow
async def test_max_payload_is_the_servers_limit(tmp_path: Path, topic: str) -> None:
    async with jk.Stream.open(store_dir=tmp_path / "store", max_payload=4096) as s:
        assert s.max_payload == 4096
        with pytest.raises(jk.PayloadTooLargeError, match="max_payload"):
            await s.publish(topic, b"x" * 5000)
        got: list[bytes] = []

        async def handler(data: bytes) -> None:
            got.append(data)

        await s.subscribe(topic, handler)
        await s.publish(topic, b"y" * 4000)  # under the limit, and the connection survived
        await wait_until(lambda: got == [b"y" * 4000])


async def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1: with ``cryptography`` if installed, else with
    the ``openssl`` command; skips the test when neither is there."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("a TLS test needs the cryptography package or the openssl command")
        proc = await asyncio.create_subprocess_exec(
            openssl,
            *("req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[ExternalServer, Path]]:
    """An external nats-server that requires TLS, and its self-signed certificate."""
    cert, key = await self_signed(tmp_path)
    server = ExternalServer(
        tmp_path / "external",
        extra=["--tls", "--tlscert", str(cert), "--tlskey", str(key)],
        scheme="tls",
    )
    await server.start()
    yield server, cert
    await server.stop()


@pytest.mark.slow
async def test_a_stream_over_tls_publishes_and_consumes_with_a_trusted_certificate(
    tls_server: tuple[ExternalServer, Path], topic: str
) -> None:
    server, cert = tls_server
    context = ssl.create_default_context(cafile=str(cert))
    async with jk.Stream.open(
        servers=[server.url], tls=context, default_mode=jk.TopicMode.JETSTREAM
    ) as s:
        assert s.connect_info()["tls"] is context
        got: list[bytes] = []

        async def handler(data: bytes) -> None:
            got.append(data)

        await s.subscribe(topic, handler, durable="tls", ack=jk.AckPolicy.MANUAL)
        ack = await s.publish(topic, b"over tls")
        assert ack is not None and ack.seq == 1
        await wait_until(lambda: got == [b"over tls"])
        await s.healthy()


@pytest.mark.slow
async def test_an_untrusted_server_certificate_is_a_connection_error(
    tls_server: tuple[ExternalServer, Path],
) -> None:
    server, _ = tls_server
    # no context: the system's CAs do not trust the self-signed certificate
    with pytest.raises(jk.ConnectionError, match="cannot connect"):
        await asyncio.wait_for(jk.Stream.open(servers=[server.url], connect_timeout=1), 3)
