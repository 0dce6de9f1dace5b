"""The Redis index of reusable stages: stage key -> the finished stage that made that request.

One JSON document (:class:`~stablenew.run.ReusableStage`) per stage key at
``stablenew:stage:<key>`` (see :mod:`keys`), written by the worker each time a stage finishes and
kept with the results' TTL. A record is only a pointer: :meth:`RedisStageIndex.find` trusts it
only while the job it names still holds that stage as done (its state has not expired, the stage is
not failed, canceled or running again) with the very files recorded; the worker then re-checks
every file's sha256 before it takes it.

A lookup is one round trip (a Lua script) that reads the record and the state of the job it names
and, for a worker's run, first checks that the run still owns its job (the fence every state save
has, :meth:`~stablenew.jobs.state.StateStore.save_if_owner`): a run another one took over links no
file into the job's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from stablenew.errors import Superseded
from stablenew.jobs.keys import owner_key, stage_index_key, state_key
from stablenew.run import DONE_STATUSES, JobState, ReusableStage

# KEYS: the record, the run's owner token (the record again when there is no run to fence).
# ARGV: the run's token ('' for none), the prefix of a state's key. The state's key is made here
# from the job id the record names, so it cannot be declared in KEYS (a single Redis, no cluster).
_LOOKUP = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0} end
local record = redis.call('GET', KEYS[1])
if not record then return {1} end
local ok, doc = pcall(cjson.decode, record)
if not ok or type(doc) ~= 'table' or type(doc['job_id']) ~= 'string' then return {1, record} end
local state = redis.call('GET', ARGV[2] .. doc['job_id'])
if not state then return {1, record} end
return {1, record, state}
"""


class RedisStageIndex:
    """A :class:`~stablenew.run.StageIndex` in Redis.

    ``owner`` (job id, ownership token) is the run looking stages up: :meth:`find` raises
    :class:`~stablenew.errors.Superseded` once a later run of that job holds the token.
    """

    def __init__(self, connection: redis.Redis, *, ttl: int, owner: tuple[str, int] | None = None) -> None:
        self.connection = connection
        self.ttl = ttl
        self.owner = owner
        self._script: Any = None

    def find(self, key: str) -> ReusableStage | None:
        """The stage recorded under ``key``, if the job it names still holds it done with those files.

        Raises:
            Superseded: the run given as ``owner`` no longer owns its job.
        """
        record_key = stage_index_key(key)
        fence = [owner_key(self.owner[0]), str(self.owner[1])] if self.owner else [record_key, ""]
        if self._script is None:
            self._script = self.connection.register_script(_LOOKUP)
        reply = self._script(keys=[record_key, fence[0]], args=[fence[1], state_key("")])
        if not reply[0]:
            assert self.owner is not None
            raise Superseded(
                f"run {self.owner[1]} of the job was taken over by a later run before it took a stage "
                "from another job",
                job_id=self.owner[0],
            )
        if len(reply) < 3:
            return None  # no record, or the job it names expired
        try:
            found = ReusableStage.from_json(reply[1])
            state = JobState.model_validate_json(reply[2])
        except (ValueError, TypeError, KeyError):
            return None
        if found.job_id != state.job_id or not 0 <= found.index < len(state.stages):
            return None  # the job's id was taken by another job since
        stage = state.stages[found.index]
        recorded = [(o.path, o.sha256) for o in found.outputs]
        if stage.status not in DONE_STATUSES or [(o.path, o.sha256) for o in stage.outputs] != recorded:
            return None
        return found

    def remember(self, stages: Mapping[str, ReusableStage]) -> None:
        """Record each stage under its key, in one round trip."""
        with self.connection.pipeline(transaction=False) as pipe:
            for key, stage in stages.items():
                pipe.set(stage_index_key(key), stage.to_json(), ex=self.ttl)
            pipe.execute()


__all__ = ["RedisStageIndex"]
