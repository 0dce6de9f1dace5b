"""Model-aware dispatch: a plan runs where its checkpoint is already loaded, without a central scheduler.

Swapping the loaded checkpoint costs an A1111 host 5-60 s, often more than the generation. So:

- **Queues.** The producer enqueues a plan that names a checkpoint (its first generation stage's
  ``model``) on an RQ queue of its band and checkpoint, ``<band>.ckpt.<slug>`` (e.g.
  ``default.ckpt.sdxl_base.safetensors``); a plan without one stays on the band itself (``high``,
  ``default``, ``low``). Every spelling A1111 treats as one checkpoint (the title with or without
  `` [hash]``) gets the same slug. These are plain RQ queues: ``rq info``, the dashboard, cancel,
  retry (on the job's origin queue) and hand-back work on them unchanged. Their names are kept in
  the hash :func:`~stablenew.jobs.keys.affinity_queues_key` (queue -> checkpoint) so that a worker
  listening on its bands finds the queues created after it started.
- **Ordering.** Before each dequeue, a worker orders the queues of its bands (:func:`order_queues`):
  bands in strict priority order; within a band, first any plan older than the max wait (oldest
  first: nothing starves), then the plans it can run without a swap (its checkpoint's queue and the
  band queue, oldest head first), then the other checkpoints by pressure (waiting plans x age of
  the oldest), a checkpoint no other worker holds before one that another worker already serves.
  A checkpoint its WebUI lacks is never listed. RQ then pops the first non-empty queue of that list.
- **What a worker holds** is kept under :func:`~stablenew.jobs.keys.worker_checkpoint_key`: the
  checkpoint its WebUI has loaded, how many swaps it made, and the checkpoint of the plan in hand.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from rq.queue import Queue

from stablenew.jobs.keys import affinity_queues_key, worker_checkpoint_key
from stablenew.pipeline import StageExecutionPlan, StageType
from stablenew.queues import QUEUES

SEPARATOR = ".ckpt."
_HASH_SUFFIX = re.compile(r"\s*\[[0-9A-Fa-f]{6,64}\]\s*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_MAX = 80
_QUEUE_PREFIX = Queue.redis_queue_namespace_prefix
# What one checkpoint swap is assumed to cost, in generations (A1111: 5-60 s against 5-30 s).
SWAP_IN_GENERATIONS = 5


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def checkpoint_name(name: str) -> str:
    """A checkpoint as A1111 matches it: its title without the `` [hash]`` A1111 appends."""
    return _HASH_SUFFIX.sub("", name.strip()).strip()


def checkpoint_slug(name: str) -> str:
    """A queue-name-safe slug of a checkpoint: readable, and the same for its title with or without
    `` [hash]``. A name that had to be changed (spaces, slashes, over 80 characters) gets 8 hex
    digits of its hash, so that two checkpoints never share a slug."""
    base = checkpoint_name(name)
    slug = _UNSAFE.sub("_", base).strip("._-")[:_SLUG_MAX] or "checkpoint"
    if slug != base:
        slug += "-" + hashlib.sha256(base.encode()).hexdigest()[:8]
    return slug


def affinity_queue(band: str, checkpoint: str | None) -> str:
    """The RQ queue of a plan of ``band`` for ``checkpoint`` (the band itself for none)."""
    if band not in QUEUES:
        raise ValueError(f"unknown queue {band!r} (known: {', '.join(QUEUES)})")
    return band if not checkpoint else f"{band}{SEPARATOR}{checkpoint_slug(checkpoint)}"


def band_of(queue_name: str) -> str | None:
    """The band (``high``/``default``/``low``) of a queue name, ours or a checkpoint's; else None."""
    band, sep, slug = queue_name.partition(SEPARATOR)
    if band not in QUEUES:
        return None
    if sep and not slug:
        return None
    return band


def plan_checkpoint(plan: StageExecutionPlan) -> str | None:
    """The checkpoint a plan asks for: its first generation stage's ``model`` (None: any will do)."""
    for stage in plan.stages:
        if stage.stage_type in (StageType.TXT2IMG, StageType.IMG2IMG):
            model = stage.config.get("model")
            return str(model) if model else None
    return None


def register_queue(pipe: Any, queue_name: str, checkpoint: str) -> None:
    """Make a checkpoint queue known to every worker (in ``pipe``)."""
    pipe.hset(affinity_queues_key(), queue_name, checkpoint_name(checkpoint))


def checkpoint_queues(connection: redis.Redis, bands: Iterable[str] | None = None) -> dict[str, str]:
    """Every checkpoint queue of ``bands`` (all when None), with its checkpoint."""
    raw: dict[bytes, bytes] = connection.hgetall(affinity_queues_key())  # type: ignore[assignment]
    wanted = set(bands) if bands is not None else set(QUEUES)
    found = {}
    for key, value in raw.items():
        name = key.decode(errors="replace")
        if band_of(name) in wanted and SEPARATOR in name:
            found[name] = value.decode(errors="replace")
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------------------------
# What each worker holds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldCheckpoint:
    """What one worker's WebUI has loaded, as the worker last saw it."""

    checkpoint: str | None
    swaps: int
    serving: str | None  # the checkpoint of the plan in hand (or last taken)


def read_held(connection: redis.Redis, worker: str) -> HeldCheckpoint:
    raw: dict[bytes, bytes] = connection.hgetall(worker_checkpoint_key(worker))  # type: ignore[assignment]
    data = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    swaps = data.get("swaps", "0")
    return HeldCheckpoint(
        checkpoint=data.get("checkpoint") or None,
        swaps=int(swaps) if swaps.isdigit() else 0,
        serving=data.get("serving") or None,
    )


_RECORD_LOADED = """
local old = redis.call('HGET', KEYS[1], 'checkpoint')
local swapped = 0
if old and old ~= ARGV[1] and ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'swaps', 1)
  swapped = 1
end
redis.call('HSET', KEYS[1], 'checkpoint', ARGV[1])
redis.call('HSETNX', KEYS[1], 'swaps', 0)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return swapped
"""

_HELD_TTL_S = 7 * 24 * 3600


def record_loaded(connection: redis.Redis, worker: str, checkpoint: str, *, count_swap: bool = True) -> bool:
    """Record that ``worker``'s WebUI now holds ``checkpoint``; a change counts one swap (unless
    ``count_swap`` is false: what the WebUI held when the worker started). Returns whether it swapped."""
    name = checkpoint_name(checkpoint)
    swapped = connection.eval(
        _RECORD_LOADED, 1, worker_checkpoint_key(worker), name, "1" if count_swap else "0", _HELD_TTL_S
    )
    return bool(swapped)


def record_serving(connection: redis.Redis, worker: str, checkpoint: str | None) -> None:
    """Record the checkpoint of the plan ``worker`` just took (empty for a plan without one)."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(worker_checkpoint_key(worker), "serving", checkpoint_name(checkpoint or ""))
        pipe.expire(worker_checkpoint_key(worker), _HELD_TTL_S)
        pipe.execute()


def checkpoint_served(connection: redis.Redis, checkpoint: str) -> list[str]:
    """The registered workers whose WebUI holds ``checkpoint`` or that serve its plans now."""
    wanted = checkpoint_name(checkpoint).lower()
    names = [
        (k.decode() if isinstance(k, bytes) else str(k)).removeprefix("rq:worker:")
        for k in connection.smembers("rq:workers")
    ]
    found = []
    for name in sorted(names):
        held = read_held(connection, name)
        if any(c and checkpoint_name(c).lower() == wanted for c in (held.checkpoint, held.serving)):
            found.append(name)
    return found


def forget_worker(connection: redis.Redis, worker: str) -> None:
    connection.delete(worker_checkpoint_key(worker))


# --------------------------------------------------------------------------------------------
# The order of a worker's queues
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueHead:
    """One candidate queue at the moment of a dequeue."""

    name: str
    band: str
    checkpoint: str | None  # None: the band queue (plans for any checkpoint)
    waiting: int
    age_s: float  # of its oldest plan (since it was submitted); 0 when empty


def _age(raw: Any, now: float) -> float:
    if not raw:
        return 0.0
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return max(0.0, now - stamp.timestamp())


def queue_heads(
    connection: redis.Redis, queues: Mapping[str, str | None], now: float | None = None
) -> list[QueueHead]:
    """Length and age of the oldest plan of each queue (``queues``: name -> checkpoint), in two round trips."""
    now = time.time() if now is None else now
    names = list(queues)
    pipe = connection.pipeline(transaction=False)
    for name in names:
        pipe.llen(_QUEUE_PREFIX + name)
        pipe.lindex(_QUEUE_PREFIX + name, 0)
    answers = pipe.execute()
    lengths = answers[0::2]
    heads = [h.decode() if isinstance(h, bytes) else h for h in answers[1::2]]
    pipe = connection.pipeline(transaction=False)
    for head in heads:
        # created_at, not enqueued_at: a plan handed back (a worker stopped or died) keeps its age
        pipe.hget(Queue.job_class.redis_job_namespace_prefix + head if head else "-", "created_at")
    stamps = pipe.execute()
    found = []
    for name, length, head, stamp in zip(names, lengths, heads, stamps, strict=True):
        band = band_of(name) or name
        found.append(
            QueueHead(
                name=name,
                band=band,
                checkpoint=queues[name],
                waiting=int(length or 0),
                age_s=_age(stamp, now) if head else 0.0,
            )
        )
    return found


def order_queues(
    heads: Sequence[QueueHead],
    bands: Sequence[str],
    *,
    held: str | None,
    max_wait: float,
    served_elsewhere: Mapping[str, int] | None = None,
    rank: int = 0,
    same: Any = None,
) -> list[str]:
    """The order a worker holding ``held`` should try ``heads`` in (see the module's docstring).

    ``served_elsewhere`` counts, per checkpoint, the other workers that hold or serve it; ``rank``
    is how many of those on the worker's own checkpoint come before it (by name): with rank r >= 1
    the worker is one too many there, and takes the r-th checkpoint no worker serves (by pressure)
    before its own, so that the swaps no schedule avoids are paid at once, in parallel. ``same``
    (a, b) -> bool says whether two checkpoint names are one checkpoint (default: equal names).
    ``max_wait`` <= 0 turns affinity off: oldest plan first across each band (FIFO).
    """
    equal = same or (lambda a, b: checkpoint_name(a) == checkpoint_name(b))
    elsewhere = served_elsewhere or {}
    ordered: list[str] = []
    for band in sorted(bands, key=lambda b: QUEUES.index(b) if b in QUEUES else len(QUEUES)):
        mine = [h for h in heads if h.band == band]
        waiting = [h for h in mine if h.waiting > 0]
        if max_wait <= 0:
            ordered += [h.name for h in sorted(waiting, key=lambda h: -h.age_s)]
        else:
            overdue = sorted((h for h in waiting if h.age_s > max_wait), key=lambda h: -h.age_s)
            local = sorted(
                (
                    h
                    for h in waiting
                    if h.checkpoint is None or (held is not None and equal(h.checkpoint, held))
                ),
                key=lambda h: -h.age_s,
            )

            def others(h: QueueHead) -> int:
                return sum(n for name, n in elsewhere.items() if h.checkpoint and equal(name, h.checkpoint))

            def pressure(h: QueueHead) -> tuple[int, float]:
                return (0 if others(h) == 0 else 1, -(h.waiting * h.age_s) / (1 + others(h)))

            # A checkpoint other workers serve is worth a swap only while its plans outnumber what
            # one more worker saves them: with o workers on it, W plans finish W/o - W/(o+1)
            # generations sooner, against one swap of about SWAP_IN_GENERATIONS generations.
            rest = sorted(
                (
                    h
                    for h in waiting
                    if h not in local
                    and (others(h) == 0 or h.waiting > SWAP_IN_GENERATIONS * others(h) * (others(h) + 1))
                ),
                key=pressure,
            )
            unserved = [h for h in rest if h.checkpoint and others(h) == 0]
            leave = [unserved[rank - 1]] if 1 <= rank <= len(unserved) else []
            ordered += [h.name for h in overdue + leave + local + rest]
        ordered += [h.name for h in mine if h.waiting == 0]
    return list(dict.fromkeys(ordered))


__all__ = [
    "SEPARATOR",
    "HeldCheckpoint",
    "QueueHead",
    "affinity_queue",
    "band_of",
    "checkpoint_name",
    "checkpoint_queues",
    "checkpoint_served",
    "checkpoint_slug",
    "forget_worker",
    "order_queues",
    "plan_checkpoint",
    "queue_heads",
    "read_held",
    "record_loaded",
    "record_serving",
    "register_queue",
]
