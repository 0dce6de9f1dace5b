"""Floor (b) of the worker benchmark: the same HTTP calls and writes in a plain loop in one process.

Run as ``python -m bench.floor URL BODIES_FILE``; it then reads commands on stdin, one a line,
``COUNT OUT_DIR``, runs COUNT plans into OUT_DIR and answers ``{"seconds": ..., "bytes": ...}``.
It lives as long as the benchmark (like the workers it is compared with) and in its own process
(not the bench's, which serves the simulator), so it competes for the CPU as a worker does. One
session is reused across plans: the least a loop has to do.
"""

from __future__ import annotations

import json
import os
import sys
import time

import requests

from bench.baseline_job import four_calls


def main(argv: list[str]) -> None:
    url, bodies_file = argv[0], argv[1]
    with open(bodies_file) as handle:
        bodies = json.load(handle)
    with requests.Session() as session:
        for line in sys.stdin:
            count, out_dir = line.split(maxsplit=1)
            written = 0
            started = time.perf_counter()
            for index in range(int(count)):
                written += four_calls(session, url, bodies, os.path.join(out_dir.strip(), str(index)))
            print(json.dumps({"seconds": time.perf_counter() - started, "bytes": written}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
