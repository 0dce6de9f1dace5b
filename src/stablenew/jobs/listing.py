"""``list``: recent jobs, newest first, from a time index kept beside RQ's own keys.

RQ keeps a list per queue (oldest first) and a registry per status, none ordered by submit time
across queues. So the producer records each job it enqueues in a sorted set scored by enqueue
time (one for all queues, one per queue) and, for ``grep``, its source name and prompts in a hash.
A page is read newest first from the index in batches; a status filter keeps the ids RQ files
under that status (its queue list or registry, read once per page), a text filter reads the texts
of a batch in one ``HMGET``, and only the jobs shown are read whole.

Paging uses a cursor, not an offset: the cursor names the last job shown (and its score), so the
next page starts right after it with ``ZREVRANK`` (O(log N)) however deep it is, and jobs submitted
meanwhile neither shift the page nor show up twice. An offset would have to re-run the filters over
every job before it on each page. Jobs enqueued before the index existed are added to it once, on
the first listing, from every queue a job can be on (the bands and their checkpoint queues).

The index keeps no job RQ no longer holds, or not for long. A listing drops the entries of expired
jobs it meets, and every write to the index (a submit, a batch, a retry) also sweeps: in the same
atomic step (the one Lua script that writes the entries, sent in the writer's own transaction: no
extra round trip, one command however many entries), it looks at the
next ``16 + 3 x (entries written)`` entries, oldest first from where the last write stopped and
round again once it reaches the newest, and drops those whose job hash RQ has deleted
(``rq:job:<id>`` no longer exists) from every index and the texts. An expired job's entry is so
dropped within one pass. A pass over N entries takes about N/19 single submits, which add as many
entries, so the index holds the jobs RQ holds plus about 5% more; with large batches only, at most
about 1.5 times as many plus one batch. That holds however long the deployment runs, whether or not
anyone lists, at a few microseconds of Redis time per entry looked at.

Not by age alone (``ZREMRANGEBYSCORE`` below now - (the longest TTL + the job timeout ceiling)): an
entry's score is its enqueue time, which does not tell whether RQ still holds the job. RQ sets no
TTL on a job while it waits (queued, scheduled, deferred) or runs (nor on one it cancels before it
ran: ``Producer.cancel`` gives that one ``failure_ttl``); a job may wait for days, be retried or
handed back, and then lives ``result_ttl`` / ``failure_ttl`` after it ends, while one that ended
early is gone long before that bound. So the
sweep asks what decides: does the job hash exist (what a listing asks too). Checking and removing
in one script is what makes it safe beside concurrent writers: an entry is only ever written after
its job hash (the producer enqueues first, or in the same transaction), so a job re-submitted under
the id of an expired one is either not yet there (its old entry goes, the new one is written after)
or there (the entry stays); two sweeps run one after the other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from stablenew.errors import ConfigError, FieldProblem
from stablenew.jobs.affinity import checkpoint_queues
from stablenew.jobs.keys import jobs_index_key, jobs_indexed_key, jobs_sweep_key, jobs_text_key
from stablenew.jobs.views import JobView
from stablenew.pipeline import StageExecutionPlan
from stablenew.queues import QUEUES

_TEXT_LIMIT = 2000
# How many index entries each write to the index sweeps: _SWEEP_STEP + _SWEEP_PER_ENTRY x the
# entries it writes (see the module's docstring).
_SWEEP_STEP, _SWEEP_PER_ENTRY = 16, 3
# The entries a write records, then one step of the sweep: one script, so that a submit's index
# write is one command of its transaction, not four. KEYS: the index of all queues, the texts, the
# sweep's mark, then each band's index (and the index of any other queue an entry names). ARGV:
# RQ's job key prefix, how many entries to look at, then four per entry to record: its job id, its
# score, which of KEYS is its queue's index, its text. Returns how many entries it dropped.
# The job hashes it checks are named by the entries it reads, so they cannot be declared in KEYS:
# fine on a single Redis (RQ needs one), not on a cluster.
_SWEEP = """
for i = 3, #ARGV, 4 do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('ZADD', KEYS[tonumber(ARGV[i + 2])], ARGV[i + 1], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 3])
end
local mark = redis.call('GET', KEYS[3])
local low = mark and ('(' .. mark) or '-inf'
local count = tonumber(ARGV[2])
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
local dropped = 0
for i = 1, #rows, 2 do
  local id = rows[i]
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    redis.call('ZREM', KEYS[1], id)
    for k = 4, #KEYS do
      redis.call('ZREM', KEYS[k], id)
    end
    redis.call('HDEL', KEYS[2], id)
    dropped = dropped + 1
  end
end
if #rows < 2 * count then
  redis.call('DEL', KEYS[3])
else
  redis.call('SET', KEYS[3], rows[#rows])
end
return dropped
"""
_BATCH_MIN, _BATCH_MAX = 100, 1000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Where RQ files a job of each status (a queued one sits in its queue's list). A stopped job is
# filed as failed. A job canceled while it ran is in the canceled registry (StableNewJob puts it
# there), so the rare view that reads "canceled" over RQ's "finished" is not listed as canceled.
_REGISTRIES: dict[str, type[BaseRegistry]] = {
    "started": StartedJobRegistry,
    "finished": FinishedJobRegistry,
    "failed": FailedJobRegistry,
    "stopped": FailedJobRegistry,
    "canceled": CanceledJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "deferred": DeferredJobRegistry,
}


@dataclass(frozen=True)
class JobPage:
    """One page of :meth:`Producer.list_page`: the views, newest first, and the cursor of the next
    page (``None`` on the last one)."""

    views: list[JobView]
    next_cursor: str | None


@dataclass(frozen=True)
class IndexEntry:
    """What the index records of one job when it is enqueued."""

    job_id: str
    queue: str
    text: str  # what ``grep`` searches: the config's source name and its prompts


def entry_for(job_id: str, queue: str, plan: StageExecutionPlan, source: str | None) -> IndexEntry:
    prompts = [str(s.config.get("prompt") or "") for s in plan.stages]
    parts = [source or "", *dict.fromkeys(p for p in prompts if p)]
    return IndexEntry(job_id, queue, "\n".join(parts)[:_TEXT_LIMIT])


def index_jobs(connection: Any, entries: Sequence[IndexEntry], *, at: float | None = None) -> None:
    """Record ``entries`` as enqueued at ``at`` (now), in their order, and sweep (:func:`sweep`):
    one command, a Lua script.

    ``connection`` may be a pipeline (then the caller executes it, and the entries land where it
    puts them: after their jobs). Scores are microseconds; a batch gets consecutive ones so that its
    order survives.
    """
    if not entries:
        return
    base = int((time.time() if at is None else at) * 1_000_000)
    keys = _sweep_keys()
    where = {key: place for place, key in enumerate(keys, start=1)}
    recorded: list[Any] = []
    for offset, entry in enumerate(entries):
        key = jobs_index_key(entry.queue)
        if key not in where:  # not a band (the index of every queue a job is on is written)
            keys.append(key)
            where[key] = len(keys)
        recorded += [entry.job_id, base + offset, where[key], entry.text]
    count = _SWEEP_STEP + _SWEEP_PER_ENTRY * len(entries)
    connection.eval(_SWEEP, len(keys), *keys, Job.redis_job_namespace_prefix, count, *recorded)


def sweep(connection: Any, count: int = _SWEEP_STEP) -> Any:
    """One step of the index's sweep: look at the next ``count`` entries (at least one; see the
    module's docstring) and drop those whose job RQ no longer holds. Returns how many it dropped
    (on a pipeline: the pipeline, and the count comes with its results)."""
    keys = _sweep_keys()
    return connection.eval(_SWEEP, len(keys), *keys, Job.redis_job_namespace_prefix, max(count, 1))


def _sweep_keys() -> list[str]:
    return [jobs_index_key(None), jobs_text_key(), jobs_sweep_key(), *(jobs_index_key(q) for q in QUEUES)]


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``2h``, ``90m``, ``1d12h`` (that long ago) or an ISO time (local time when it names no zone).

    Raises:
        ConfigError: neither.
    """
    now = now or datetime.now(UTC)
    spec = text.strip().lower()
    if spec and _DURATION.sub("", spec) == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(spec))
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        message = "must be a duration (30s, 15m, 2h, 1d, 1w, or combined: 1h30m) or an ISO time"
        raise ConfigError([FieldProblem("--since", message, text)]) from None
    return when if when.tzinfo else when.astimezone()


def _cursor(job_id: str, score: float) -> str:
    return f"{int(score)}:{job_id}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    score, _, job_id = cursor.partition(":")
    if not score.isdigit() or not job_id:
        raise ConfigError([FieldProblem("cursor", "is not a cursor printed by list", cursor)])
    return int(score), job_id


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class JobIndex:
    """The time index of one Redis: read in pages, pruned as it is read (and swept as it is
    written, :func:`sweep`)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def page_ids(
        self,
        *,
        queue: str | None,
        status: str | None,
        since: datetime | None,
        grep: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[str], str | None]:
        """Ids of up to ``limit`` jobs matching every filter, newest first, after ``cursor``; and
        the cursor of the next page. The caller confirms the status on each view (e.g. a stopped
        job sits among the failed ones)."""
        self.backfill()
        key = jobs_index_key(queue)
        floor = since.timestamp() * 1_000_000 if since else None
        members = self._with_status(status, queue) if status else None
        needle = grep.casefold() if grep else None
        batch = min(max(limit * 2, _BATCH_MIN), _BATCH_MAX)
        found: list[str] = []
        last: tuple[str, float] | None = _parse_cursor(cursor)[::-1] if cursor else None
        while True:
            rows = self._after(key, last, batch)
            complete = len(rows) < batch
            if floor is not None:
                kept = [(j, s) for j, s in rows if s >= floor]
                complete = complete or len(kept) < len(rows)
                rows = kept
            for job_id, score in self._matching(rows, members, needle):
                found.append(job_id)
                if len(found) == limit:
                    return found, _cursor(job_id, score)
            if complete or not rows:
                return found, None
            last = rows[-1]

    def _after(self, key: str, last: tuple[str, float] | None, count: int) -> list[tuple[str, float]]:
        """The next ``count`` entries, newest first, after ``last`` (found by id, else by score)."""
        start = 0
        if last is not None:
            job_id, score = last
            rank: Any = self.connection.zrevrank(key, job_id)
            if rank is not None:
                start = int(rank) + 1
            else:  # the cursor's job left the index: start below its score
                start = int(self.connection.zcount(key, f"({int(score)}", "+inf"))
        rows: Any = self.connection.zrevrange(key, start, start + count - 1, withscores=True)
        return [(_text(member), float(score)) for member, score in rows]

    def _with_status(self, status: str, queue: str | None) -> set[str]:
        """Ids RQ files under ``status`` (its queue lists for ``queued``, else its registry; a
        stopped job sits in the failed registry), in one queue or all. The caller confirms the
        status on each view."""
        kind = _REGISTRIES.get(status)
        ids: list[str] = []
        bands = [queue] if queue in QUEUES else ([] if queue else list(QUEUES))
        names = [queue] if queue and queue not in QUEUES else []
        # A band's plans for a checkpoint sit on its checkpoint queues (stablenew.jobs.affinity).
        names += [*bands, *checkpoint_queues(self.connection, bands)]
        for name in names:
            if kind is None:  # queued
                ids.extend(
                    _text(i)
                    for i in self.connection.lrange(f"{Queue.redis_queue_namespace_prefix}{name}", 0, -1)
                )
            else:
                ids.extend(kind(name, self.connection).get_job_ids(cleanup=False))
        return set(ids)

    def _matching(
        self, chunk: list[tuple[str, float]], members: set[str] | None, needle: str | None
    ) -> list[tuple[str, float]]:
        """The entries of ``chunk`` among ``members`` (a status filter) whose text holds
        ``needle``; the texts are read in one round trip."""
        if members is not None:
            chunk = [(job_id, score) for job_id, score in chunk if job_id in members]
        if not chunk or needle is None:
            return chunk
        texts = self.connection.hmget(jobs_text_key(), [job_id for job_id, _ in chunk])
        return [entry for entry, text in zip(chunk, texts, strict=True) if needle in _text(text).casefold()]

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop expired jobs from every index."""
        ids = list(job_ids)
        pipe = self.connection.pipeline(transaction=False)
        for name in (None, *QUEUES):
            pipe.zrem(jobs_index_key(name), *ids)
        pipe.hdel(jobs_text_key(), *ids)
        pipe.execute()

    def backfill(self) -> None:
        """Once per Redis: index the jobs RQ holds that no index knows (enqueued before it existed),
        by their enqueue time."""
        if self.connection.exists(jobs_indexed_key()):
            return
        from stablenew.jobs.backfill import existing_entries

        for entries in existing_entries(self.connection):
            pipe = self.connection.pipeline(transaction=False)
            for job_id, queue, text, when in entries:
                score = int(when.timestamp() * 1_000_000)
                pipe.zadd(jobs_index_key(None), {job_id: score}, nx=True)
                pipe.zadd(jobs_index_key(queue), {job_id: score}, nx=True)
                pipe.hsetnx(jobs_text_key(), job_id, text)
            pipe.execute()
        self.connection.set(jobs_indexed_key(), "1")


__all__ = ["IndexEntry", "JobIndex", "JobPage", "entry_for", "index_jobs", "parse_since", "sweep"]
