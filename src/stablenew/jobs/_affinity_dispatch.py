"""Model-aware dispatch in the worker: which of its queues it dequeues from first.

:class:`AffinityDispatch` is the part of :class:`~stablenew.jobs.rq_classes.StableNewBaseWorker` that
reads what its WebUI holds and can run, orders the queues of its bands with
:func:`~stablenew.jobs.affinity.order_queues` before each dequeue, and does for the checkpoint queues
what RQ does only for the queues a worker was started with (due retries, registry maintenance).
docs/architecture.md describes the order.
"""

from __future__ import annotations

import contextlib
import json
import time

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.registry import clean_registries as rq_clean_registries
from rq.utils import as_text, current_timestamp
from rq.worker_registration import REDIS_WORKER_KEYS

from stablenew.errors import WebUIError
from stablenew.jobs.affinity import (
    checkpoint_name,
    checkpoint_queues,
    forget_worker,
    order_queues,
    queue_heads,
    read_held,
    record_loaded,
    record_serving,
)
from stablenew.jobs.keys import affinity_lock_key, worker_models_key
from stablenew.queues import QUEUES
from stablenew.webui import WebUIClient

from ._configured_worker import ConfiguredWorker

# A worker orders its queues again at least this often while it waits (whole seconds: BLPOP's).
AFFINITY_POLL_S = 1
# How long a worker trusts its list of its WebUI's checkpoints before reading it again.
_ALIASES_TTL_S = 300.0


class AffinityDispatch(ConfiguredWorker):
    """Orders the worker's queues by checkpoint affinity and serves its bands' checkpoint queues."""

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
