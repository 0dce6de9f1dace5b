"""Our RQ classes: :class:`StableNewJob` and :class:`StableNewWorker`, every RQ method we override.

Both worker commands use them: ``stablenew worker`` builds the worker with :func:`make_worker`;
plain RQ runs::

    rq worker -S json -j stablenew.jobs.rq_classes.StableNewJob \
        -w stablenew.jobs.rq_classes.StableNewWorker --with-scheduler high default low

Producers use :class:`StableNewJob` too (for queues and registries) so that nothing on either side
ever imports or runs a function or callback named by a job. The job they run is
:func:`stablenew.jobs.job_run.run_plan`.

How a run ends travels as an exception, read where RQ hands it over: :meth:`StableNewJob.perform`
sees :class:`~stablenew.errors.Canceled` (the job ends *canceled*, no retry),
:class:`~stablenew.errors.Requeued` (:class:`StableNewWorker` puts it back at the front of its
queue, no retry used) and any permanent error (no retry). The RQ names we rely on, private ones
included, are pinned against the installed rq by ``tests/jobs/test_rq_classes.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any, NoReturn

import redis
from rq import Queue, SimpleWorker, Worker
from rq.defaults import DEFAULT_FAILURE_TTL
from rq.exceptions import DequeueTimeout, DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, ScheduledJobRegistry
from rq.registry import clean_registries as rq_clean_registries
from rq.serializers import JSONSerializer
from rq.utils import as_text, current_timestamp, import_attribute
from rq.worker import WorkerStatus
from rq.worker.base import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS

from stablenew.errors import Canceled, JobNotAllowed, Requeued, Superseded, WebUIError, is_permanent
from stablenew.jobs._webhooks import WebhookOutbox, WebhookSender
from stablenew.jobs.affinity import (
    band_of,
    checkpoint_name,
    checkpoint_queues,
    forget_worker,
    order_queues,
    queue_heads,
    read_held,
    record_loaded,
    record_serving,
)
from stablenew.jobs.keys import (
    ALLOWED_FUNCTIONS,
    PAUSED_QUEUES_KEY,
    affinity_lock_key,
    birth_key,
    stop_key,
    worker_models_key,
)
from stablenew.jobs.resilience import (
    WebUIBreaker,
    hand_back,
    probe_webui,
    provably_dead,
    reclaim_dead_namesake,
)
from stablenew.jobs.state import StateStore, mirror_to_meta
from stablenew.jobs.views import data_rewritten
from stablenew.pipeline import MAX_PLAN_JSON_CHARS
from stablenew.queues import QUEUES
from stablenew.run import JobState
from stablenew.settings import Settings, redact_url
from stablenew.webui import WebUIClient

log = logging.getLogger("stablenew.worker")

# A job's ``data`` (RQ's JSON tuple holding the plan) is inflated to at most this many bytes: a
# plan at its own limit plus JSON's escaping of it (base64 image data, the bulk of any large plan,
# is not escaped at all). RQ itself would inflate any zlib stream in full, at fetch, in the
# worker's main process.
MAX_JOB_DATA_BYTES = 2 * MAX_PLAN_JSON_CHARS

_EMPTY_ZLIB = zlib.compress(b"")

# A worker orders its queues again at least this often while it waits (whole seconds: BLPOP's).
AFFINITY_POLL_S = 1
# How long a worker trusts its list of its WebUI's checkpoints before reading it again.
_ALIASES_TTL_S = 300.0


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


# The settings of the worker running the current job (its flags included), for the job function in the work
# horse; None under another worker class, whose jobs read the environment.
_running_settings: ContextVar[Settings | None] = ContextVar("stablenew_worker_settings", default=None)


def running_worker_settings() -> Settings | None:
    """The settings of the StableNew worker performing the current job, if any."""
    return _running_settings.get()


# While a queue is paused a worker blocks at most this long waiting for jobs, so that it notices a
# resume within about a second (RQ's own wait is minutes).
PAUSED_POLL_SECONDS = 1


def paused_queues(connection: redis.Redis) -> set[str]:
    """The names of the paused queues."""
    members: Iterable[bytes | str] = connection.smembers(PAUSED_QUEUES_KEY)
    return {m.decode() if isinstance(m, bytes) else m for m in members}


class PausableQueue(Queue):
    """RQ's queue whose ``dequeue_any`` skips paused queues.

    A job popped from a queue that was paused while the worker waited goes back to the front of
    that queue untouched (RQ has not marked it started yet), so pausing has no race with a worker
    already blocked on the queue.
    """

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: redis.Redis,
        job_class: Any = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        while True:
            paused = paused_queues(connection)
            # a paused band pauses its checkpoint queues too (stablenew.jobs.affinity)
            active = [q for q in queues if q.name not in paused and band_of(q.name) not in paused]
            wait = timeout if not paused or timeout is None else min(timeout, PAUSED_POLL_SECONDS)
            if not active:
                if timeout is None:
                    return None  # a burst worker: nothing it may take
                connection.blpop([f"{PAUSED_QUEUES_KEY}:never"], wait)  # a wait Redis can cut short
                raise DequeueTimeout(wait, "")
            result: tuple[Job, Queue] | None = super().dequeue_any(
                active,
                wait,
                connection=connection,
                job_class=job_class,
                serializer=serializer,
                death_penalty_class=death_penalty_class,
            )
            if result is None:
                return None
            job, queue = result
            paused = paused_queues(connection)
            if queue.name not in paused and band_of(queue.name) not in paused:
                return result
            with connection.pipeline() as pipe:
                pipe.lrem(queue.intermediate_queue_key, 0, job.id)
                pipe.lpush(queue.key, job.id)
                pipe.execute()


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


class StableNewBaseWorker(BaseWorker):
    """What our workers add to RQ's, whichever way they run a job:

    - restarted under the name of a worker that provably died on this host, it starts at once and
      hands that worker's interrupted jobs back to their queues (:func:`reclaim_dead_namesake`);
    - while its WebUI keeps failing (:class:`WebUIBreaker` open) it takes no job, probes the WebUI
      with backoff and resumes when it answers; the job in hand went back to its queue unfailed;
    - told to stop (SIGTERM/SIGINT), it lets the running stage finish, saves it, hands the job back
      to the front of its queue (it resumes after that stage) and exits;
    - a job handed back (:class:`~stablenew.errors.Requeued`) is enqueued again at the front of its
      queue without using up a retry.

    :class:`StableNewWorker` (forking, what a GPU host runs) and :class:`StableNewSimpleWorker` (in
    process, for tests and fakeredis) are this class on RQ's ``Worker`` and ``SimpleWorker``.
    """

    settings: Settings
    _probe_delay: float | None = None  # the probe backoff reached, kept until a stage succeeds

    def _settings(self) -> Settings:
        if not hasattr(self, "settings"):
            self.settings = Settings()
        return self.settings

    # ------------------------------------------------------------------ start-up
    def register_birth(self) -> None:
        s = self._settings()
        # Two workers started at once under one name (a mistake) must not both take back the dead
        # namesake's jobs: whoever holds this lock reclaims and registers; the other is refused.
        lock, me = birth_key(self.name), f"{socket.gethostname()}:{os.getpid()}"
        if not self.connection.set(lock, me, nx=True, ex=60):
            holder: bytes = self.connection.get(lock) or b""  # type: ignore[assignment]
            host, _, pid = holder.decode(errors="replace").rpartition(":")
            if not provably_dead(host, int(pid) if pid.isdigit() else None):
                raise ValueError(f"There exists an active worker named {self.name!r} already (starting up)")
            self.connection.set(lock, me, ex=60)  # left by a start-up that died half-way
        try:
            reclaim_dead_namesake(self, max_requeues=s.max_requeues, ttl=max(s.failure_ttl, s.result_ttl))
            super().register_birth()  # type: ignore[no-untyped-call]  # refuses a live namesake
        finally:
            self.connection.delete(lock)
        self.connection.delete(stop_key(self.name))  # a stop left by an earlier, dead life of this name
        self._watch_registration()
        self._read_loaded_checkpoint()

    registration_check_interval: float = 5.0
    _registration_stop: threading.Event | None = None

    def _watch_registration(self) -> None:
        """Keep this worker registered: a Redis that restarted empty (no persistence, or a fail-over
        to an empty replica) forgets every worker, and RQ registers only at start, so the worker
        would vanish from ``stablenew workers`` while it runs. A thread of the worker's process
        (none in its work horses) registers it again when its record is gone."""
        stop = self._registration_stop = threading.Event()
        pid = os.getpid()

        def watch() -> None:
            while not stop.wait(self.registration_check_interval):
                if os.getpid() != pid:
                    return
                try:
                    if not self.connection.sismember(REDIS_WORKER_KEYS, self.key):
                        # A heartbeat since the restart may have left a partial record (no birth):
                        # RQ would take it for a live namesake.
                        self.connection.delete(self.key)
                        BaseWorker.register_birth(self)  # type: ignore[no-untyped-call]
                        self.log.warning(
                            "Worker %s: its record was gone from Redis; registered again", self.name
                        )
                except (redis.RedisError, ValueError) as exc:
                    self.log.info("Worker %s: registration check failed (%s)", self.name, exc)

        threading.Thread(target=watch, name="stablenew-registration", daemon=True).start()

    def _read_loaded_checkpoint(self) -> None:
        """What the WebUI holds loaded at start (GET /sdapi/v1/options), for model-aware dispatch."""
        forget_worker(self.connection, self.name)
        try:
            with WebUIClient.from_settings(self._settings(), read_timeout=30.0) as client:
                loaded = client.loaded_checkpoint()
        except WebUIError as exc:
            self.log.warning("Worker %s: could not read the checkpoint its WebUI holds (%s)", self.name, exc)
            return
        if loaded:
            record_loaded(self.connection, self.name, loaded, count_swap=False)
            self.log.info("Worker %s: the WebUI holds %s", self.name, loaded)

    # ------------------------------------------------------------------ dequeue: breaker, then affinity
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, with the breaker first and the queues ordered by checkpoint affinity.

        The order is made again before each blocking wait of at most ``AFFINITY_POLL_S`` seconds,
        so that a checkpoint queue created meanwhile, a plan passing the max wait or a swap made by
        another worker is seen within that time."""
        self._wait_for_webui()
        # Dequeue through PausableQueue: no job from a paused queue (stablenew.jobs.queue_control).
        # Set here, not as a class attribute: RQ checks the given queues' type against it.
        self.queue_class = PausableQueue
        if timeout is None:  # burst: one pass, no waiting
            self._order_by_affinity()
            return self._took(super().dequeue_job_and_maintain_ttl(timeout, max_idle_time))
        started = time.monotonic()
        while True:
            self._order_by_affinity()
            wait = max(1, min(timeout, AFFINITY_POLL_S))
            if max_idle_time is not None:
                left = max_idle_time - (time.monotonic() - started)
                if left <= 0:
                    return None
                wait = max(1, min(wait, math.ceil(left)))
            result = super().dequeue_job_and_maintain_ttl(wait, wait)
            if result is not None:
                return self._took(result)
            if self._stop_requested:
                return None
            self._wait_for_webui()

    def _order_by_affinity(self) -> None:
        """Order the queues to dequeue from (see :mod:`stablenew.jobs.affinity`): each band the
        worker listens on with its checkpoint queues, minus those of checkpoints its WebUI lacks."""
        bands = [name for name in self.queue_names() if name in QUEUES]
        fixed = [q for q in self.queues if q.name not in QUEUES]  # named on the command line
        try:
            dynamic = checkpoint_queues(self.connection, bands)
            self._promote_due_retries(list(dynamic))
            aliases = self._checkpoint_aliases()
            runnable = {
                name: checkpoint
                for name, checkpoint in dynamic.items()
                if aliases is None or checkpoint_name(checkpoint).lower() in aliases
            }
            if len(runnable) < len(dynamic):
                # A checkpoint no live worker's WebUI has would wait forever: take its plans, which
                # then fail at once saying the WebUI lacks it (a retry waits for a host that has it).
                nowhere = self._checkpoints_nowhere([c for n, c in dynamic.items() if n not in runnable])
                runnable.update({n: c for n, c in dynamic.items() if c in nowhere})
            candidates: dict[str, str | None] = {**dict.fromkeys(bands), **runnable}
            heads = queue_heads(self.connection, candidates)
            mine = read_held(self.connection, self.name)
            held = mine.checkpoint or mine.serving
            others = self._others_checkpoints()
            served: dict[str, int] = {}
            for checkpoint in others.values():
                served[checkpoint] = served.get(checkpoint, 0) + 1
            rank = sum(
                1
                for name, checkpoint in others.items()
                if held and name < self.name and self._same_checkpoint(checkpoint, held)
            )
            order = order_queues(
                heads,
                bands,
                held=held,
                max_wait=self._settings().affinity_max_wait,
                served_elsewhere=served,
                rank=rank,
                same=self._same_checkpoint,
            )
        except redis.RedisError:
            return  # RQ's own dequeue meets the outage and rides it out
        self._queue_checkpoints = runnable
        self._ordered_queues = [self._queue_named(name) for name in order] + fixed

    def _took(self, result: tuple[Job, Queue] | None) -> tuple[Job, Queue] | None:
        if result is not None:
            checkpoint = getattr(self, "_queue_checkpoints", {}).get(result[1].name)
            with contextlib.suppress(redis.RedisError):
                record_serving(self.connection, self.name, checkpoint)
        return result

    def _queue_named(self, name: str) -> Queue:
        cache: dict[str, Queue] = self.__dict__.setdefault("_queue_cache", {q.name: q for q in self.queues})
        if name not in cache:
            cache[name] = Queue(
                name, connection=self.connection, serializer=self.serializer, job_class=self.job_class
            )
        return cache[name]

    def _checkpoint_aliases(self) -> dict[str, str] | None:
        """Every name the WebUI knows each checkpoint by (lower-cased) -> its title, read at most
        every ``_ALIASES_TTL_S``; None while the WebUI has not answered (then nothing is excluded)."""
        now = time.monotonic()
        if now - getattr(self, "_aliases_at", -_ALIASES_TTL_S - 1) < _ALIASES_TTL_S:
            return getattr(self, "_aliases", None)
        self._aliases_at = now
        try:
            with WebUIClient.from_settings(self._settings(), read_timeout=30.0) as client:
                models = client.sd_models()
        except WebUIError as exc:
            self.log.info("Worker %s: could not read the WebUI's checkpoints (%s)", self.name, exc)
            self._aliases_at = now - _ALIASES_TTL_S + 10  # try again soon
            return getattr(self, "_aliases", None)
        aliases: dict[str, str] = {}
        for model in models:
            title = str(model.get("title") or model.get("model_name") or "")
            filename = str(model.get("filename") or "").replace("\\", "/").rsplit("/", 1)[-1]
            for alias in (title, checkpoint_name(title), str(model.get("model_name") or ""), filename):
                if alias:
                    aliases.setdefault(alias.lower(), title)
        self._aliases = aliases
        with contextlib.suppress(redis.RedisError):  # what this host can run, for the other workers
            self.connection.set(worker_models_key(self.name), json.dumps(sorted(aliases)), ex=900)
        return aliases

    def _checkpoints_nowhere(self, checkpoints: list[str]) -> set[str]:
        """Those of ``checkpoints`` that no other registered worker's WebUI lists (as last published)."""
        keys = [as_text(k) for k in self.connection.smembers(REDIS_WORKER_KEYS)]
        names = [
            k.removeprefix(self.redis_worker_namespace_prefix)
            for k in keys
            if not k.endswith(f":{self.name}")
        ]
        published = self.connection.mget([worker_models_key(n) for n in names]) if names else []
        known: set[str] = set()
        for raw in published:
            if raw is None:
                return set()  # a worker whose WebUI we do not know may have them
            with contextlib.suppress(ValueError, TypeError):
                known.update(json.loads(raw))
        return {c for c in checkpoints if checkpoint_name(c).lower() not in known}

    def _same_checkpoint(self, a: str, b: str) -> bool:
        aliases = getattr(self, "_aliases", None) or {}
        return bool(checkpoint_name(aliases.get(a.lower(), a)) == checkpoint_name(aliases.get(b.lower(), b)))

    def _others_checkpoints(self) -> dict[str, str]:
        """The checkpoint each other registered worker serves (its plan in hand), else holds."""
        keys = [as_text(k) for k in self.connection.smembers(REDIS_WORKER_KEYS)]
        names = [k.removeprefix(self.redis_worker_namespace_prefix) for k in keys]
        found: dict[str, str] = {}
        for name in names:
            if name == self.name:
                continue
            held = read_held(self.connection, name)
            checkpoint = held.serving or held.checkpoint
            if checkpoint:
                found[name] = checkpoint
        return found

    def _promote_due_retries(self, names: list[str]) -> None:
        """Enqueue the due retries of checkpoint queues (RQ's scheduler serves only the queues named
        when it started), under a short lock per queue so that one worker moves each."""
        now = time.monotonic()
        if not names or now - getattr(self, "_promoted_at", 0.0) < 1.0:
            return
        self._promoted_at = now
        stamp = current_timestamp()
        pipe = self.connection.pipeline(transaction=False)
        for name in names:
            pipe.zcount(ScheduledJobRegistry(name, connection=self.connection).key, 0, stamp)  # type: ignore[no-untyped-call]
        due = [name for name, count in zip(names, pipe.execute(), strict=True) if count]
        for name in due:
            if not self.connection.set(affinity_lock_key(name), self.name, nx=True, px=5000):
                continue
            registry = ScheduledJobRegistry(  # type: ignore[no-untyped-call]
                name, connection=self.connection, serializer=self.serializer, job_class=self.job_class
            )
            queue = self._queue_named(name)
            ids = registry.get_jobs_to_schedule(stamp)
            jobs = self.job_class.fetch_many(ids, connection=self.connection, serializer=self.serializer)
            with self.connection.pipeline() as p:
                for job in jobs:
                    if job is not None:
                        queue._enqueue_job(job, pipeline=p, at_front=job.should_enqueue_at_front())
                for job_id in ids:
                    registry.remove(job_id, pipeline=p)
                p.execute()
            self.connection.delete(affinity_lock_key(name))

    def clean_registries(self) -> None:
        """RQ's maintenance, on the checkpoint queues of the worker's bands too (abandoned jobs of a
        dead worker are found there, expired entries dropped)."""
        super().clean_registries()  # type: ignore[no-untyped-call]
        bands = [name for name in self.queue_names() if name in QUEUES]
        try:
            names = list(checkpoint_queues(self.connection, bands))
        except redis.RedisError:
            return
        for name in names:
            queue = self._queue_named(name)
            if queue.acquire_maintenance_lock():
                rq_clean_registries(queue, self._exc_handlers)
                queue.release_maintenance_lock()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ circuit breaker

    def _wait_for_webui(self) -> None:
        """While the breaker is open: no jobs; probe the WebUI with backoff until it answers.

        The backoff carries over from one pause to the next until a stage succeeds: a WebUI out of
        memory still answers the probe but fails every generation, and each failed trial must wait
        longer than the last (not hammer it, nor hand the same job back every few milliseconds)."""
        s = self._settings()
        breaker = WebUIBreaker(self.connection, self.name, threshold=s.webui_failure_threshold)
        if not breaker.seen_since_success():
            self._probe_delay = None  # a stage succeeded: the WebUI works again
        if not breaker.is_open():
            return
        self.log.warning(
            "Worker %s: %d WebUI failures in a row; taking no jobs until %s answers",
            self.name,
            breaker.failures(),
            redact_url(s.webui_url),
        )
        self.set_state(WorkerStatus.SUSPENDED)
        self.procline("WebUI down: probing " + redact_url(s.webui_url))  # type: ignore[no-untyped-call]
        previous = self._probe_delay
        delay = previous or s.webui_probe_interval
        wait_first = previous is not None  # the last trial after an answered probe failed again
        while not self._stop_requested:
            if wait_first:
                self.heartbeat()
                _sleep_unless(lambda: self._stop_requested, delay)
                delay = min(delay * 2, s.webui_probe_max)
                if self._stop_requested:
                    break
            wait_first = True
            self.heartbeat()
            try:
                probe_webui(s)
            except WebUIError as exc:
                self.log.info(
                    "Worker %s: WebUI still failing (%s); next probe in %.1f s", self.name, exc, delay
                )
                continue
            breaker.half_open()
            self._probe_delay = delay
            self.log.warning("Worker %s: the WebUI answers again; trying one job", self.name)
            return

    # ------------------------------------------------------------------ webhooks
    _webhooks: WebhookSender | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's, then the job's webhook (if its run left one): its end is recorded by now, RQ's
        status included, and a thread sends it while this worker takes its next job."""
        try:
            super().execute_job(job, queue)
        finally:
            self._send_webhook(job.id)

    def _send_webhook(self, job_id: str) -> None:
        s = self._settings()
        try:
            delivery = WebhookOutbox(self.connection, ttl=max(s.failure_ttl, s.result_ttl)).take(job_id)
        except redis.RedisError:
            self.log.warning("Worker %s: job %s: its webhook could not be read from Redis", self.name, job_id)
            return
        if delivery is None:
            return
        if self._webhooks is None:
            self._webhooks = WebhookSender(s)
        self._webhooks.send(*delivery)

    # ------------------------------------------------------------------ stopping
    def request_stop(self, signum: Any, frame: Any) -> None:
        if self.get_state() == WorkerStatus.BUSY:
            # The running job hands itself back after its current stage instead of running to its end.
            with contextlib.suppress(redis.RedisError):
                self.connection.set(stop_key(self.name), "1", ex=24 * 3600)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def unsubscribe(self) -> None:
        """RQ's unsubscribe, without its stall of up to a minute at shutdown.

        rq 2.12 sends UNSUBSCRIBE first and then stops its pubsub thread with redis-py's ``stop()``, which
        (redis-py 8) waits for the thread to end. When the reply reaches the thread before its run flag is
        cleared, the thread starts another ``get_message`` of ``sleep_time`` (60 s) and the worker hangs
        that long after "unsubscribing" on SIGTERM. Clearing the flag first (``stop(timeout=0)``) lets the
        reply end the read in progress, and the thread then exits at once.
        """
        thread = self.pubsub_thread
        if not thread:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        thread.stop(timeout=0)  # no new read starts; the one in progress ends with the reply below
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.unsubscribe()
        thread.join(timeout=2)
        with contextlib.suppress(redis.RedisError, OSError):
            self.pubsub.close()

    def teardown(self) -> None:
        if self._registration_stop is not None:
            self._registration_stop.set()
        with contextlib.suppress(redis.RedisError):
            self.connection.delete(stop_key(self.name))
            forget_worker(self.connection, self.name)
        if self._webhooks is not None:  # what is still waiting goes out, each within its deadline
            self._webhooks.close(timeout=self._settings().webhook_deadline + 1)
            self._webhooks = None
        super().teardown()  # type: ignore[no-untyped-call]

    # ------------------------------------------------------------------ hand-backs
    def perform_job(self, job: Job, queue: Queue) -> bool:
        if isinstance(job, StableNewJob):
            job.hands_back = True  # JobRun may hand it back (raise Requeued) instead of failing it
        token = _running_settings.set(self._settings())
        try:
            return bool(super().perform_job(job, queue))
        finally:
            _running_settings.reset(token)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if _handed_back(job) or _superseded(job):
            self.log.info("Worker %s: job %s handed back: %s", self.name, job.id, exc_info[1])
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        if _superseded(job):
            # A later run owns the job and its status: this run only leaves the started registry.
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe)
                pipe.execute()
            return
        if not _handed_back(job):
            super().handle_job_failure(job, queue, started_job_registry, exc_string)
            return
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe)
            hand_back(queue, job, pipe)
            if isinstance(job, StableNewJob):
                job._mirror_state(pipe)
            pipe.execute()


class StableNewWorker(StableNewBaseWorker, Worker):
    """RQ's forking worker with our start-up, breaker, stop and hand-back (see
    :class:`StableNewBaseWorker`): each job runs in a work horse. What a GPU host runs; from plain
    RQ: ``rq worker -w stablenew.jobs.rq_classes.StableNewWorker``."""


class StableNewSimpleWorker(StableNewBaseWorker, SimpleWorker):
    """RQ's ``SimpleWorker`` with the same start-up, breaker, stop and hand-back as
    :class:`StableNewWorker`, running each job in its own process: for tests (it works on fakeredis
    with ``work(burst=True)``) and for hosts where forking is not wanted."""


def _handed_back(job: Job) -> bool:
    """Whether ``job`` ended by :class:`Requeued` (it goes back to its queue, not to failed)."""
    return isinstance(job, StableNewJob) and isinstance(job.ended_by, Requeued)


def _superseded(job: Job) -> bool:
    """Whether this run of ``job`` was fenced off by a later run (which records the job's end)."""
    return isinstance(job, StableNewJob) and isinstance(job.ended_by, Superseded)


def _sleep_unless(stop: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))


def make_worker(
    connection: redis.Redis,
    queues: Sequence[str] = QUEUES,
    *,
    name: str | None = None,
    worker_class: type[BaseWorker] = StableNewWorker,
    settings: Settings | None = None,
) -> BaseWorker:
    """An RQ worker wired for stablenew: JSON serializer, allow-listed Job class, strict priority."""
    rq_queues = [
        Queue(q, connection=connection, serializer=JSONSerializer, job_class=StableNewJob) for q in queues
    ]
    worker = worker_class(
        rq_queues,
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        job_class=StableNewJob,
        maintenance_interval=60,
    )
    if settings is not None and isinstance(worker, StableNewBaseWorker):
        worker.settings = settings
    return worker


__all__ = [
    "MAX_JOB_DATA_BYTES",
    "PAUSED_POLL_SECONDS",
    "PausableQueue",
    "StableNewBaseWorker",
    "StableNewJob",
    "StableNewSimpleWorker",
    "StableNewWorker",
    "make_worker",
    "paused_queues",
    "running_worker_settings",
]
