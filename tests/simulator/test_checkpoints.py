"""The simulator swaps checkpoints like A1111: one loaded at a time, a wait to load another, counted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from stablenew.cli import main
from stablenew.cli.parser import build_parser
from stablenew.simulator import SimulatedWebUI

TXT2IMG, OPTIONS = "/sdapi/v1/txt2img", "/sdapi/v1/options"
BASE = "sd_xl_base_1.0.safetensors [31e35c80fc]"
REFINER = "sd_xl_refiner_1.0.safetensors [7440042bbd]"
V15 = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
SWAP_S = 0.3


@pytest.fixture
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI(swap_seconds=SWAP_S) as server:
        yield server


def generate(sim: SimulatedWebUI, checkpoint: str | None = None, *, restore: bool = False) -> dict[str, Any]:
    """A tiny txt2img asking for ``checkpoint`` as our client does; its ``info`` and the seconds it took."""
    body: dict[str, Any] = {"prompt": "p", "width": 16, "height": 16, "steps": 1}
    if checkpoint is not None:
        body["override_settings"] = {"sd_model_checkpoint": checkpoint}
        body["override_settings_restore_afterwards"] = restore
    started = time.monotonic()
    response = requests.post(sim.url + TXT2IMG, json=body, timeout=30)
    response.raise_for_status()
    info: dict[str, Any] = json.loads(response.json()["info"])
    info["took"] = time.monotonic() - started
    return info


def test_the_options_route_names_the_loaded_checkpoint(sim: SimulatedWebUI) -> None:
    assert requests.get(sim.url + OPTIONS, timeout=10).json()["sd_model_checkpoint"] == BASE

    generate(sim, REFINER)

    assert requests.get(sim.url + OPTIONS, timeout=10).json()["sd_model_checkpoint"] == REFINER


def test_a_request_for_another_checkpoint_waits_the_swap_and_keeps_it_loaded(sim: SimulatedWebUI) -> None:
    # When a generation asks for the refiner (not restored afterwards, as our client sends)
    info = generate(sim, REFINER)

    # Then it waited the swap, ran on the refiner, and the refiner stays loaded
    assert info["took"] >= SWAP_S
    assert info["sd_model_name"] == "sd_xl_refiner_1.0"
    assert sim.swaps == 1
    assert sim.loaded_checkpoints == [BASE, REFINER]
    assert generate(sim)["sd_model_name"] == "sd_xl_refiner_1.0"
    assert sim.swaps == 1


def test_asking_again_for_the_loaded_checkpoint_swaps_nothing(sim: SimulatedWebUI) -> None:
    generate(sim, BASE)
    assert sim.swaps == 0

    generate(sim, V15)
    generate(sim, V15)
    generate(sim, V15)

    assert sim.swaps == 1
    assert sim.loaded_checkpoints == [BASE, V15]


def test_a_checkpoint_is_matched_by_title_model_name_file_name_or_hash(sim: SimulatedWebUI) -> None:
    for name in ("sd_xl_refiner_1.0", "7440042bbd", "sd_xl_refiner_1.0.safetensors", REFINER):
        assert generate(sim, name)["sd_model_name"] == "sd_xl_refiner_1.0"

    assert sim.swaps == 1


def test_each_swap_is_counted_in_order(sim: SimulatedWebUI) -> None:
    for name in (REFINER, V15, V15, BASE, REFINER):
        generate(sim, name)

    assert sim.swaps == 4
    assert sim.loaded_checkpoints == [BASE, REFINER, V15, BASE, REFINER]


def test_an_unknown_checkpoint_name_keeps_the_loaded_one(sim: SimulatedWebUI) -> None:
    generate(sim, V15)

    info = generate(sim, "no-such-model.safetensors")

    assert info["sd_model_name"] == "v1-5-pruned-emaonly"
    assert sim.swaps == 1
    assert requests.get(sim.url + OPTIONS, timeout=10).json()["sd_model_checkpoint"] == V15


def test_a_restored_override_swaps_back_on_the_next_request(sim: SimulatedWebUI) -> None:
    # Given a request whose override is restored afterwards (A1111's default)
    assert generate(sim, REFINER, restore=True)["sd_model_name"] == "sd_xl_refiner_1.0"

    # When the next request names no checkpoint
    info = generate(sim)

    # Then A1111 loads the checkpoint in force again before it runs
    assert info["sd_model_name"] == "sd_xl_base_1.0"
    assert info["took"] >= SWAP_S
    assert sim.loaded_checkpoints == [BASE, REFINER, BASE]


def test_a_checkpoint_of_its_own_swap_time_overrides_the_default() -> None:
    # Given a quick default swap and a slow one for v1-5, named by its file name
    slow = 0.5
    with SimulatedWebUI(
        swap_seconds=0.0, swap_seconds_by_model={"v1-5-pruned-emaonly.safetensors": slow}
    ) as sim:
        # When a request swaps to the refiner, then to v1-5
        quick = generate(sim, REFINER)
        slow_one = generate(sim, V15)

    # Then only the swap to v1-5 waited its own time; both were counted
    assert slow_one["took"] >= slow
    assert quick["took"] < slow
    assert sim.swaps == 2


def test_stop_cuts_a_swap_short() -> None:
    sim = SimulatedWebUI(swap_seconds=30.0).start()
    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            generate(sim, REFINER)
            outcome.append(None)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    sim.stop()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert time.monotonic() - started < 10
    assert isinstance(outcome[0], requests.ConnectionError)
    assert sim.swaps == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"swap_seconds": -1.0}, "negative"),
        ({"swap_seconds_by_model": {"v1-5-pruned-emaonly": -1.0}}, "negative"),
        (
            {"swap_seconds_by_model": {"missing.safetensors": 2.0}},
            "no checkpoint named 'missing.safetensors'",
        ),
    ],
)
def test_a_bad_swap_time_is_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatedWebUI(**kwargs)


def test_the_simulator_command_reads_models_and_swap_times() -> None:
    args = build_parser().parse_args(
        [
            "simulator", "--models", "a.safetensors,b.ckpt", "--swap-seconds", "1.5",
            "--swap-seconds-for", "a.safetensors=5", "--swap-seconds-for", "b=0.25",
        ]
    )  # fmt: skip
    assert args.models == ["a.safetensors", "b.ckpt"]
    assert args.swap_seconds == 1.5
    assert dict(args.swap_seconds_for) == {"a.safetensors": 5.0, "b": 0.25}


@pytest.mark.parametrize("given", ["sdxl", "sdxl=", "=2", "sdxl=-1", "sdxl=soon"])
def test_the_simulator_command_refuses_a_malformed_swap_time(given: str) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["simulator", "--swap-seconds-for", given])
    assert exited.value.code == 2


def test_the_simulator_command_refuses_a_swap_time_for_a_checkpoint_it_does_not_offer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["simulator", "--port", "0", "--models", "a", "--swap-seconds-for", "b=1"])

    assert code == 2
    assert "no checkpoint named 'b'" in capsys.readouterr().err
