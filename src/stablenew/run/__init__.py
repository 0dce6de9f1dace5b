"""The run layer: one run of a plan on a WebUI, recorded as it goes, with or without a queue.

``stablenew run`` and the queue worker both run plans through :class:`PlanRun` (client, executor,
runner and :class:`RunRecorder` wired from settings once). Here too: the per-stage state model
(:class:`JobState`), the job's files on disk (:class:`JobOutputs`, :class:`StoredImage`), stage reuse across jobs by
stage key (:class:`ReusingExecutor`, :func:`stage_key`, the :class:`StageIndex` it looks in), which job ids are safe, and
the webhook that tells a plan's ``callback_url`` how its job ended (:func:`notify`). Nothing here
knows of Redis or RQ: where a queued job's state is stored is :mod:`stablenew.jobs`' business.
"""

from __future__ import annotations

from ._job_id import JOB_ID_PATTERN, is_valid_job_id
from ._notify import (
    DEFAULT_TOLERANCE_S,
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENTS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    callback_allowed,
    callback_host,
    callback_problem,
    callback_refusal,
    delivery_address,
    notify,
    signature,
    verify_signature,
)
from ._outputs import JobOutputs, OutputFile, StoredImage, atomic_write
from ._plan_run import PlanRun, ProgressListener
from ._recorder import PROGRESS_SAVE_INTERVAL_S, Persist, RunRecorder
from ._reuse import (
    ModelIdentity,
    ReusableStage,
    ReusingExecutor,
    StageIndex,
    request_identity,
    stage_key,
)
from ._state import (
    DONE_STATUSES,
    JobRunStatus,
    JobState,
    OutputRecord,
    ReusedFrom,
    StageState,
    StageStatus,
    plan_digest,
    utcnow,
)

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "DELIVERY_HEADER",
    "DONE_STATUSES",
    "EVENTS",
    "EVENT_HEADER",
    "JOB_ID_PATTERN",
    "PROGRESS_SAVE_INTERVAL_S",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "JobOutputs",
    "JobRunStatus",
    "JobState",
    "ModelIdentity",
    "OutputFile",
    "OutputRecord",
    "Persist",
    "PlanRun",
    "ProgressListener",
    "ReusableStage",
    "ReusedFrom",
    "ReusingExecutor",
    "RunRecorder",
    "StageIndex",
    "StageState",
    "StageStatus",
    "StoredImage",
    "atomic_write",
    "callback_allowed",
    "callback_host",
    "callback_problem",
    "callback_refusal",
    "delivery_address",
    "is_valid_job_id",
    "notify",
    "plan_digest",
    "request_identity",
    "signature",
    "stage_key",
    "utcnow",
    "verify_signature",
]
