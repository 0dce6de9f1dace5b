"""Benchmark 3: image persistence. ``JobOutputs.write_stage`` against a plain ``open().write()``.

Both start from the base64 string as the worker receives it from the WebUI, so the plain write
includes the decode a worker cannot skip (``base64.b64decode``, the stdlib default, not
validating). ``write_stage`` also validates the base64 strictly, hashes the bytes (sha256, the
resume checkpoint) and writes atomically (temporary file + rename). The target file is removed
before every write of either variant, so neither truncates an old file. Bytes on disk are read
back and compared with the bytes received. The ``parts`` rows time the pieces of ``write_stage``
one by one, to show where its extra time goes. The ratio is the median of per-round ratios (each
write next to its neighbour in time), in wall time as the target says, and in CPU time, which
leaves out the time the process waited for a core on this shared machine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.environment import noisy_png, scratch_dir
from bench.harness import BenchResult, Target, interleave, median
from stablenew.run import JobOutputs, atomic_write
from stablenew.simulator import with_text_chunks

NAME = "image_persistence"
JOB_ID = "bench-persist"


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _timed_both(action: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds: CPU time leaves out the time the process waited for the CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def _measure_size(side: int, reps: int, root: Path) -> dict[str, Any]:
    png = with_text_chunks(noisy_png(side, side), {"parameters": "bench image\nSteps: 30"})
    b64 = base64.b64encode(png).decode("ascii")
    outputs = JobOutputs(root, JOB_ID)
    ours_path = outputs.folder / "02-upscale-00.png"
    plain_path = root / "plain.png"

    def ours() -> tuple[float, float]:
        ours_path.unlink(missing_ok=True)
        return _timed_both(lambda: outputs.write_stage(2, "upscale", [b64], [1234]))

    def plain() -> tuple[float, float]:
        plain_path.unlink(missing_ok=True)

        def write() -> None:
            data = base64.b64decode(b64)
            with open(plain_path, "wb") as handle:
                handle.write(data)

        return _timed_both(write)

    ours(), plain()  # warm-up: first-touch costs of the folder and the allocator
    times = interleave({"ours": ours, "plain": plain}, reps)
    written = outputs.write_stage(2, "upscale", [b64], [1234])[0]
    on_disk, plain_disk = ours_path.read_bytes(), plain_path.read_bytes()
    decoded = base64.b64decode(b64)

    scratch = root / "part.png"
    data = base64.b64decode(b64)
    parts = {
        "b64decode (plain)": lambda: base64.b64decode(b64),
        "b64decode validate=True (ours)": lambda: base64.b64decode(b64, validate=True),
        "a2b_base64 strict_mode=True": lambda: binascii.a2b_base64(b64, strict_mode=True),
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
        "atomic_write (ours)": lambda: atomic_write(scratch, data),
        "open().write()": lambda: scratch.write_bytes(data),
    }
    part_times = interleave({name: lambda run=run: _timed(run) for name, run in parts.items()}, reps)
    return {
        "side": side,
        "png_bytes": len(png),
        "b64_chars": len(b64),
        "ours_s": [wall for wall, _ in times["ours"]],
        "plain_s": [wall for wall, _ in times["plain"]],
        "ours_cpu_s": [cpu for _, cpu in times["ours"]],
        "plain_cpu_s": [cpu for _, cpu in times["plain"]],
        "parts_s": part_times,
        "bytes_equal": on_disk == decoded == plain_disk == png,
        "sha256_equal": written.sha256 == hashlib.sha256(decoded).hexdigest(),
        "bytes_on_disk": len(on_disk),
    }


def run(smoke: bool) -> BenchResult:
    sides, reps = ((2048,), 3) if smoke else ((2048, 4096), 31)
    started = time.perf_counter()
    with scratch_dir(NAME) as root:
        measured = [_measure_size(side, reps, root) for side in sides]
    rows: list[list[Any]] = []
    targets = []
    notes = []
    for m in measured:
        ours, plain = median(m["ours_s"]), median(m["plain_s"])
        ratio = median([o / p for o, p in zip(m["ours_s"], m["plain_s"], strict=True)])
        cpu_ratio = median([o / p for o, p in zip(m["ours_cpu_s"], m["plain_cpu_s"], strict=True)])
        m["ratio"], m["cpu_ratio"] = ratio, cpu_ratio
        label = f"{m['side']}x{m['side']} ({m['png_bytes'] / 1e6:.1f} MB)"
        rows.append([f"{label} write_stage", ours * 1000, ratio, cpu_ratio, m["bytes_on_disk"]])
        rows.append([f"{label} open().write()", plain * 1000, 1.0, 1.0, m["bytes_on_disk"]])
        for part, values in m["parts_s"].items():
            rows.append([f"    part: {part}", median(values) * 1000, median(values) / plain, "", ""])
        targets.append(Target(f"write_stage / plain write at {m['side']}x{m['side']}", ratio, 1.2, "<="))
        verdict = "equal" if m["bytes_equal"] and m["sha256_equal"] else "DIFFERENT"
        notes.append(f"{m['side']}x{m['side']}: bytes on disk vs bytes received (and sha256): {verdict}")
        if verdict != "equal":
            targets.append(Target(f"bytes on disk == bytes received at {m['side']}", 0.0, 1.0, ">="))
    notes.append(
        "both variants include the base64 decode: the worker receives base64, so neither can skip it"
    )
    notes.append("x plain: median of the per-round ratios (each write_stage next to a plain write in time)")
    return BenchResult(
        name=NAME,
        title="3. image persistence: write_stage vs plain write, from base64",
        params={"reps": reps, "sizes": list(sides)},
        header=["what", "ms (median)", "x plain", "x plain (CPU)", "bytes on disk"],
        rows=rows,
        targets=targets,
        raw={"sizes": measured},
        notes=notes,
        seconds=time.perf_counter() - started,
    )
