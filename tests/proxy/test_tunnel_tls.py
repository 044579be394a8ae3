"""WebSocket (Upgrade) pass-through pinned to a colour, and the optional TLS listener."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from proxy_support import HOST, ProxyFactory, Recorder, closed_within, get, parse_replies, send_raw

from console.core.models import Colour

pytestmark = pytest.mark.integration

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


async def open_tunnel(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(UPGRADE + b"early")
    async with asyncio.timeout(2):
        head = await reader.readuntil(b"\r\n\r\n")
        assert await reader.readexactly(5) == b"early"  # bytes sent with the upgrade
    return reader, writer, head


async def test_websocket_pinned_to_its_colour_and_drained_after_a_switch(
    make_proxy: ProxyFactory,
) -> None:
    proxy = await make_proxy(ws_drain=0.3)
    reader, writer, head = await open_tunnel(proxy.port)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"X-BG-Env: blue" in head
    assert b"Upgrade: websocket" in head
    writer.write(b"ping")
    async with asyncio.timeout(2):
        assert await reader.readexactly(4) == b"ping"
    assert proxy.stats().upgraded == 1
    proxy.routes.set_live(Colour.GREEN)
    # Still open during the drain, then closed.
    writer.write(b"pong")
    async with asyncio.timeout(2):
        assert await reader.readexactly(4) == b"pong"
    assert await closed_within(reader, 2.0)
    for _ in range(50):  # the proxy's side of the tunnel ends a moment after the client's
        if proxy.stats().upgraded == 0:
            break
        await asyncio.sleep(0.02)
    assert proxy.stats().upgraded == 0
    writer.close()
    _reader, writer, head = await open_tunnel(proxy.port)
    assert b"X-BG-Env: green" in head
    writer.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bgconsole test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_listener_with_a_self_signed_certificate(
    make_proxy: ProxyFactory, upstreams: tuple[Recorder, Recorder], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    proxy = await make_proxy(tls_cert=str(cert), tls_key=str(key))
    client = ssl.create_default_context(cafile=str(cert))
    replies = parse_replies(await send_raw(proxy.port, get("/secure"), tls=client))
    assert replies[0].status == 200
    assert upstreams[0].requests[0].header("x-forwarded-proto") == "https"
    # Plain HTTP on the TLS port is not served.
    assert parse_replies(await send_raw(proxy.port, get("/plain"), wait=1.0)) == []
