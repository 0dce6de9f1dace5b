"""The Redis/RQ boundary: producer (submit/status/cancel), worker (run_plan) and job state."""
