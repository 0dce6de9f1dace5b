"""The pure core: config validation, the plan, the sequencer and the runner (no I/O)."""
