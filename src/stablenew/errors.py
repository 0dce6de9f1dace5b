"""The one exception tree of stablenew.

Every error the package raises on purpose is a :class:`StableNewError`. Foreign
exceptions (``requests``, ``redis``, ``pydantic``) are translated once, at the
boundary that meets them, and never leak past it::

    StableNewError
    ├── ConfigError                 a pipeline config failed validation (.problems)
    │   └── SettingsError           a STABLENEW_* variable or a flag has a bad value
    ├── InvalidStagePlanError       a config asks for an impossible plan (also ValueError)
    ├── PlanVersionError            a serialized plan has an unknown schema_version
    ├── WebUIError                  anything that went wrong talking to the WebUI
    │   ├── WebUIUnavailable        connection refused / DNS / reset        (transient)
    │   ├── WebUITimeout            the WebUI did not answer in time        (transient)
    │   ├── WebUIHTTPError          5xx or an unusable 2xx body (.status)   (transient if 5xx, unless
    │   │                           its words say the same request fails every time)
    │   └── WebUIRejected           4xx, or a missing model/sampler/upscaler (permanent)
    ├── RedisUnavailable            Redis could not be reached
    └── JobError                    queue-side problems (.job_id)
        ├── JobNotFound             no such job id
        ├── JobNotAllowed           a job names a function outside the allow-list
        ├── Canceled                the job was canceled by request
        ├── Requeued                the job went back to its queue unfinished (handed back)
        └── Superseded              a later run of the job took it over: this run stops unwritten

``is_transient(exc)`` says whether a retry may help; ``is_permanent(exc)`` whether it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class StableNewError(Exception):
    """Base class of every error stablenew raises on purpose."""


@dataclass(frozen=True)
class FieldProblem:
    """One validation problem: where it is, what is wrong, and the value found."""

    path: str
    message: str
    value: Any = None
    has_value: bool = True

    def __str__(self) -> str:
        where = self.path or "<config>"
        if not self.has_value:
            return f"{where}: {self.message}"
        return f"{where}: {self.message} (got {_short_repr(self.value)})"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ConfigError(StableNewError):
    """A pipeline config is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[FieldProblem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid pipeline config{f' {source}' if source else ''}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}: {len(self.problems)} problem(s)\n{lines}")


class SettingsError(ConfigError):
    """A setting cannot work. Each problem's ``path`` is the variable or flag as the user wrote it
    (``STABLENEW_RETRY_MAX``, ``--redis-url``) and its value is already masked: a secret has none."""

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        self.problems = list(problems)
        self.source = None
        StableNewError.__init__(self, "; ".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per bad setting: ``NAME='value': what is allowed``."""
        return [
            f"{p.path}={p.value!r}: {p.message}" if p.has_value else f"{p.path}: {p.message}"
            for p in self.problems
        ]


class InvalidStagePlanError(StableNewError, ValueError):
    """The enabled stages cannot form a valid plan (e.g. ADetailer without generation)."""


class PlanVersionError(StableNewError):
    """A serialized plan carries a schema_version this code does not understand."""

    def __init__(self, found: object, supported: int) -> None:
        self.found = found
        self.supported = supported
        super().__init__(
            f"plan schema_version {found!r} is not supported (this worker understands {supported}); "
            "upgrade the worker or resubmit the config"
        )


class WebUIError(StableNewError):
    """Base class for WebUI failures. ``stage`` and ``url`` are set when known."""

    transient: bool = False

    def __init__(self, message: str, *, url: str | None = None, stage: str | None = None) -> None:
        self.url = url
        self.stage = stage
        super().__init__(message)


class WebUIUnavailable(WebUIError):
    """The WebUI could not be reached (refused, DNS failure, connection reset)."""

    transient = True


class WebUITimeout(WebUIError):
    """The WebUI did not answer within the configured timeout."""

    transient = True


class WebUIHTTPError(WebUIError):
    """The WebUI answered with a 5xx, or with a 2xx body we cannot use."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        url: str | None = None,
        stage: str | None = None,
        transient: bool | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self._transient = transient
        super().__init__(f"WebUI HTTP {status}: {detail}", url=url, stage=stage)

    @property
    def transient(self) -> bool:  # type: ignore[override]
        # A 5xx may pass; so may a 200 whose JSON was cut short or whose images list came back
        # empty (said explicitly where raised). A 200 of the wrong shape (HTML, a path instead of
        # an image) comes back the same way every time.
        return self._transient if self._transient is not None else self.status >= 500


class WebUIRejected(WebUIError):
    """The WebUI refused the request (4xx) or lacks a model/sampler the plan names."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        url: str | None = None,
        stage: str | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.status = status
        self.detail = detail
        self.field = field  # the config field naming what the WebUI lacks, when there is one
        self.value = value
        prefix = f"WebUI rejected the request (HTTP {status})" if status else "WebUI rejected the plan"
        super().__init__(f"{prefix}: {detail}", url=url, stage=stage)


class RedisUnavailable(StableNewError):
    """Redis could not be reached at the configured URL (password never shown)."""


class JobError(StableNewError):
    """Base class for queue-side job problems."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class JobNotFound(JobError):
    """No job with this id exists (or it has expired)."""


class JobNotAllowed(JobError):
    """A job names a function or callback that is not on the worker's allow-list."""


class Canceled(JobError):
    """The job was canceled by request."""


class Requeued(JobError):
    """The job was handed back to the front of its queue, not failed: its worker is stopping, or
    the worker's WebUI is down. It resumes after its last finished stage wherever it runs next."""


class Superseded(JobError):
    """A later run of the job holds its ownership token (this run's worker froze, say, and the job
    was given to another): this run stops without writing state, outputs or a webhook."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same work may succeed (WebUI down, timeout, 5xx)."""
    return isinstance(exc, WebUIError) and bool(exc.transient)


def is_permanent(exc: BaseException) -> bool:
    """Our own errors say; a ValueError/TypeError/KeyError from our code or data repeats the same
    way on every try; anything else (Redis or disk trouble, RQ's job timeout) may pass."""
    if isinstance(exc, StableNewError):
        return not is_transient(exc)
    return isinstance(exc, ValueError | TypeError | LookupError | AttributeError)


__all__ = [
    "Canceled",
    "ConfigError",
    "FieldProblem",
    "InvalidStagePlanError",
    "JobError",
    "JobNotAllowed",
    "JobNotFound",
    "PlanVersionError",
    "RedisUnavailable",
    "Requeued",
    "SettingsError",
    "StableNewError",
    "Superseded",
    "WebUIError",
    "WebUIHTTPError",
    "WebUIRejected",
    "WebUITimeout",
    "WebUIUnavailable",
    "is_permanent",
    "is_transient",
]
