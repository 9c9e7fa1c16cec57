"""Segments sent by reference: a JSON message {"uri": ...} pointing at file:// or http(s)://.

Used for segments larger than the broker's message limit. Reading is bounded in size
and time; any failure is an IngestError with a stable reason code.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pydantic import Field

from ingest.config import StrictModel
from ingest.types import IngestError

SCHEMES = ("file", "http", "https")


class ReferenceConfig(StrictModel):
    enabled: bool = Field(
        True, description='Accept JSON reference messages ({"uri": ...}) on the segments topic.'
    )
    allow_file: bool = Field(
        True,
        description="Accept file:// references (the daemon reads local paths; turn off when "
        "publishers must not make it read arbitrary files).",
    )
    file_root: str | None = Field(
        None, description="If set, file:// references must point inside this directory."
    )
    http_timeout_s: float = Field(
        20.0, gt=0, le=600, description="Timeout for connecting to and reading an http(s) URI."
    )


class BadReference(IngestError):
    reason = "bad_reference"


class UnsupportedReference(BadReference):
    reason = "unsupported_reference"


def parse_reference(value: bytes) -> str | None:
    """The URI if `value` is a JSON reference message, else None (the value is segment bytes)."""
    head = value[:1]
    if head != b"{" or len(value) > 64 * 1024:
        return None
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or "uri" not in obj:
        return None
    uri = obj["uri"]
    if not isinstance(uri, str) or not uri:
        raise BadReference('a reference message needs {"uri": "<file:// or http(s):// URI>"}')
    return uri


def fetch(uri: str, *, max_bytes: int, config: ReferenceConfig, source: str = "") -> bytes:
    """Read the bytes a reference points at, refusing more than `max_bytes`."""
    if not config.enabled:
        raise UnsupportedReference(
            "reference messages are disabled (ingest.references.enabled=false)", source=source
        )
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme not in SCHEMES:
        raise UnsupportedReference(
            f"unsupported reference scheme {scheme or '(none)'!r} in {uri!r}; use one of "
            + ", ".join(f"{s}://" for s in SCHEMES),
            source=source,
        )
    if scheme == "file":
        return _read_file(uri, max_bytes, config, source)
    return _read_http(uri, max_bytes, config, source)


def _read_file(uri: str, max_bytes: int, config: ReferenceConfig, source: str) -> bytes:
    if not config.allow_file:
        raise UnsupportedReference(
            "file:// references are disabled (ingest.references.allow_file=false)", source=source
        )
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise BadReference(f"file:// URI with a remote host {parts.netloc!r}", source=source)
    path = Path(urllib.parse.unquote(parts.path)).resolve()
    if config.file_root is not None:
        root = Path(config.file_root).resolve()
        if not path.is_relative_to(root):
            raise BadReference(
                f"{path} is outside ingest.references.file_root={root}", source=source
            )
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BadReference(f"cannot read {path}: {exc.strerror}", source=source) from exc
    return _check_size(data, max_bytes, uri, source)


def _read_http(uri: str, max_bytes: int, config: ReferenceConfig, source: str) -> bytes:
    request = urllib.request.Request(uri, headers={"User-Agent": "vqmon"})
    try:
        with urllib.request.urlopen(request, timeout=config.http_timeout_s) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                _check_size(b"", max_bytes, uri, source, declared=int(length))
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise BadReference(f"GET {uri} answered {exc.code} {exc.reason}", source=source) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BadReference(f"GET {uri} failed: {exc}", source=source) from exc
    return _check_size(data, max_bytes, uri, source)


def _check_size(
    data: bytes, max_bytes: int, uri: str, source: str, declared: int | None = None
) -> bytes:
    size = declared if declared is not None else len(data)
    if size > max_bytes:
        from ingest.types import LimitExceeded

        raise LimitExceeded(
            f"{uri} holds more than decode.limits.max_bytes={max_bytes} bytes; "
            "cut the segment shorter or raise the limit",
            source=source,
        )
    return data
