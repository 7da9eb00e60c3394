"""Camera source strings: which are live streams, what is wrong with a stream URL, and hiding the
passwords they carry before they reach a log or a message."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt")


def is_live(source: str) -> bool:
    """Whether a camera source is a live stream (RTSP and the like) rather than a file."""
    return source.split("://", 1)[0].lower() in LIVE_SCHEMES


def url_problem(source: str) -> str | None:
    """Why ``source`` is not a usable stream URL, or None (also None for file paths)."""
    if "://" not in source:
        return None
    scheme = source.split("://", 1)[0].lower()
    if scheme not in LIVE_SCHEMES:
        return f"unknown scheme '{scheme}' (use one of {', '.join(LIVE_SCHEMES)})"
    if any(char.isspace() for char in source):
        return "it contains a space"
    parts = urlsplit(source)
    if not parts.hostname:
        return "no host"
    try:
        parts.port  # noqa: B018  (raises on a port that is not a number in 0..65535)
    except ValueError:
        return "the port is not a number between 1 and 65535"
    if parts.port == 0:
        return "the port is not a number between 1 and 65535"
    return None


URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+):[^\s/]*@")
QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd|pass|token|key|secret|auth)=)[^&#\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` (as ``user:***@``) and of secret
    query parameters (``?password=***``) in ``text``."""
    return QUERY_SECRET.sub(r"\1***", URL_PASSWORD.sub(r"\1:***@", text))
