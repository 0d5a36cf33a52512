"""An HTTPS-intercepting proxy for tests: clients that reach fixed public hosts (the `ddgs` search engines)
are pointed at it with a proxy setting and a CA file, and it answers in place of those hosts.

It accepts `CONNECT host:443`, finishes TLS with a certificate for that host signed by a throwaway CA made
at start (`ca_path`: give it to the client as its CA bundle, so certificates are still verified), reads one
HTTP/1.1 request and answers with `handler(host, request_line, body) -> (status, content_type, body)`.
Requests seen are kept in `seen` as (host, request line, body).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Handler = Callable[[str, str, bytes], tuple[int, str, bytes]]


def _write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class TlsInterceptingProxy:
    def __init__(self, directory: Path, hosts: list[str], handler: Handler) -> None:
        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Parley test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(valid[0]).not_valid_after(valid[1])
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(valid[0]).not_valid_after(valid[1])
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.ca_path = _write_pem(directory / "proxy-ca.pem", ca.public_bytes(pem))
        cert = _write_pem(directory / "proxy-leaf.pem", leaf.public_bytes(pem))
        secret = _write_pem(directory / "proxy-leaf.key", key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(cert, secret)
        self._tls.set_alpn_protocols(["http/1.1"])
        self._handler = handler
        self.seen: list[tuple[str, str, bytes]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            connect = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[0]
            method, target, _ = connect.split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            host = target.rsplit(":", 1)[0]
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self._tls)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            length = next((int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")),
                          0)
            body = await reader.readexactly(length) if length else b""
            self.seen.append((host, head[0], body))
            status, content_type, answer = self._handler(host, head[0], body)
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {len(answer)}\r\n"
                         "connection: close\r\n\r\n".encode() + answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
