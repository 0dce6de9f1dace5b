"""stablenew's benchmark suite: our cost measured side by side against the bare engine and the floor.

Run ``python -m bench`` (``make bench``) for the full suite or ``python -m bench --smoke`` for a
tiny run that only proves every benchmark still works. Each benchmark runs its variants
interleaved (A B A B ...), reports medians and ratios against the targets of the performance
issue, and writes its raw numbers to ``bench/results/<name>.json``. See ``bench/README.md``.
"""
