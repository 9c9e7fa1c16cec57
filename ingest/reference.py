"""Segments sent by reference: a JSON message {"uri": ...} pointing at file:// or http(s)://.

Used for segments larger than the broker's message limit. Whoever can publish to the
segments topic chooses the URI, so a reference is hostile input like any other:

- `parse_reference` and `fetch` raise only IngestError subclasses for bad input.
- file:// is off unless `file_root` is set, and then confined to it (symlinks resolved,
  regular files only).
- http(s):// goes only to public (globally routable) addresses unless a network is
  allow-listed; every address a name resolves to is checked, the connection goes to
  the checked address (no second lookup a rebinding DNS server could answer
  differently), and every redirect hop is checked again. Only http and https.
- One deadline for the whole fetch (connect, headers, body): a server that drips a
  byte at a time is cut off when it passes, not when a read stalls.
- Failures say "could not fetch <redacted URI>" and nothing about why: a publisher must
  not learn which hosts and ports answer (the reason is logged for the operator).
  URIs are redacted everywhere (no user:password@, no query string, no fragment).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import os
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from pathlib import Path

from pydantic import Field, field_validator

from ingest.config import StrictModel
from ingest.types import IngestError, LimitExceeded

log = logging.getLogger(__name__)

SCHEMES = ("file", "http", "https")
MAX_MESSAGE_BYTES = 64 * 1024
"""A reference message is a small JSON object; anything larger is refused unread."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ReferenceConfig(StrictModel):
    enabled: bool = Field(
        True, description='Accept JSON reference messages ({"uri": ...}) on the segments topic.'
    )
    allow_file: bool = Field(
        True,
        description="Accept file:// references inside file_root. file:// stays refused while "
        "file_root is empty, whatever this says; false refuses it even with a file_root.",
    )
    file_root: str | None = Field(
        None,
        description="Directory file:// references must point inside; empty refuses every "
        "file:// reference (the default: publishers must not make the daemon read local "
        "files).",
    )
    http_timeout_s: float = Field(
        20.0,
        gt=0,
        le=600,
        description="Deadline for a whole http(s) fetch: name lookup, connect, headers and "
        "body together (not per read).",
    )
    http_allow_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR, e.g. 10.20.0.0/16 or 127.0.0.1/32) http(s) references "
        "may reach besides public addresses. Loopback, private, link-local, multicast and "
        "reserved addresses are refused unless listed here.",
    )
    http_max_redirects: int = Field(
        3,
        ge=0,
        le=10,
        description="Redirects followed per fetch; each hop is checked like the first URI "
        "(http or https, allowed address). 0 refuses every redirect.",
    )

    @field_validator("http_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{net!r} is not a network in CIDR notation (e.g. 10.0.0.0/8): {exc}"
                ) from None
        return value


class BadReference(IngestError):
    reason = "bad_reference"


class UnsupportedReference(BadReference):
    reason = "unsupported_reference"


def redact(uri: str) -> str:
    """`uri` without userinfo, query string and fragment (safe for logs and dead letters)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URI>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def parse_reference(value: bytes) -> str | None:
    """The URI if `value` is a JSON reference message, else None (the value is segment bytes).

    A value starting with "{" is a reference attempt (no supported container starts with
    that byte): when it is not a well-formed reference, BadReference says why.
    """
    if value[:1] != b"{":
        return None
    if len(value) > MAX_MESSAGE_BYTES:
        raise BadReference(
            f"a reference message is at most {MAX_MESSAGE_BYTES} bytes, got {len(value)}; "
            'send {"uri": "..."} only'
        )
    try:
        obj = json.loads(value)
    except RecursionError:
        raise BadReference("the reference message is nested too deeply to be JSON") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadReference(f"the reference message is not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or "uri" not in obj:
        raise BadReference('a reference message is a JSON object {"uri": "..."}')
    uri = obj["uri"]
    if not isinstance(uri, str) or not uri or len(uri) > 8192:
        raise BadReference('a reference message needs {"uri": "<file:// or http(s):// URI>"}')
    return uri


def fetch(uri: str, *, max_bytes: int, config: ReferenceConfig, source: str = "") -> bytes:
    """Read the bytes a reference points at, refusing more than `max_bytes`.

    Raises only IngestError subclasses: UnsupportedReference for a scheme or feature
    that is off, BadReference when the URI cannot be read, LimitExceeded when too big.
    """
    if not config.enabled:
        raise UnsupportedReference(
            "reference messages are disabled (ingest.references.enabled=false)", source=source
        )
    try:
        scheme = urllib.parse.urlsplit(uri).scheme.lower()
    except ValueError:
        raise BadReference("the reference URI cannot be parsed", source=source) from None
    if scheme not in SCHEMES:
        raise UnsupportedReference(
            f"unsupported reference scheme {scheme[:20] or '(none)'!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES),
            source=source,
        )
    if scheme == "file":
        return _read_file(uri, max_bytes, config, source)
    return fetch_http(uri, max_bytes=max_bytes, config=config, source=source)


def _read_file(uri: str, max_bytes: int, config: ReferenceConfig, source: str) -> bytes:
    if not config.allow_file or config.file_root is None:
        raise UnsupportedReference(
            "file:// references are off: set ingest.references.file_root to the directory "
            "publishers may point into",
            source=source,
        )
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise BadReference("a file:// URI must not name a host", source=source)
    root = Path(config.file_root).resolve()
    path = Path(urllib.parse.unquote(parts.path)).resolve()
    if not path.is_relative_to(root):
        raise BadReference(
            f"file:// references must point inside ingest.references.file_root={root}",
            source=source,
        )
    shown = f"file://{path}"
    try:
        # O_NONBLOCK: opening a FIFO someone left there must not block the worker.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise BadReference(f"cannot read {shown}", source=source) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadReference(f"{shown} is not a regular file", source=source)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError:
        raise BadReference(f"cannot read {shown}", source=source) from None
    finally:
        os.close(fd)
    return _check_size(len(data), max_bytes, shown, source, data)


# --- http(s) ---------------------------------------------------------------------------


class _Refused(Exception):
    """Why one fetch failed; logged for the operator, never shown to the publisher."""


def address_allowed(addr: IPAddress, allow: list[IPNetwork]) -> bool:
    """Global unicast addresses, and any address inside an allow-listed network."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr in net for net in allow):
        return True
    return addr.is_global and not addr.is_multicast and not addr.is_reserved


def _resolve(host: str, port: int, deadline: float) -> list[tuple[int, str]]:
    """(family, address) of every address `host` resolves to, within the deadline."""
    result: list[tuple[int, str]] = []
    error: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.extend((int(f), str(sa[0])) for f, _, _, _, sa in infos)
        except OSError as exc:
            error.append(exc)

    # getaddrinfo has no timeout of its own: a thread bounded by the deadline.
    worker = threading.Thread(target=lookup, name="vqmon-resolve", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        raise _Refused(f"name lookup of {host} passed the deadline")
    if error or not result:
        raise _Refused(f"name lookup of {host} failed: {error[0] if error else 'no address'}")
    return result


def _connect(host: str, port: int, allow: list[IPNetwork], deadline: float) -> socket.socket:
    addresses = _resolve(host, port, deadline)
    for _, address in addresses:
        if not address_allowed(ipaddress.ip_address(address.split("%", 1)[0]), allow):
            raise _Refused(
                f"{host} resolves to {address}, which is not a public address and not in "
                "ingest.references.http_allow_networks"
            )
    last: OSError | None = None
    for family, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(remaining)
        try:
            sock.connect((address, port))
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise _Refused(f"connecting to {host}:{port} failed: {last or 'deadline passed'}")


class _Connection(http.client.HTTPConnection):
    """Connects to a checked address only, whatever a second lookup would say."""

    def __init__(self, host: str, port: int, allow: list[IPNetwork], deadline: float) -> None:
        super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()))
        self._allow, self._deadline = allow, deadline

    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, self._allow, self._deadline)


class _TLSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, allow: list[IPNetwork], deadline: float) -> None:
        super().__init__(
            host,
            port,
            timeout=max(0.001, deadline - time.monotonic()),
            context=ssl.create_default_context(),
        )
        self._allow, self._deadline = allow, deadline

    def connect(self) -> None:
        # Set before the handshake so the deadline's shutdown reaches a dripping handshake.
        self.sock = sock = _connect(self.host, self.port, self._allow, self._deadline)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_http(uri: str, *, max_bytes: int, config: ReferenceConfig, source: str = "") -> bytes:
    """GET an http(s) URI under the reference policy; raise BadReference or LimitExceeded."""
    shown = redact(uri)
    deadline = time.monotonic() + config.http_timeout_s
    allow = [ipaddress.ip_network(n, strict=False) for n in config.http_allow_networks]
    try:
        return _get(uri, max_bytes, config, allow, deadline, shown, source)
    except LimitExceeded:
        raise
    except (_Refused, OSError, http.client.HTTPException, ValueError) as exc:
        log.warning("reference fetch failed", extra={"uri": shown, "why": str(exc)[:300]})
        raise BadReference(
            f"could not fetch {shown} (the daemon's log has the cause)", source=source
        ) from None


def _get(
    uri: str,
    max_bytes: int,
    config: ReferenceConfig,
    allow: list[IPNetwork],
    deadline: float,
    shown: str,
    source: str,
) -> bytes:
    for _hop in range(config.http_max_redirects + 1):
        parts = urllib.parse.urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise _Refused(f"{redact(uri)}: only http(s) URIs with a host are fetched")
        port = parts.port or (443 if scheme == "https" else 80)
        kind = _TLSConnection if scheme == "https" else _Connection
        conn = kind(parts.hostname, port, allow, deadline)
        # The whole exchange is bounded: at the deadline the socket is shut down, which
        # ends any read in progress, however slowly the server drips.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shutdown, (conn,))
        timer.daemon = True
        timer.start()
        try:
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            conn.request("GET", target, headers={"User-Agent": "vqmon", "Accept": "*/*"})
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise _Refused(f"{redact(uri)}: redirect without a Location")
                uri = urllib.parse.urljoin(uri, location)
                continue
            if response.status != 200:
                raise _Refused(f"{redact(uri)} answered {response.status}")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                _check_size(int(length), max_bytes, shown, source)
            data = _read_body(response, max_bytes, deadline)
            if time.monotonic() > deadline:
                raise _Refused(f"{redact(uri)}: deadline of {config.http_timeout_s}s passed")
            return _check_size(len(data), max_bytes, shown, source, data)
        finally:
            timer.cancel()
            conn.close()
    raise _Refused(f"more than {config.http_max_redirects} redirects")


def _shutdown(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_body(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise _Refused("deadline passed while reading the body")
        chunk = response.read1(min(1 << 16, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _check_size(size: int, max_bytes: int, shown: str, source: str, data: bytes = b"") -> bytes:
    if size > max_bytes:
        raise LimitExceeded(
            f"{shown} holds more than decode.limits.max_bytes={max_bytes} bytes; "
            "cut the segment shorter or raise the limit",
            source=source,
        )
    return data
