"""Runtime settings from ``STABLENEW_*`` environment variables.

Command-line flags override these; the defaults work on one machine. Secrets
(Redis password, WebUI basic auth, webhook secret) are held as ``SecretStr`` so they never show
up in a repr, a log line or job meta; a password written into the WebUI URL is hidden too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stablenew.queues import QUEUES


class Settings(BaseSettings):
    """Everything a producer, worker or CLI needs to know about its surroundings."""

    model_config = SettingsConfigDict(env_prefix="STABLENEW_", extra="ignore")

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    webui_url: str = "http://127.0.0.1:7860"
    webui_auth: SecretStr | None = None
    output_dir: Path = Path("outputs")
    # Lists are written comma-separated in the environment ("high,default"), not as JSON.
    queues: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(QUEUES), min_length=1)

    webui_connect_timeout: float = Field(5.0, gt=0)
    webui_read_timeout: float = Field(1800.0, gt=0)
    progress_interval: float = Field(1.0, gt=0)

    job_timeout_ceiling: int = Field(6 * 3600, gt=0)
    result_ttl: int = Field(7 * 24 * 3600, gt=0)
    failure_ttl: int = Field(14 * 24 * 3600, gt=0)
    retry_max: int = Field(3, ge=0)
    retry_intervals: Annotated[list[Annotated[int, Field(ge=0)]], NoDecode] = Field(
        default_factory=lambda: [10, 30, 90]
    )

    # Inside one run of a job: a stage that fails with a transient WebUI error (down, timeout, 5xx,
    # a truncated answer) is tried again this many times, waiting stage_retry_backoff s, doubling.
    stage_retries: int = Field(2, ge=0)
    stage_retry_backoff: float = Field(2.0, ge=0)
    # Circuit breaker: after this many consecutive WebUI failures the worker stops taking jobs and
    # probes its WebUI (every webui_probe_interval s, doubling up to webui_probe_max) until it answers;
    # the job in hand goes back to the front of its queue without using up one of its retries.
    webui_failure_threshold: int = Field(3, ge=1)
    webui_probe_interval: float = Field(5.0, gt=0)
    webui_probe_max: float = Field(60.0, gt=0)
    # How often one job may be handed back (WebUI down, worker stopped or died) before such a
    # failure counts as an ordinary one: a job that itself breaks the WebUI cannot loop forever.
    max_requeues: int = Field(20, ge=0)
    # How long a worker rides out a Redis outage (a restart) before it gives up.
    redis_retry_seconds: float = Field(60.0, ge=0)

    webhook_secret: SecretStr | None = None
    # Hosts (host or host:port, comma-separated) a plan's callback_url may name; empty = any.
    # Set it on shared deployments: a submitter could otherwise make GPU hosts POST anywhere.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("queues", "retry_intervals", "webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("queues")
    @classmethod
    def _known_queues(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in QUEUES]
        if unknown:
            raise ValueError(f"unknown queue {unknown[0]!r}: each must be one of {','.join(QUEUES)}")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"queue {repeated[0]!r} is named twice")
        return names

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.lower() for host in hosts]

    def callback_allowed(self, url: str) -> bool:
        """Whether ``url`` is an acceptable callback whose host ``webhook_allowed_hosts`` allows.

        Never raises: a URL that cannot be read safely is simply not allowed.
        """
        from stablenew.notify import callback_host, callback_problem

        if callback_problem(url) is not None:
            return False
        allowed = set(self.webhook_allowed_hosts)
        if not allowed:
            return True
        host, port = callback_host(url)
        return host in allowed or (port is not None and f"{host}:{port}" in allowed)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Fields as repr and str show them: SecretStr hides itself; a password in the WebUI URL is hidden."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "webui_url" and isinstance(value, str) else value

    @property
    def webui_basic_auth(self) -> tuple[str, str] | None:
        if self.webui_auth is None:
            return None
        user, _, password = self.webui_auth.get_secret_value().partition(":")
        return (user, password)


def load_settings(flags: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the ``STABLENEW_*`` variables, with ``flags`` on top.

    ``flags`` maps field names to values given on the command line; ``None`` or an empty list
    means "not given". Flags win over variables, which win over the defaults.
    """
    given = {name: value for name, value in (flags or {}).items() if value not in (None, [])}
    return Settings(**given)


def redact_url(url: str) -> str:
    """Return ``url`` with any password (user info or ``?password=``) replaced by ``***``.

    Works on the raw text, so a password holding ``/``, ``#`` or ``@`` is still hidden whole.
    """
    scheme_end = url.find("://")
    if scheme_end > 0 and "@" in url[scheme_end:]:
        head, _, tail = url.rpartition("@")
        scheme, userinfo = head[: scheme_end + 3], head[scheme_end + 3 :]
        user, has_password, _ = userinfo.partition(":")
        url = f"{scheme}{user}:***@{tail}" if has_password else f"{scheme}{user}@{tail}"
    base, sep, query = url.partition("?")
    if not sep:
        return url
    query, hashsep, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and any(word in key.lower() for word in ("pass", "token", "secret")):
            value = "***"
        pairs.append(f"{key}{eq}{value}")
    return f"{base}?{'&'.join(pairs)}{hashsep}{fragment}"
