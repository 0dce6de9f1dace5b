"""The Redis index of reusable stages: stage key -> the finished stage that made that request.

One JSON document (:class:`~stablenew.run.ReusableStage`) per stage key at
``stablenew:stage:<key>`` (see :mod:`keys`), written by the worker each time a stage finishes and
kept with the results' TTL. A record is only a pointer: :meth:`RedisStageIndex.find` trusts it
only while the job it names still holds that stage as done (its state has not expired, the stage is
not failed, canceled or running again) with the very files recorded; the worker then re-checks
every file's sha256 before it takes it.
"""

from __future__ import annotations

import redis

from stablenew.jobs.keys import stage_index_key
from stablenew.jobs.state import StateStore
from stablenew.run import DONE_STATUSES, ReusableStage


class RedisStageIndex:
    """A :class:`~stablenew.run.StageIndex` in Redis."""

    def __init__(self, connection: redis.Redis, *, ttl: int) -> None:
        self.connection = connection
        self.ttl = ttl
        self.store = StateStore(connection, ttl=ttl)

    def find(self, key: str) -> ReusableStage | None:
        raw = self.connection.get(stage_index_key(key))
        if raw is None:
            return None
        try:
            found = ReusableStage.from_json(raw)
        except (ValueError, TypeError, KeyError):
            return None
        state = self.store.load(found.job_id)
        if state is None or not 0 <= found.index < len(state.stages):
            return None  # the job expired (or its id was taken by another job since)
        stage = state.stages[found.index]
        recorded = [(o.path, o.sha256) for o in found.outputs]
        if stage.status not in DONE_STATUSES or [(o.path, o.sha256) for o in stage.outputs] != recorded:
            return None
        return found

    def remember(self, key: str, stage: ReusableStage) -> None:
        self.connection.set(stage_index_key(key), stage.to_json(), ex=self.ttl)


__all__ = ["RedisStageIndex"]
