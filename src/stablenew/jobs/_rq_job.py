"""The job class of every worker and producer here: :class:`StableNewJob`, RQ's ``Job`` made safe to read.

It runs only the allow-listed job function with its one argument, refuses callbacks, reads a hash
written straight into Redis defensively (``data`` within :data:`MAX_JOB_DATA_BYTES`, a ``meta`` that is
not JSON dropped), and reads how a run ended from the exception that ended it. Its public path is
:mod:`stablenew.jobs.rq_classes`.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any, NoReturn

import redis
from rq import Queue
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import as_text, import_attribute

from stablenew.errors import Canceled, JobNotAllowed, Requeued, Superseded, is_permanent
from stablenew.jobs.keys import ALLOWED_FUNCTIONS
from stablenew.jobs.state import StateStore, mirror_to_meta
from stablenew.jobs.views import data_rewritten
from stablenew.pipeline import MAX_PLAN_JSON_CHARS
from stablenew.run import JobState

from ._webhooks import WebhookOutbox

log = logging.getLogger("stablenew.worker")

# A job's ``data`` (RQ's JSON tuple holding the plan) is inflated to at most this many bytes: a
# plan at its own limit plus JSON's escaping of it (base64 image data, the bulk of any large plan,
# is not escaped at all). RQ itself would inflate any zlib stream in full, at fetch, in the
# worker's main process.
MAX_JOB_DATA_BYTES = 2 * MAX_PLAN_JSON_CHARS

_EMPTY_ZLIB = zlib.compress(b"")


def _inflate(raw: bytes, limit: int) -> bytes | None:
    """What RQ's ``restore`` makes of ``data`` (zlib-inflated, else as stored), or None when that is
    over ``limit`` bytes; never holds more than ``limit + 1`` bytes of output."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        out = raw
    else:
        if len(out) <= limit and not inflater.eof:
            out = raw  # a truncated stream: RQ's zlib.decompress fails and keeps the bytes as stored
    return out if len(out) <= limit else None


def _arguments_problem(args: Any, kwargs: Any) -> str | None:
    """What is wrong with a job's arguments for the one job function, if anything."""
    if not isinstance(args, list | tuple):
        return f"got args of type {type(args).__name__}"
    if len(args) != 1:
        return f"got {len(args):,} positional arguments"
    if not isinstance(args[0], str):
        return f"got a {type(args[0]).__name__}"
    if not isinstance(kwargs, dict) or set(kwargs) - _KEYWORDS:
        return "got keyword arguments (only reuse, true or false, is known)"
    if not all(isinstance(value, bool) for value in kwargs.values()):
        return "got keyword arguments (only reuse, true or false, is known)"
    return None


# The job function's one keyword argument: run_plan(plan_json, reuse=False) is --no-reuse.
_KEYWORDS = frozenset({"reuse"})


class StableNewJob(Job):
    """An RQ Job that runs only allow-listed functions and callbacks.

    JSON alone does not make a queue safe: a JSON job naming ``os.system`` would still run. This
    class refuses any function, bound instance or callback outside :data:`ALLOWED_FUNCTIONS`; such a
    job fails with a clear error and the worker goes on. RQ's own job webhooks are disabled (a job
    injected into Redis could otherwise make the GPU host post to any address).

    A hash written straight into Redis is read defensively too: ``data`` that is not a JSON job
    tuple (a pickle, say: it is never unpickled) or over :data:`MAX_JOB_DATA_BYTES` once inflated
    makes the job fail at once (no retry) saying so; a ``meta`` that is not JSON is dropped unread
    (the job runs, and its meta is written again as JSON); and the job function is called only with
    its one argument, the plan as a JSON string.
    """

    def __init__(
        self, id: str | None = None, connection: redis.Redis | None = None, serializer: Any = None
    ) -> None:
        # Always JSON, whatever a caller passes or forgets to pass: RQ's default (pickle) would run
        # code from Redis on Job.fetch, even when reading only meta (``rq worker -j`` without ``-S json``).
        super().__init__(id, connection=connection, serializer=JSONSerializer)

    data_too_big = False
    """Set by ``restore``: the hash's data was over :data:`MAX_JOB_DATA_BYTES` (dropped unread)."""
    meta_not_json = False
    """Set by ``restore``: the hash's meta was not JSON (dropped unread), e.g. re-saved by a tool
    without ``-S json``. A worker runs such a job (its plan is in ``data``) and writes its meta
    again as JSON; see :func:`~stablenew.jobs.views.rewritten_problem`."""

    hands_back: bool = False
    """Set by :class:`StableNewWorker` before the job runs: a job handed back (:class:`Requeued`)
    goes back to the front of its queue without using a retry. Under plain RQ's worker it stays
    False, and the job fails or retries as RQ does."""

    ended_by: Canceled | Requeued | Superseded | None = None
    """The signal that ended this run of the job, as :meth:`perform` caught it: canceled by
    request, handed back to its queue, or superseded by a later run (which now owns the job's
    status). None for a job that finished or failed."""

    def perform(self) -> Any:
        """RQ's ``perform``, reading the exception that ends the job: a :class:`Canceled` or any
        permanent error (:func:`is_permanent`) uses no retry; a cancel or a hand-back is kept in
        :attr:`ended_by` for the failure handling that follows (here and in the worker)."""
        try:
            return super().perform()
        except (Canceled, Requeued, Superseded) as exc:
            self.ended_by = exc
            if isinstance(exc, Canceled):
                self.retries_left = 0
            raise
        except Exception as exc:
            if is_permanent(exc):
                self.retries_left = 0  # the same plan fails the same way: retrying cannot help
            raise

    @property
    def func(self) -> Any:
        name = self.func_name
        if not isinstance(name, str) or name not in ALLOWED_FUNCTIONS or self.instance is not None:
            self._refuse(
                f"job {self.id} names function {name!r}, which is not allowed on this worker "
                f"(allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))})"
            )
        # Callbacks are refused before the job runs, not after it has done its GPU work.
        self._checked_callback("success", self._success_callback_name)
        self._checked_callback("failure", self._failure_callback_name)
        self._checked_callback("stopped", self._stopped_callback_name)
        if self.meta_not_json:
            log.warning(
                "job %s: its meta was rewritten by a tool without -S json; it runs, and its meta is "
                "written again as JSON from its stage state",
                self.id,
            )
        problem = _arguments_problem(self.args, self.kwargs)
        if problem:
            self._refuse(f"job {self.id}: {name} takes one argument, the plan as a JSON string ({problem})")
        return import_attribute(ALLOWED_FUNCTIONS[name])

    def restore(self, raw_data: Any) -> None:
        """RQ's ``restore``, inflating ``data`` within :data:`MAX_JOB_DATA_BYTES` and dropping a
        ``meta`` that is not JSON (RQ would keep its raw bytes, which no JSON save can write back).

        Raises:
            NoSuchJobError: the hash has no ``data`` (RQ's own answer).
            ValueError / TypeError / KeyError: a field RQ cannot parse (any other error RQ raises
                for one, e.g. the AssertionError of a garbage ``timeout``, becomes a ValueError).
        """
        key = next((k for k in raw_data if as_text(k) == "data"), None)
        if key is None:
            super().restore(raw_data)  # RQ raises NoSuchJobError: not a job
            return
        data = _inflate(raw_data[key], MAX_JOB_DATA_BYTES)
        try:
            super().restore({**raw_data, key: _EMPTY_ZLIB})
        except (NoSuchJobError, ValueError, TypeError, KeyError):
            raise
        except Exception as exc:  # e.g. RQ's parse_timeout asserts on a garbage ``timeout``
            raise ValueError(f"job {self.id}: {type(exc).__name__}: {exc}") from None
        self.data_too_big = data is None
        self.data = data or b""
        unserialized = self.meta.get("unserialized") if isinstance(self.meta, dict) else None
        self.meta_not_json = isinstance(unserialized, bytes)  # JSON never decodes to bytes
        if self.meta_not_json:
            self.meta = {}

    def _deserialize_data(self) -> None:
        """RQ's, with the reason in the error, and no retry (the same bytes fail the same way).

        Raises:
            DeserializationError: what RQ's worker expects (it catches it by that name).
        """
        if self.data_too_big:
            self.retries_left = 0
            raise DeserializationError(
                f"job {self.id}: its data is over {MAX_JOB_DATA_BYTES:,} bytes "
                f"({MAX_JOB_DATA_BYTES // 2**20} MiB) once inflated, more than any plan may be"
            )
        try:
            super()._deserialize_data()  # type: ignore[no-untyped-call]
        except DeserializationError as exc:
            self.retries_left = 0
            cause = exc.__cause__
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else "unreadable"
            rewritten = " (a pickle: rewritten by a tool without -S json; resubmit its config)"
            raise DeserializationError(
                f"job {self.id}: its data is not JSON of [function, instance, args, kwargs] "
                f"({reason[:200]}); jobs here are JSON only{rewritten if data_rewritten(self) else ''}"
            ) from None

    def _callback_url(self) -> str | None:
        """The plan's callback_url, read without trusting the plan (None if there is none)."""
        try:
            plan = json.loads(self.args[0])
        except (ValueError, TypeError, IndexError, DeserializationError):
            return None
        url = plan.get("callback_url") if isinstance(plan, dict) else None
        return url if isinstance(url, str) and url else None

    def _checked_callback(self, kind: str, name: str | None) -> None:
        if name:
            self._refuse(f"job {self.id} names {kind} callback {name!r}, which is not allowed")

    def _refuse(self, message: str) -> NoReturn:
        self.retries_left = 0  # permanent: a retry would be refused the same way
        raise JobNotAllowed(message, job_id=self.id)

    @classmethod
    def fetch(cls, id: str, connection: redis.Redis | None = None, serializer: Any = None) -> Job:
        """Fetch a job; one RQ cannot even read is treated as absent, so the worker skips it.

        RQ's dequeue passes over ``NoSuchJobError`` but lets any other error out of ``fetch`` stop
        the whole worker: an id outside ``[A-Za-z0-9_-]`` pushed onto a queue list, or a hash with
        a garbage ``created_at``, ``status`` or ``timeout`` written straight into Redis.
        """
        try:
            job: Job = super().fetch(id, connection=connection, serializer=serializer)
        except (NoSuchJobError, redis.RedisError):
            raise  # absent, or Redis itself failing: RQ handles both (skipping would lose the job)
        except Exception as exc:
            log.warning("job %r: unreadable job skipped (%s: %s)", id, type(exc).__name__, exc)
            raise NoSuchJobError(f"job {id!r} cannot be read: {type(exc).__name__}") from None
        return job

    # RQ also runs callbacks outside any job, e.g. the failure callback of an abandoned job during
    # a worker's maintenance, where an exception would stop the worker. So these never import or
    # run anything, and never raise; ``func`` above refuses a job that names one.
    @property
    def success_callback(self) -> Any:
        return self._no_callback("success", self._success_callback_name)

    @property
    def failure_callback(self) -> Any:
        return self._no_callback("failure", self._failure_callback_name)

    @property
    def stopped_callback(self) -> Any:
        return self._no_callback("stopped", self._stopped_callback_name)

    def _no_callback(self, kind: str, name: str | None) -> None:
        if name:
            log.warning("job %s: %s callback %r ignored (not allowed)", self.id, kind, name)
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        return None

    def _handle_failure(self, exc_string: str, pipeline: Any, *args: Any, **kwargs: Any) -> None:
        """A cancel ends the job *canceled* (RQ would otherwise call it failed); a job that died
        without recording its end (its work horse was killed) gets its running stage marked failed.

        RQ calls this once the job will not be retried, in the work horse or, when the horse died,
        in the worker's parent process."""
        if isinstance(self.ended_by, Canceled):
            ttl = self.failure_ttl or DEFAULT_FAILURE_TTL
            self.set_status(JobStatus.CANCELED, pipeline=pipeline)
            CanceledJobRegistry(
                self.origin, self.connection, job_class=type(self), serializer=self.serializer
            ).add(self, ttl=ttl, pipeline=pipeline)
            self._mirror_state(pipeline)
            pipeline.expire(self.key, ttl)
            return
        state = None
        try:
            store = StateStore(self.connection)
            state = store.load(self.id)
            if state is not None and state.status in ("running", "queued"):
                lines = [line for line in exc_string.strip().splitlines() if line.strip()]
                state.mark_failed(lines[-1] if lines else "the job died")
                store.save(state)
                url = self._callback_url()
                if url:  # the run died before it could leave its webhook: the worker sends it
                    WebhookOutbox(self.connection, ttl=store.ttl).put(
                        self.id, url, {"job_id": self.id, **state.view()}
                    )
        except redis.RedisError:
            log.warning("job %s: could not record its failure in the stage state", self.id)
        super()._handle_failure(exc_string, pipeline, *args, **kwargs)
        self._mirror_state(pipeline, state, loaded=True)

    def _handle_success(self, result_ttl: Any, pipeline: Any, *args: Any, **kwargs: Any) -> None:
        super()._handle_success(result_ttl, pipeline, *args, **kwargs)
        self._mirror_state(pipeline)

    def retry(self, queue: Queue, pipeline: Any) -> None:
        super().retry(queue, pipeline)
        self._mirror_state(pipeline)

    def _mirror_state(self, pipeline: Any, state: JobState | None = None, *, loaded: bool = False) -> None:
        """Write the job's view into its meta for rq-dashboard, now that RQ has set how the job
        ends (the worker's last write during the run still said *started*). Never raises."""
        try:
            if not loaded:
                state = StateStore(self.connection).load(self.id)
            mirror_to_meta(self, state, pipeline=pipeline)
        except Exception:  # RQ's own end of the job must go on: the copy is for display only
            log.warning("job %s: could not copy its state into its meta", self.id, exc_info=True)
