"""Webhooks: tell a plan's ``callback_url`` that its job ended.

When a job finishes, fails for good or is canceled, the worker POSTs the job's summary (the
``status --json`` shape: ``job_id``, ``status``, ``stages`` with their outputs, ``error``,
``manifest``) as JSON to the plan's ``callback_url``. Delivery is best effort and bounded: a few
attempts with a timeout and a pause between them, all within one total ``deadline`` (a receiver
that trickles its answer a byte at a time is cut off there); a redirect is not followed (it counts
as a failed delivery). A webhook that fails never fails the job: :func:`notify` logs and returns
False.

Request headers::

    Content-Type:           application/json
    X-StableNew-Event:      job.finished | job.failed | job.canceled
    X-StableNew-Delivery:   a random id, the same on every attempt of one delivery (deduplicate on it)
    X-StableNew-Timestamp:  Unix time in whole seconds when this attempt was sent
    X-StableNew-Signature:  sha256=<hex>   (only when a secret is configured)

Signature scheme: with a secret (``STABLENEW_WEBHOOK_SECRET``) the signature is
``HMAC-SHA256(secret, timestamp + "." + body)`` in lowercase hex, over the exact body bytes
received. The timestamp is part of the signed material so that a captured request cannot be
replayed later: a receiver recomputes the HMAC, compares in constant time, and rejects a timestamp
more than a few minutes from its clock (:func:`verify_signature` does all three; five minutes by
default). Within that window a receiver that must not act twice deduplicates on the delivery id.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stablenew import __version__

if TYPE_CHECKING:
    from stablenew.settings import Settings

log = logging.getLogger("stablenew.notify")

EVENTS = {"finished": "job.finished", "failed": "job.failed", "canceled": "job.canceled"}
SIGNATURE_HEADER = "X-StableNew-Signature"
TIMESTAMP_HEADER = "X-StableNew-Timestamp"
EVENT_HEADER = "X-StableNew-Event"
DELIVERY_HEADER = "X-StableNew-Delivery"
DEFAULT_TOLERANCE_S = 300.0

# Answers worth another attempt; any other 4xx means the receiver refuses this request as it is.
_RETRY_STATUSES = frozenset({408, 425, 429})


_FORBIDDEN_URL_CHARS = frozenset("\\@ \t\r\n") | {chr(c) for c in range(32)} | {chr(127)}


def callback_problem(url: str) -> str | None:
    """Why ``url`` may not be used as a callback, or None when it is acceptable.

    The URL is read with urllib3's parser, the one ``requests`` sends with, so that the host we
    check is the host we would contact; anything two parsers could read differently (a
    backslash, user info, whitespace or control characters) is refused outright.
    """
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    if any(ch in _FORBIDDEN_URL_CHARS for ch in url):
        return "must not contain user info, backslashes, whitespace or control characters"
    try:
        parsed = parse_url(url)
    except (LocationParseError, ValueError) as exc:
        return f"is not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "must be an http(s) URL with a host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return "has an invalid port"
    return None


def callback_host(url: str) -> tuple[str, int | None]:
    """(host, port) exactly as ``requests`` would connect; call only on an acceptable URL."""
    from urllib3.util import parse_url

    parsed = parse_url(url)
    return (parsed.host or "").lower().strip("[]"), parsed.port


def callback_allowed(settings: Settings, url: str) -> bool:
    """Whether ``url`` is an acceptable callback that ``settings`` lets a worker POST to.

    Never raises: a URL that cannot be read safely is simply not allowed. See
    :func:`callback_refusal` for the rules.
    """
    return callback_refusal(settings, url, resolve=False) is None


def _host_listed(settings: Settings, url: str) -> bool:
    allowed = {h.lower() for h in settings.webhook_allowed_hosts}
    host, port = callback_host(url)
    return host in allowed or (port is not None and f"{host}:{port}" in allowed)


def _internal(address: str) -> bool:
    """Loopback, link-local (cloud metadata), private, shared, reserved or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def resolve_callback(url: str) -> list[str]:
    """The addresses the callback's host resolves to now (an IP literal is its own); [] if none."""
    host, port = callback_host(url)
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def callback_refusal(settings: Settings, url: str, *, resolve: bool = True) -> str | None:
    """Why a worker must not POST to ``url``, or None.

    The URL must be acceptable (:func:`callback_problem`); with ``STABLENEW_WEBHOOK_ALLOWED_HOSTS``
    set its host must be listed. A host that is not listed must not be, nor resolve to, a
    loopback, link-local (cloud metadata), private or otherwise non-public address: a submitter
    could otherwise make GPU hosts POST into their own network. With ``resolve`` the host's
    addresses are looked up now (the worker checks again at delivery, on the address it then
    connects to); without, only an IP literal is checked. Never raises.
    """
    problem = callback_problem(url)
    if problem is not None:
        return problem
    listed = _host_listed(settings, url)
    if settings.webhook_allowed_hosts and not listed:
        return "host is not in STABLENEW_WEBHOOK_ALLOWED_HOSTS"
    if listed:
        return None
    host, _ = callback_host(url)
    if host == "localhost" or host.endswith(".localhost"):
        return _NOT_PUBLIC
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolve_callback(url) if resolve else []
    if any(_internal(a) for a in addresses):
        return _NOT_PUBLIC
    return None


def delivery_address(settings: Settings, url: str) -> tuple[str | None, str | None]:
    """(the address to connect to, None) for a delivery, or (None, why it must not be sent).

    The host is resolved once, here, and the POST goes to that very address: a name that
    resolves to a public address when checked cannot send the POST elsewhere a moment later."""
    refusal = callback_refusal(settings, url, resolve=False)
    if refusal is not None:
        return None, refusal
    addresses = resolve_callback(url)
    if not addresses:
        return None, "host does not resolve"
    if not _host_listed(settings, url) and any(_internal(a) for a in addresses):
        return None, _NOT_PUBLIC
    return addresses[0], None


_NOT_PUBLIC = (
    "host is or resolves to a loopback, link-local or private address; "
    "list it in STABLENEW_WEBHOOK_ALLOWED_HOSTS to allow it"
)


def signature(body: bytes, secret: str, timestamp: str) -> str:
    """The ``X-StableNew-Signature`` value for ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    timestamp: str | None,
    tolerance: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """For receivers: whether ``body`` was signed with ``secret`` at ``timestamp``, recently.

    ``header`` is the ``X-StableNew-Signature`` value and ``timestamp`` the ``X-StableNew-Timestamp``
    value, both as received. False when either is missing or malformed, when the timestamp is more
    than ``tolerance`` seconds away from ``now`` (default: the current time), or when the HMAC
    differs. Never raises.
    """
    if not header or not timestamp or not secret or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(header.encode("utf-8"), signature(body, secret, timestamp).encode("ascii"))


def notify(
    callback_url: str,
    summary: Mapping[str, Any],
    *,
    secret: str | None,
    timeout: float = 5.0,
    attempts: int = 3,
    backoff: Sequence[float] = (0.5, 2.0),
    deadline: float | None = None,
    address: str | None = None,
) -> bool:
    """POST ``summary`` to ``callback_url``; True once the receiver answered 2xx.

    ``summary["status"]`` (finished, failed or canceled) names the event. Up to ``attempts``
    attempts, each with ``timeout`` seconds to connect and to read the answer (the answer's body is
    never read); before attempt ``n + 1`` it waits ``backoff[n - 1]`` seconds (the last value
    repeats). ``deadline`` bounds the whole delivery, pauses included: an attempt still running
    then is cut off, however steadily the receiver trickles bytes. ``address`` (from
    :func:`delivery_address`) is the IP to connect to instead of resolving the host again; the
    Host header and TLS still name the host. Connection errors, timeouts,
    408/425/429 and 5xx are tried again; redirects and other 4xx are not. Never raises: a failed
    delivery is logged and returns False.
    """
    where = _origin(callback_url)
    ends = None if deadline is None else time.monotonic() + deadline
    try:
        event = EVENTS.get(str(summary.get("status")))
        if event is None:
            log.error(
                "webhook to %s not sent: job status %r is not an end state", where, summary.get("status")
            )
            return False
        if callback_problem(callback_url) is not None:
            log.error("webhook to %s not sent: the URL is not usable", where)
            return False
        body = json.dumps(summary, separators=(",", ":"), allow_nan=False).encode("utf-8")
        delivery = uuid.uuid4().hex
        for attempt in range(1, max(attempts, 1) + 1):
            if attempt > 1 and backoff:
                pause = backoff[min(attempt - 2, len(backoff) - 1)]
                if ends is not None and time.monotonic() + pause >= ends:
                    break
                time.sleep(pause)
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                break
            outcome = _attempt(callback_url, body, event, delivery, secret, timeout, left, address)
            if outcome is None:
                log.info("webhook %s for job %s delivered to %s", event, summary.get("job_id"), where)
                return True
            problem, retry = outcome
            log.warning(
                "webhook %s for job %s to %s: attempt %d/%d failed: %s",
                event, summary.get("job_id"), where, attempt, attempts, problem,
            )  # fmt: skip
            if not retry:
                break
    except Exception:  # a webhook must never fail the job, whatever went wrong here
        log.exception("webhook to %s not delivered", where)
        return False
    log.error("webhook for job %s to %s not delivered", summary.get("job_id"), where)
    return False


def _attempt(
    url: str,
    body: bytes,
    event: str,
    delivery: str,
    secret: str | None,
    timeout: float,
    left: float | None,
    address: str | None = None,
) -> tuple[str, bool] | None:
    """One POST: None when delivered, else (what went wrong, whether another attempt may help).

    A watchdog shuts the socket down once ``left`` seconds have passed: a socket timeout bounds
    each read, not a whole answer sent one byte at a time."""
    from urllib3.util import parse_url

    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"stablenew/{__version__}",
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery,
        TIMESTAMP_HEADER: timestamp,
    }
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret, timestamp)
    parsed = parse_url(url)
    host = parsed.host or ""
    limit = timeout if left is None else min(timeout, left)
    if address is not None:
        headers["Host"] = host if parsed.port is None else f"{host}:{parsed.port}"
        if ":" in host:
            headers["Host"] = f"[{host}]" if parsed.port is None else f"[{host}]:{parsed.port}"
    target = address or host
    conn: http.client.HTTPConnection
    if parsed.scheme == "https":
        conn = _HTTPSTo(target, host, parsed.port, limit)
    else:
        conn = http.client.HTTPConnection(target, parsed.port, timeout=limit)
    cut_off = threading.Event()

    def cut() -> None:
        cut_off.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(left, cut) if left is not None else None
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    # Only the exception's name is logged: its text repeats the URL, whose path may carry a token.
    try:
        conn.request("POST", parsed.request_uri or "/", body=body, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        if cut_off.is_set():
            return "no answer within the delivery deadline", False
        if isinstance(exc, TimeoutError):
            return "Timeout", True
        if isinstance(exc, ssl.SSLCertVerificationError):
            return type(exc).__name__, False
        return "ConnectionError", True
    finally:
        if watchdog is not None:
            watchdog.cancel()
        conn.close()
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} redirect (not followed)", False
    return f"HTTP {status}", status >= 500 or status in _RETRY_STATUSES


class _HTTPSTo(http.client.HTTPSConnection):
    """HTTPS to ``address`` whose certificate must name ``hostname`` (SNI too)."""

    def __init__(self, address: str, hostname: str, port: int | None, timeout: float) -> None:
        self._context_for = ssl.create_default_context()
        super().__init__(address, port, timeout=timeout, context=self._context_for)
        self._hostname = hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context_for.wrap_socket(self.sock, server_hostname=self._hostname)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: paths and queries of webhook URLs often carry tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "<invalid url>"


__all__ = ["EVENTS", "notify", "signature", "verify_signature"]
