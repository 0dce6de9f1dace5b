"""The simulator package stands alone: a pinned public surface, no import of the rest of StableNew, no
private name crossing its modules, and public seams (recorder, images, per-route latency) for tests."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from PIL import Image

import stablenew.simulator as simulator
from stablenew.simulator import Images, RecordedRequest, SimulatedWebUI

PACKAGE = Path(simulator.__file__).parent
TXT2IMG, IMG2IMG = "/sdapi/v1/txt2img", "/sdapi/v1/img2img"

EXPECTED = [
    "A1111_VERSION", "ADETAILER_ARG_KEYS", "ADETAILER_VERSION", "DEFAULT_ADETAILER_MODELS", "DEFAULT_MODELS",
    "DEFAULT_SAMPLERS", "DEFAULT_SCHEDULERS", "DEFAULT_UPSCALERS", "DEFAULT_VAES", "GENERATION_ROUTES",
    "LATENT_UPSCALE_MODES", "SIGMA_MAX", "SIGMA_MIN", "Fault", "FaultKind", "Images", "RecordedRequest",
    "SimulatedWebUI", "refiner_switch_step", "serve", "step_sigmas", "timestep_of", "with_text_chunks",
]  # fmt: skip


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from X import names`` and ``import X`` in ``path``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def isort_style(name: str) -> tuple[bool, bool, str]:
    """Ruff's ``__all__`` order (RUF022): constants, then classes, then functions, each alphabetical."""
    return (not name.isupper(), not name[0].isupper(), name)


def test_the_public_names_are_sorted_pinned_and_resolve() -> None:
    assert simulator.__all__ == sorted(simulator.__all__, key=isort_style) == EXPECTED
    assert all(getattr(simulator, name) is not None for name in simulator.__all__)


def test_every_module_but_the_package_init_is_private() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert modules[0] == "__init__.py"
    assert all(name.startswith("_") and not name.startswith("__") for name in modules[1:]), modules


def test_no_module_imports_the_rest_of_stablenew_or_a_private_name_of_another() -> None:
    for path in PACKAGE.glob("*.py"):
        for module, names in imports_of(path):
            if module.startswith("stablenew"):
                assert module.startswith("stablenew.simulator."), (path.name, module)
                assert not [n for n in names if n.startswith("_")], (path.name, module, names)


def test_its_modules_import_each_other_without_a_circle() -> None:
    graph = {
        p.stem: {m.rsplit(".", 1)[1] for m, _ in imports_of(p) if m.startswith("stablenew.simulator.")}
        for p in PACKAGE.glob("_*.py")
        if p.name != "__init__.py"
    }
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name not in done:
            for imported in graph[name]:
                visit(imported, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def test_importing_the_simulator_loads_neither_the_client_nor_the_queue() -> None:
    code = (
        "import sys, stablenew.simulator; "
        "print(sorted(m for m in sys.modules if m.startswith(('stablenew.webui', 'stablenew.jobs', "
        "'stablenew.cli', 'rq', 'redis', 'pydantic'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_recorder_sees_every_request_with_its_status_and_answer() -> None:
    # Given a simulator whose recorder keeps its own log, and none of its own
    seen: list[RecordedRequest] = []
    with SimulatedWebUI(recorder=seen.append, keep_requests=False) as sim:
        # When a generation and an unknown route are asked for
        ok = requests.post(sim.url + TXT2IMG, json={"prompt": "p", "width": 32, "height": 32}, timeout=10)
        missing = requests.get(sim.url + "/nowhere", timeout=10)

    # Then the recorder saw both, answered, with the generation's answer; the simulator kept nothing
    assert [(r.method, r.path, r.status) for r in seen] == [("POST", TXT2IMG, 200), ("GET", "/nowhere", 404)]
    assert seen[0].answer == ok.json()
    assert seen[0].body["prompt"] == "p"
    assert seen[1].answer is None and missing.status_code == 404
    assert sim.requests == []


def test_the_request_log_keeps_no_answers() -> None:
    with SimulatedWebUI() as sim:
        requests.post(sim.url + TXT2IMG, json={"width": 32, "height": 32}, timeout=10)
    assert [(r.path, r.status, r.answer) for r in sim.requests] == [(TXT2IMG, 200, None)]


class StampImages(Images):
    """Answers one fixed PNG for every image and records what it was asked to decode and encode."""

    def __init__(self, png: str) -> None:
        super().__init__()
        self.png, self.decoded, self.encoded = png, 0, []

    def decode(self, encoded: Any) -> Image.Image:
        self.decoded += 1
        return super().decode(encoded)

    def encode(self, stage: str, width: int, height: int, seed: int, text: dict[str, str]) -> str:
        self.encoded.append((stage, width, height))
        return self.png


def test_an_images_strategy_decodes_inputs_and_encodes_answers() -> None:
    # Given a simulator with its own images strategy
    with SimulatedWebUI() as plain:
        first = requests.post(plain.url + TXT2IMG, json={"width": 24, "height": 16}, timeout=10).json()
    images = StampImages(first["images"][0])
    with SimulatedWebUI(images=images) as sim:
        # When an img2img runs on an image
        body = {"init_images": first["images"], "width": 40, "height": 48, "steps": 2}
        answer = requests.post(sim.url + IMG2IMG, json=body, timeout=10).json()

    # Then the strategy decoded the input and its encoding is what was answered
    assert images.decoded == 1
    assert images.encoded == [("img2img", 40, 48)]
    assert answer["images"] == [images.png]


def test_a_route_latency_slows_that_route_only() -> None:
    with SimulatedWebUI() as sim:
        sim.set_latency(0.4, route=IMG2IMG)
        started = time.monotonic()
        txt = requests.post(sim.url + TXT2IMG, json={"width": 16, "height": 16}, timeout=10).json()
        fast = time.monotonic() - started
        started = time.monotonic()
        body = {"init_images": txt["images"], "width": 16, "height": 16}
        requests.post(sim.url + IMG2IMG, json=body, timeout=10).raise_for_status()
        slow = time.monotonic() - started
    assert slow >= 0.4
    assert fast < 0.4
