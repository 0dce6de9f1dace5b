"""Runtime settings from ``STABLENEW_*`` environment variables.

Command-line flags override these; the defaults work on one machine. Secrets
(Redis password, WebUI basic auth, webhook secret) are held as ``SecretStr`` so they never show
up in a repr, a log line or job meta; a password written into the WebUI URL is hidden too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import annotated_types
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stablenew.errors import FieldProblem, SettingsError
from stablenew.queues import QUEUES


class Settings(BaseSettings):
    """Everything a producer, worker or CLI needs to know about its surroundings."""

    # hide_input_in_errors: a ValidationError must not quote a password it was given.
    model_config = SettingsConfigDict(env_prefix="STABLENEW_", extra="ignore", hide_input_in_errors=True)

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
    # Model-aware dispatch: a worker prefers plans for the checkpoint its WebUI holds, but a plan
    # that has waited longer than this many seconds is taken by the next free worker whatever it
    # holds. 0 turns affinity off: oldest plan first across each priority band (FIFO).
    affinity_max_wait: float = Field(300.0, ge=0)

    webhook_secret: SecretStr | None = None
    # user:password of `stablenew dashboard` (HTTP basic); without it the dashboard serves loopback only.
    dashboard_auth: SecretStr | None = None
    # Hosts (host or host:port, comma-separated) a plan's callback_url may name; empty = any host
    # that is and resolves to a public address (loopback, link-local and private ones only when
    # listed). Set it on shared deployments: a submitter could otherwise make GPU hosts POST anywhere.
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # How long one webhook delivery may take in all (attempts and pauses): a receiver trickling
    # its answer is cut off here. Deliveries run beside the worker's jobs, never holding them.
    webhook_deadline: float = Field(30.0, gt=0)

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

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url_usable(cls, value: Any) -> Any:
        url = value.get_secret_value() if isinstance(value, SecretStr) else value
        problem = redis_url_problem(url) if isinstance(url, str) else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("webui_url")
    @classmethod
    def _webui_url_is_http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("webui_auth", "dashboard_auth")
    @classmethod
    def _auth_is_a_pair(cls, auth: SecretStr | None) -> SecretStr | None:
        if auth is not None and ":" not in auth.get_secret_value():
            raise ValueError("must be user:password")
        return auth

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _lower_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.lower() for host in hosts]

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


# Shown as "not shown" whatever their value; URLs are shown with their password hidden.
_SECRET_FIELDS = frozenset({"webui_auth", "webhook_secret", "dashboard_auth"})
_URL_FIELDS = frozenset({"redis_url", "webui_url"})
_REDIS_DATABASES = "0..15 unless your server sets databases"


def load_settings(
    flags: Mapping[str, Any] | None = None, *, flag_names: Mapping[str, str] | None = None
) -> Settings:
    """Settings from the ``STABLENEW_*`` variables, with ``flags`` on top.

    ``flags`` maps field names to values given on the command line; ``None`` or an empty list
    means "not given". Flags win over variables, which win over the defaults. ``flag_names`` says
    how each flag is spelled (``{"redis_url": "--redis-url"}``) for the error message.

    Raises:
        SettingsError: a value cannot work; one problem per setting, naming the variable or flag.
    """
    given = {name: value for name, value in (flags or {}).items() if value not in (None, [])}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise settings_error(exc, given, flag_names or {}) from None


def settings_error(
    exc: ValidationError, given: Mapping[str, Any], flag_names: Mapping[str, str]
) -> SettingsError:
    """Translate pydantic's answer into a :class:`SettingsError` a user can act on."""
    problems: dict[str, FieldProblem] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in problems:
            continue
        if field in given:
            name, raw = flag_names.get(field, field), given[field]
        else:
            name = f"STABLENEW_{field.upper()}"
            raw = os.environ.get(name, error.get("input"))
        if isinstance(raw, list | tuple):
            raw = ",".join(str(item) for item in raw)
        message = _allowed(field, error)
        if field in _SECRET_FIELDS:
            problems[field] = FieldProblem(name, message, has_value=False)
        else:
            shown = redact_url(str(raw)) if field in _URL_FIELDS else str(raw)
            problems[field] = FieldProblem(name, message, shown)
    return SettingsError(list(problems.values()))


def _allowed(field: str, error: Any) -> str:
    """What ``field`` accepts, in words."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if field == "queues":
        return f"must name at least one queue of {','.join(QUEUES)}"
    if field == "retry_intervals":
        return "must be comma-separated whole seconds >= 0"
    info = Settings.model_fields.get(field)
    if info is None:
        return str(error["msg"])
    kinds: dict[object, str] = {int: "an integer", float: "a number"}
    kind = kinds.get(info.annotation)
    if kind is None:
        return str(error["msg"])
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Ge):
            return f"must be {kind} >= {bound.ge}"
        if isinstance(bound, annotated_types.Gt):
            return f"must be {kind} > {bound.gt}"
    return f"must be {kind}"


def redis_url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as a Redis URL (never quoting its password), or None.

    The database is the path after the host: ``redis://host:6379/2``. Redis has 16 unless the
    server's ``databases`` setting says otherwise; a URL naming another one is refused here rather
    than at the first command.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss", "unix"):
        return "must be a redis://, rediss:// or unix:// URL"
    if scheme == "unix":
        return None
    hostpart = rest.rpartition("@")[2]
    path = hostpart.partition("/")[2].split("?")[0].split("#")[0]
    if not path:
        return None
    if not path.isdigit():
        return f"the database after the host must be a number, {_REDIS_DATABASES}"
    if int(path) > 15:
        return f"database {int(path)} is out of range: {_REDIS_DATABASES}"
    return None


def redact_url(url: str) -> str:
    """Return ``url`` with any password (user info or ``?password=``) replaced by ``***``.

    Works on the raw text, so a password holding ``/``, ``#`` or ``@`` is still hidden whole. Query
    secrets go first: an ``@`` inside one must not be taken for the end of the user info (which would
    leave the rest of that password in view).
    """
    url = _SECRET_QUERY.sub(r"\1***", url)
    scheme_end = url.find("://")
    if scheme_end > 0 and "@" in url[scheme_end:]:
        head, _, tail = url.rpartition("@")
        scheme, userinfo = head[: scheme_end + 3], head[scheme_end + 3 :]
        user, has_password, _ = userinfo.partition(":")
        url = f"{scheme}{user}:***@{tail}" if has_password else f"{scheme}{user}@{tail}"
    return url


# A query parameter whose name says it is a secret, up to the next parameter or the fragment.
_SECRET_QUERY = re.compile(r"([?&][^=&#?]*(?:pass|token|secret)[^=&#?]*=)[^&#]*", re.IGNORECASE)
