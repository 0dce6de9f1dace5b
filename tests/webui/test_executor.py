"""WebUIExecutor over real HTTP against the simulated A1111 WebUI (SimulatedWebUI on a free port).

Plans come from the example configs (shrunk to small images where the size does not matter) and run
through PipelineRunner + WebUIExecutor exactly as the worker runs them. Assertions read what the WebUI
received (``sim.requests``) and what came back, never the executor's internals.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from test_payloads import A1111_EXTRAS, A1111_IMG2IMG, A1111_OVERRIDE_OPTIONS, A1111_TXT2IMG, ADETAILER_ARGS

from stablenew.config_files import load_config_file
from stablenew.errors import (
    Canceled,
    ConfigError,
    WebUIError,
    WebUIHTTPError,
    WebUIRejected,
    WebUITimeout,
    WebUIUnavailable,
)
from stablenew.pipeline import (
    PipelineRunner,
    StageExecution,
    StageExecutionPlan,
    StageSequencer,
    StageType,
    build_stage_payload,
)
from stablenew.simulator import Fault, RecordedRequest, SimulatedWebUI
from stablenew.webui import WebUIClient, WebUIExecutor

EXAMPLES = Path(__file__).resolve().parents[2] / "producer" / "examples"
TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
EXTRAS = "/sdapi/v1/extra-single-image"
GENERATION_ROUTES = (TXT2IMG, IMG2IMG, EXTRAS)
ROUTE_FIELDS = {TXT2IMG: A1111_TXT2IMG, IMG2IMG: A1111_IMG2IMG, EXTRAS: A1111_EXTRAS}


# --- fixtures and helpers ----------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI() as server:
        yield server


@pytest.fixture
def client(sim: SimulatedWebUI) -> Iterator[WebUIClient]:
    with WebUIClient(sim.url, connect_timeout=2.0, read_timeout=20.0) as webui:
        yield webui


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 20)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def size_of(b64: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return image.size


def flat_config(**changes: Any) -> dict[str, Any]:
    """full_pipeline.json (txt2img + refiner + hires 1.5, img2img, upscale x2, ADetailer) at 128x128."""
    raw = load_config_file(EXAMPLES / "full_pipeline.json")
    raw["txt2img_config"] |= {"width": 128, "height": 128}
    raw.update(changes)
    return raw


def nested_config() -> dict[str, Any]:
    """stablenew_preset.json (txt2img + hires + refiner, upscale, ADetailer face + hands) at 128x128."""
    raw = load_config_file(EXAMPLES / "stablenew_preset.json")
    raw["execution_config"]["txt2img"] |= {"width": 128, "height": 128}
    return raw


def plan_of(config: dict[str, Any]) -> StageExecutionPlan:
    return StageSequencer().build_plan(config)


class RecordingHooks:
    """A StageHooks that keeps each stage's result, so tests can compare a stage's output with the next input."""

    def __init__(self) -> None:
        self.results: dict[StageType, dict[str, Any]] = {}

    def before_stage(self, index: int, stage: StageExecution) -> dict[str, Any] | None:
        return None

    def after_stage(self, index: int, stage: StageExecution, result: dict[str, Any]) -> None:
        # A copy: the runner hands a stage's images over to the next stage (it keeps no second reference).
        self.results[stage.stage_type] = {**result, "images": list(result["images"])}


def run_plan(
    client: WebUIClient, config: dict[str, Any], **executor_kwargs: Any
) -> tuple[dict[str, Any], RecordingHooks]:
    plan = plan_of(config)
    executor = WebUIExecutor(client, **executor_kwargs)
    executor.preflight(plan)
    hooks = RecordingHooks()
    return PipelineRunner(executor, hooks=hooks).run(plan), hooks


def generations(sim: SimulatedWebUI) -> list[RecordedRequest]:
    return [r for r in sim.requests if r.method == "POST" and r.path in GENERATION_ROUTES]


def stage_payload(config: dict[str, Any], stage_type: StageType, image: str | None = None) -> dict[str, Any]:
    """The neutral payload for one stage of ``config``, as if the previous stage returned ``image``."""
    plan = plan_of(config)
    index = plan.get_stage_types().index(stage_type)
    previous = None if image is None else {"images": [image], "meta": {"stage": "previous", "seed": 99}}
    return build_stage_payload(plan.stages[index], previous, index=index)


def unknown_keys(request: RecordedRequest) -> list[str]:
    """Every key of a recorded request that A1111 (or ADetailer) would silently ignore."""
    body = request.body
    unknown = [f"{request.path}:{key}" for key in set(body) - ROUTE_FIELDS[request.path]]
    unknown += [
        f"override_settings.{k}" for k in set(body.get("override_settings") or {}) - A1111_OVERRIDE_OPTIONS
    ]
    for tab in (body.get("alwayson_scripts") or {}).get("ADetailer", {}).get("args", [])[2:]:
        unknown += [f"ADetailer.{key}" for key in set(tab) - ADETAILER_ARGS]
    return unknown


# --- the full four-stage plan -----------------------------------------------------------------------------


def test_the_full_four_stage_plan_runs_over_http_in_canonical_order(sim, client):
    result, hooks = run_plan(client, flat_config())

    assert [r.path for r in generations(sim)] == [TXT2IMG, IMG2IMG, EXTRAS, IMG2IMG]
    assert [m["stage"] for m in result["meta"]["stages"]] == ["txt2img", "img2img", "upscale", "adetailer"]
    assert result["images"] == hooks.results[StageType.ADETAILER]["images"]
    assert len(result["images"]) == 1


def test_txt2img_sends_the_refiner_and_hires_and_the_webui_honours_them(sim, client):
    _, hooks = run_plan(client, flat_config())

    body = generations(sim)[0].body
    assert body["refiner_checkpoint"] == "sd_xl_refiner_1.0.safetensors [7440042bbd]"
    assert body["refiner_switch_at"] == 0.8  # refiner_switch_step 24 of 30 steps
    assert (body["enable_hr"], body["hr_scale"], body["hr_upscaler"]) == (True, 1.5, "Latent")
    assert body["denoising_strength"] == 0.45
    txt2img = hooks.results[StageType.TXT2IMG]
    assert size_of(txt2img["images"][0]) == (192, 192)  # 128 x hires 1.5
    extra = txt2img["meta"]["info"]["extra_generation_params"]
    assert extra["Refiner"] == "sd_xl_refiner_1.0 [7440042bbd]"
    assert extra["Refiner switch at"] == 0.8


def test_img2img_receives_the_txt2img_output_byte_for_byte(sim, client):
    _, hooks = run_plan(client, flat_config())

    txt2img_output = hooks.results[StageType.TXT2IMG]["images"][0]
    sent = generations(sim)[1].body["init_images"]
    assert sent == [txt2img_output]
    assert base64.b64decode(sent[0]) == base64.b64decode(txt2img_output)


def test_each_stage_hands_over_its_images_bytes_as_decoded_for_the_check(sim, client):
    _, hooks = run_plan(client, flat_config())

    for result in hooks.results.values():
        assert result["decoded"] == [base64.b64decode(image) for image in result["images"]]


def test_img2img_size_defaults_to_its_input_image_size(sim, client):
    _, hooks = run_plan(client, flat_config())

    body = generations(sim)[1].body
    assert (body["width"], body["height"]) == (192, 192)
    assert size_of(hooks.results[StageType.IMG2IMG]["images"][0]) == (192, 192)


def test_the_upscale_output_is_twice_the_size_of_its_input(sim, client):
    _, hooks = run_plan(client, flat_config())

    upscale_input = hooks.results[StageType.IMG2IMG]["images"][0]
    assert generations(sim)[2].body["image"] == upscale_input
    width, height = size_of(upscale_input)
    assert size_of(hooks.results[StageType.UPSCALE]["images"][0]) == (2 * width, 2 * height)


def test_the_adetailer_output_keeps_the_size_of_its_upscaled_input(sim, client):
    _, hooks = run_plan(client, flat_config())

    upscaled = hooks.results[StageType.UPSCALE]["images"][0]
    body = generations(sim)[3].body
    assert body["init_images"] == [upscaled]
    assert body["alwayson_scripts"]["ADetailer"]["args"][:2] == [True, True]
    assert size_of(hooks.results[StageType.ADETAILER]["images"][0]) == size_of(upscaled) == (384, 384)


@pytest.mark.parametrize("config", [flat_config, nested_config], ids=["flat", "nested"])
def test_recorded_requests_contain_no_key_a1111_or_adetailer_would_ignore(sim, client, config):
    run_plan(client, config())

    requests = generations(sim)
    assert len(requests) >= 3
    assert [key for request in requests for key in unknown_keys(request)] == []


@pytest.mark.parametrize("config", [flat_config, nested_config], ids=["flat", "nested"])
def test_adetailer_reports_no_silently_ignored_misuse_of_our_requests(sim, client, config):
    run_plan(client, config())

    assert any("alwayson_scripts" in r.body for r in generations(sim))
    assert sim.adetailer_problems == []


def test_the_nested_preset_runs_its_face_and_hands_tabs_in_one_adetailer_call(sim, client):
    _, hooks = run_plan(client, nested_config())

    body = generations(sim)[-1].body
    tabs = body["alwayson_scripts"]["ADetailer"]["args"][2:]
    assert [tab["ad_model"] for tab in tabs] == ["face_yolov8n.pt", "hand_yolov8n.pt"]
    assert size_of(hooks.results[StageType.ADETAILER]["images"][0]) == (384, 384)  # 128 x 1.5 x 2


def test_an_img2img_first_plan_sends_the_config_init_image(sim, client):
    raw = load_config_file(EXAMPLES / "img2img_upscale.json")

    _, hooks = run_plan(client, raw)

    init = plan_of(raw).stages[0].config["init_images"][0]
    img2img, _upscale = generations(sim)
    assert img2img.body["init_images"] == [init]
    assert (img2img.body["width"], img2img.body["height"]) == size_of(init) == (512, 512)
    assert size_of(hooks.results[StageType.UPSCALE]["images"][0]) == (1024, 1024)


def test_a_batch_runs_the_next_stage_once_per_image_in_order(sim, client):
    config = flat_config(
        img2img_enabled=False, adetailer_enabled=False, refiner_enabled=False, hires_enabled=False
    )
    config["txt2img_config"] |= {"batch_size": 2, "seed": 500}

    result, hooks = run_plan(client, config)

    txt2img_images = hooks.results[StageType.TXT2IMG]["images"]
    extras = [r for r in generations(sim) if r.path == EXTRAS]
    assert [r.body["image"] for r in extras] == txt2img_images
    assert len(result["images"]) == 2
    assert hooks.results[StageType.TXT2IMG]["meta"]["seeds"] == [500, 501]


# --- stage meta ------------------------------------------------------------------------------------------


def test_stage_meta_has_stage_endpoint_seed_timings_request_and_info(sim, client):
    _, hooks = run_plan(client, flat_config())

    meta = hooks.results[StageType.TXT2IMG]["meta"]
    assert (meta["stage"], meta["endpoint"], meta["seed"]) == ("txt2img", TXT2IMG, 1234)
    assert meta["started_at"] <= meta["ended_at"]
    assert meta["duration_s"] >= 0
    assert meta["requests"] == [generations(sim)[0].body]
    assert meta["info"]["sd_model_name"] == "sd_xl_base_1.0"
    assert meta["info"]["seed"] == 1234
    assert (meta["width"], meta["height"]) == (192, 192)


def test_stage_meta_records_requests_without_image_data(sim, client):
    _, hooks = run_plan(client, flat_config())

    for stage_type, result in hooks.results.items():
        text = json.dumps(result["meta"])
        assert len(text) < 5000, stage_type
        for image in result["images"]:
            assert image[:200] not in text, stage_type
    assert hooks.results[StageType.IMG2IMG]["meta"]["requests"][0]["init_images"] == ["<image 0>"]
    assert hooks.results[StageType.UPSCALE]["meta"]["requests"][0]["image"] == "<image>"


def test_adetailer_meta_keeps_our_own_request_not_the_dummy_pass_info(sim, client):
    _, hooks = run_plan(client, flat_config())

    meta = hooks.results[StageType.ADETAILER]["meta"]
    assert meta["info"] == {}
    assert meta["requests"][0]["alwayson_scripts"]["ADetailer"]["args"][2]["ad_model"] == "face_yolov8n.pt"


# --- seeds -------------------------------------------------------------------------------------------------


def test_a_random_seed_resolved_by_the_webui_chains_into_every_later_stage(sim, client):
    config = flat_config()
    config["txt2img_config"]["seed"] = -1

    result, _ = run_plan(client, config)

    txt2img, img2img, _upscale, adetailer = generations(sim)
    assert txt2img.body["seed"] == -1
    resolved = result["meta"]["stages"][0]["seed"]
    assert isinstance(resolved, int)
    assert resolved >= 0
    assert img2img.body["seed"] == resolved
    assert adetailer.body["seed"] == resolved
    assert [m["seed"] for m in result["meta"]["stages"]] == [resolved] * 4


def test_a_stage_with_its_own_seed_keeps_it_and_passes_it_on(sim, client):
    config = flat_config()
    config["img2img_config"]["seed"] = 77

    result, _ = run_plan(client, config)

    assert generations(sim)[1].body["seed"] == 77
    assert generations(sim)[3].body["seed"] == 77
    assert [m["seed"] for m in result["meta"]["stages"]] == [1234, 77, 77, 77]


# --- preflight ---------------------------------------------------------------------------------------------


def test_preflight_sends_the_webuis_exact_spelling_of_each_name(sim, client):
    config = flat_config()
    config["txt2img_config"] |= {"sampler_name": "dpm++ 2m", "scheduler": "Karras"}
    config["hires_upscaler_name"] = "latent"
    config["adetailer_config"]["adetailer_model"] = "FACE_YOLOV8N.PT"

    run_plan(client, config)

    txt2img, img2img, _upscale, adetailer = generations(sim)
    assert (
        txt2img.body["override_settings"]["sd_model_checkpoint"] == "sd_xl_base_1.0.safetensors [31e35c80fc]"
    )
    assert (
        img2img.body["override_settings"]["sd_model_checkpoint"] == "sd_xl_base_1.0.safetensors [31e35c80fc]"
    )
    assert (txt2img.body["sampler_name"], txt2img.body["scheduler"]) == ("DPM++ 2M", "karras")
    assert txt2img.body["hr_upscaler"] == "Latent"
    assert txt2img.body["refiner_checkpoint"] == "sd_xl_refiner_1.0.safetensors [7440042bbd]"
    assert adetailer.body["alwayson_scripts"]["ADetailer"]["args"][2]["ad_model"] == "face_yolov8n.pt"
    assert sim.adetailer_problems == []


def test_the_webui_reports_the_checkpoint_preflight_resolved(sim, client):
    _, hooks = run_plan(client, flat_config())

    infotext = hooks.results[StageType.TXT2IMG]["meta"]["info"]["infotexts"][0]
    assert "Model: sd_xl_base_1.0" in infotext
    assert "Schedule type: Karras" in infotext  # "karras" was understood, not replaced by Automatic


def set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


# what is missing -> (config key, the name the WebUI lacks, field named in the error, a name it lists)
MISSING = {
    "checkpoint": ("txt2img_config.model", "sd_xl_turbo.safetensors", "txt2img.model", "sd_xl_base_1.0"),
    "sampler": ("txt2img_config.sampler_name", "DPM++ 3M", "txt2img.sampler_name", "Euler a"),
    "scheduler": ("txt2img_config.scheduler", "Laplace", "txt2img.scheduler", "karras"),
    "img2img sampler": ("img2img_config.sampler_name", "DPM++ 4M", "img2img.sampler_name", "DDIM"),
    "upscaler": ("upscale_config.upscaler", "4x-Foolhardy", "upscale.upscaler", "R-ESRGAN 4x+"),
    "hires upscaler": ("hires_upscaler_name", "Latent (bogus)", "hires.upscaler", "Latent (antialiased)"),
    "refiner": ("refiner_model_name", "sd_xl_refiner_0.9", "refiner.model_name", "sd_xl_refiner_1.0"),
    "adetailer model": (
        "adetailer_config.adetailer_model",
        "face_yolov9c.pt",
        "adetailer.face.model",
        "face_yolov8n.pt",
    ),
    "adetailer sampler": (
        "adetailer_config.adetailer_sampler",
        "DPM++ 4M",
        "adetailer.face.sampler",
        "DPM++ 2M SDE",
    ),
}


@pytest.mark.parametrize("missing", MISSING, ids=list(MISSING))
def test_preflight_rejects_a_name_the_webui_lacks_naming_the_field_and_what_exists(sim, client, missing):
    path, bad_name, field, existing = MISSING[missing]
    config = flat_config()
    set_path(config, path, bad_name)

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, config)

    message = str(caught.value)
    assert field in message
    assert repr(bad_name) in message
    assert existing in message
    assert generations(sim) == []


def test_preflight_rejection_names_the_stage_it_concerns(sim, client):
    config = flat_config()
    config["upscale_config"]["upscaler"] = "4x-Foolhardy"

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, config)

    assert caught.value.stage == "upscale"


def test_preflight_rejects_an_unknown_hands_model(sim, client):
    raw = nested_config()
    raw["execution_config"]["adetailer"]["adetailer_hands_model"] = "hand_yolov9.pt"

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, raw)

    assert "adetailer.hands.model" in str(caught.value)
    assert "hand_yolov8n.pt" in str(caught.value)
    assert generations(sim) == []


def test_preflight_refuses_more_adetailer_passes_than_the_webui_takes_tabs():
    """A WebUI whose ADetailer "Max tabs" is 1 would drop the hands tab without a word."""
    with SimulatedWebUI(adetailer_max_tabs=1) as one_tab, WebUIClient(one_tab.url) as one_tab_client:
        with pytest.raises(WebUIRejected) as caught:
            run_plan(one_tab_client, nested_config())

        assert caught.value.field == "adetailer.hands"
        assert "Max tabs" in str(caught.value)
        assert generations(one_tab) == []
        assert any(r.path == "/sdapi/v1/script-info" for r in one_tab.requests)


def test_a_plan_with_as_many_adetailer_passes_as_the_webui_takes_tabs_runs():
    with SimulatedWebUI(adetailer_max_tabs=2) as two_tabs, WebUIClient(two_tabs.url) as two_tabs_client:
        run_plan(two_tabs_client, nested_config())

        (detail,) = [r for r in generations(two_tabs) if "alwayson_scripts" in r.body]
        assert len(detail.body["alwayson_scripts"]["ADetailer"]["args"]) == 4
        assert two_tabs.adetailer_problems == []


def test_preflight_checks_an_ad_model_given_as_an_ad_passthrough(sim, client):
    """``ad_model`` in the config overrides the face pass's model in the tab: it must exist too."""
    raw = nested_config()
    raw["execution_config"]["adetailer"]["ad_model"] = "face_yolov9c.pt"

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, raw)

    assert "face_yolov9c.pt" in str(caught.value)
    assert "adetailer.face" in str(caught.value)
    assert generations(sim) == []


def test_preflight_checks_an_ad_sampler_given_as_an_ad_passthrough(sim, client):
    raw = nested_config()
    raw["execution_config"]["adetailer"] |= {"ad_use_sampler": True, "ad_sampler": "DPM++ 4M"}

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, raw)

    assert "adetailer.face.ad_sampler" in str(caught.value)
    assert "'DPM++ 4M'" in str(caught.value)
    assert generations(sim) == []


def test_preflight_checks_the_scheduler_of_the_adetailer_main_pass(sim, client):
    """A plan from the queue is not always the sequencer's: its ADetailer base may name its own scheduler."""
    data = json.loads(plan_of(flat_config()).to_json())
    data["stages"][3]["config"]["base"]["scheduler"] = "Laplace"
    plan = StageExecutionPlan.from_json(data)

    with pytest.raises(WebUIRejected) as caught:
        WebUIExecutor(client).preflight(plan)

    assert "adetailer.base.scheduler" in str(caught.value)
    assert "karras" in str(caught.value)


def test_preflight_rejects_an_adetailer_plan_when_adetailer_is_not_installed(client):
    with SimulatedWebUI(adetailer_installed=False) as bare, WebUIClient(bare.url) as bare_client:
        with pytest.raises(WebUIRejected) as caught:
            run_plan(bare_client, flat_config())

        assert "ADetailer is not installed" in str(caught.value)
        assert caught.value.stage == "adetailer"
        assert generations(bare) == []


def test_a_plan_without_adetailer_passes_preflight_when_adetailer_is_not_installed():
    with SimulatedWebUI(adetailer_installed=False) as bare, WebUIClient(bare.url) as bare_client:
        result, _ = run_plan(bare_client, flat_config(adetailer_enabled=False))

        assert [m["stage"] for m in result["meta"]["stages"]] == ["txt2img", "img2img", "upscale"]
        assert not any(r.path.startswith("/adetailer/") for r in bare.requests)


def test_preflight_reads_the_webui_inventory_once_for_several_plans(sim, client):
    executor = WebUIExecutor(client)
    plan = plan_of(flat_config())

    executor.preflight(plan)
    executor.preflight(plan)
    executor.preflight(plan_of(nested_config()))

    lookups = [r.path for r in sim.requests if r.method == "GET"]
    assert lookups.count("/sdapi/v1/sd-models") == 1
    assert lookups.count("/adetailer/v1/ad_model") == 1


def test_preflight_on_a_stopped_webui_is_unavailable(sim, client):
    sim.stop()

    with pytest.raises(WebUIUnavailable):
        WebUIExecutor(client).preflight(plan_of(flat_config()))


# --- progress and interrupt --------------------------------------------------------------------------------


def test_progress_callbacks_arrive_while_a_slow_stage_runs(sim, client):
    seen: list[tuple[StageType, float]] = []
    sim.set_latency(0.4)
    executor = WebUIExecutor(client, progress_interval=0.02, on_progress=lambda s, f: seen.append((s, f)))

    executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(hires_enabled=False), StageType.TXT2IMG))

    assert seen
    assert {stage for stage, _ in seen} == {StageType.TXT2IMG}
    assert all(0.0 <= fraction <= 1.0 for _, fraction in seen)
    assert any(0.0 < fraction < 1.0 for _, fraction in seen)
    polls = [r for r in sim.requests if r.path == "/sdapi/v1/progress"]
    assert polls
    assert all(r.query == "skip_current_image=true" for r in polls)


def test_progress_over_several_input_images_covers_the_whole_stage(sim, client):
    seen: list[float] = []
    sim.set_latency(0.25)
    executor = WebUIExecutor(client, progress_interval=0.02, on_progress=lambda s, f: seen.append(f))
    payload = stage_payload(flat_config(), StageType.IMG2IMG, png_b64(64, 64))
    payload["input_images"] *= 2

    result = executor.run_stage(StageType.IMG2IMG, payload)

    assert len(result["images"]) == 2
    assert any(0.0 < fraction < 0.5 for fraction in seen)  # the first of two images reports 0..0.5
    assert any(fraction > 0.5 for fraction in seen)  # the second 0.5..1
    assert all(0.0 <= fraction <= 1.0 for fraction in seen)


def test_no_progress_is_polled_without_a_callback_or_cancel_check(sim, client):
    sim.set_latency(0.2)
    executor = WebUIExecutor(client, progress_interval=0.02)

    executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))

    assert not [r for r in sim.requests if r.path == "/sdapi/v1/progress"]


@pytest.mark.timeout(20)
def test_a_cancel_request_interrupts_the_running_stage_and_raises_canceled(sim, client):
    sim.set_latency(60)  # without the interrupt, this test would time out
    checks: list[int] = []

    def should_cancel() -> bool:
        checks.append(1)
        return len(checks) >= 2

    executor = WebUIExecutor(client, progress_interval=0.02, should_cancel=should_cancel)

    with pytest.raises(Canceled):
        executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))

    assert sim.interrupted_count == 1


@pytest.mark.timeout(20)
def test_a_failing_progress_callback_does_not_stop_cancel_from_working(sim, client):
    sim.set_latency(60)
    checks: list[int] = []

    def broken_progress(stage: StageType, fraction: float) -> None:
        raise RuntimeError("state store unavailable")

    def should_cancel() -> bool:
        checks.append(1)
        return len(checks) >= 3

    executor = WebUIExecutor(
        client, progress_interval=0.02, on_progress=broken_progress, should_cancel=should_cancel
    )

    with pytest.raises(Canceled):
        executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))

    assert sim.interrupted_count == 1


@pytest.mark.timeout(30)
def test_a_cancel_never_interrupts_another_clients_generation_and_stops_ours_once_it_runs(sim, client):
    sim.set_latency(0.8)
    other: list[Any] = []
    other_body = {"width": 64, "height": 64, "force_task_id": "task(someone-else)"}
    someone = threading.Thread(
        target=lambda: other.append(requests.post(sim.url + TXT2IMG, json=other_body, timeout=20))
    )
    someone.start()
    while not client.progress()["state"]["job_count"]:
        threading.Event().wait(0.01)
    sim.set_latency(60)  # ours, once it runs, would take a minute without the interrupt
    executor = WebUIExecutor(client, progress_interval=0.02, should_cancel=lambda: True)

    with pytest.raises(Canceled):
        executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))
    someone.join(timeout=5)

    assert other[0].status_code == 200
    assert sim.interrupted_count == 1
    (ours,) = [r for r in generations(sim) if r.body.get("force_task_id", "").startswith("task(stablenew-")]
    asked = [r.body["id_task"] for r in sim.requests if r.path == "/internal/progress"]
    assert set(asked) == {ours.body["force_task_id"]}
    (interrupt,) = [r for r in sim.requests if r.path == "/sdapi/v1/interrupt"]
    assert interrupt.time - generations(sim)[0].time >= 0.8  # the other one ran its full time first


@pytest.mark.timeout(30)
def test_interrupt_own_leaves_another_clients_generation_alone_and_stops_ours(sim, client):
    sim.set_latency(60)
    other: list[Any] = []
    other_body = {"width": 64, "height": 64, "force_task_id": "task(someone-else)"}
    someone = threading.Thread(
        target=lambda: other.append(requests.post(sim.url + TXT2IMG, json=other_body, timeout=20))
    )
    someone.start()
    while not client.progress()["state"]["job_count"]:
        threading.Event().wait(0.01)
    executor = WebUIExecutor(client)
    payload = stage_payload(flat_config(), StageType.TXT2IMG)
    ours = threading.Thread(target=lambda: executor.run_stage(StageType.TXT2IMG, payload))
    ours.start()
    while not [r for r in generations(sim) if r.body.get("force_task_id", "").startswith("task(stablenew-")]:
        threading.Event().wait(0.01)
    threading.Event().wait(0.1)  # ours now waits on the WebUI's queue lock

    assert executor.interrupt_own() is False
    assert sim.interrupted_count == 0
    executor.interrupt()  # the test stands in for the other client, which stops its own
    someone.join(timeout=5)
    while not executor.interrupt_own():  # ours begins once the other's ended
        threading.Event().wait(0.02)
    ours.join(timeout=5)

    assert not ours.is_alive()
    assert sim.interrupted_count == 2


@pytest.mark.timeout(20)
def test_a_cancel_on_a_webui_that_cannot_tell_requests_apart_lets_the_call_end_and_discards_it():
    with SimulatedWebUI(nowebui=True) as api_only, WebUIClient(api_only.url) as api_client:
        api_only.set_latency(0.5)
        executor = WebUIExecutor(api_client, progress_interval=0.02, should_cancel=lambda: True)

        with pytest.raises(Canceled):
            executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))

        assert api_only.interrupted_count == 0
        assert [r.status for r in generations(api_only)] == [200]


def test_adetailer_progress_leaves_out_the_dummy_pass_and_follows_the_masks(client):
    seen: list[float] = []
    with SimulatedWebUI(adetailer_masks=2) as masks, WebUIClient(masks.url) as masks_client:
        masks.set_latency(0.8)
        payload = stage_payload(flat_config(), StageType.ADETAILER, png_b64(64, 64))
        payload["config"]["base"]["steps"] = 1
        payload["config"]["face"]["steps"] = 1
        executor = WebUIExecutor(
            masks_client, progress_interval=0.01, on_progress=lambda s, f: seen.append(f)
        )

        executor.run_stage(StageType.ADETAILER, payload)

    assert seen
    assert seen == sorted(seen)  # one tab: the real work only rises
    first_full = next((i for i, f in enumerate(seen) if f >= 0.99), len(seen))
    assert any(0.25 <= f < 0.99 for f in seen[:first_full])  # 1 of 2 masks done came before "done"
    assert seen[0] < 0.25  # the dummy pass and detection are not shown as done


@pytest.mark.timeout(20)
def test_interrupt_stops_whatever_the_webui_is_generating(sim, client):
    sim.set_latency(60)
    executor = WebUIExecutor(client)
    outcome: list[Any] = []
    payload = stage_payload(flat_config(), StageType.TXT2IMG)
    worker = threading.Thread(target=lambda: outcome.append(executor.run_stage(StageType.TXT2IMG, payload)))
    worker.start()
    while not client.progress()["state"]["job_count"]:
        threading.Event().wait(0.01)

    executor.interrupt()
    worker.join(timeout=15)

    assert not worker.is_alive()
    assert sim.interrupted_count == 1
    assert len(outcome) == 1  # A1111 answers an interrupted call with its partial output


def test_a_cancel_seen_only_after_the_webui_answered_still_discards_the_stage(sim, client):
    executor = WebUIExecutor(client, progress_interval=30, should_cancel=lambda: True)

    with pytest.raises(Canceled):
        executor.run_stage(StageType.TXT2IMG, stage_payload(flat_config(), StageType.TXT2IMG))

    assert sim.interrupted_count == 0  # nothing ran any more when the cancel was seen


# --- faults ------------------------------------------------------------------------------------------------

FAULTS = {
    "500": (Fault("status", status=500), WebUIHTTPError, 500),
    "503": (Fault("status", status=503), WebUIHTTPError, 503),
    "422": (Fault("status", status=422), WebUIRejected, 422),
    "404": (Fault("status", status=404), WebUIRejected, 404),
    "hang": (Fault("hang", seconds=10), WebUITimeout, None),
    "malformed_json": (Fault("malformed_json"), WebUIHTTPError, 200),
    "bad_base64": (Fault("bad_base64"), WebUIHTTPError, 200),
    "close": (Fault("close"), WebUIUnavailable, None),
    "no_images": (Fault("no_images"), WebUIHTTPError, 200),
}
STAGE_INPUT = png_b64(64, 64)


@pytest.mark.parametrize("stage_type", list(StageType), ids=[s.value for s in StageType])
@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_each_injected_fault_maps_to_its_error_with_the_stage_set(sim, fault, stage_type):
    injected, error, status = FAULTS[fault]
    sim.inject(injected)
    image = None if stage_type is StageType.TXT2IMG else STAGE_INPUT
    payload = stage_payload(flat_config(), stage_type, image)

    with (
        WebUIClient(sim.url, connect_timeout=2.0, read_timeout=0.3) as short_client,
        pytest.raises(error) as caught,
    ):
        WebUIExecutor(short_client).run_stage(stage_type, payload)

    assert type(caught.value) is error
    assert caught.value.stage == stage_type.value
    assert getattr(caught.value, "status", None) == status


def test_an_error_after_a_fault_clears_lets_the_same_executor_run_again(sim, client):
    executor = WebUIExecutor(client)
    payload = stage_payload(flat_config(), StageType.TXT2IMG)
    sim.inject(Fault("status", status=503))

    with pytest.raises(WebUIHTTPError):
        executor.run_stage(StageType.TXT2IMG, payload)
    result = executor.run_stage(StageType.TXT2IMG, payload)

    assert len(result["images"]) == 1


def test_a_stopped_webui_makes_the_stage_unavailable_with_the_stage_set(sim, client):
    payload = stage_payload(flat_config(), StageType.IMG2IMG, STAGE_INPUT)
    sim.stop()

    with pytest.raises(WebUIUnavailable) as caught:
        WebUIExecutor(client).run_stage(StageType.IMG2IMG, payload)

    assert caught.value.stage == "img2img"
    assert isinstance(caught.value, WebUIError)


# --- a stage without images is a failure -------------------------------------------------------------------


@pytest.mark.parametrize("failing", [TXT2IMG, IMG2IMG], ids=["txt2img", "img2img"])
def test_a_stage_that_returns_no_images_fails_and_the_next_stage_never_runs(sim, client, failing):
    sim.inject(Fault("no_images", route=failing))
    stage = "txt2img" if failing == TXT2IMG else "img2img"

    with pytest.raises(WebUIHTTPError) as caught:
        run_plan(client, flat_config())

    assert caught.value.stage == stage
    # Transient: A1111 answers an interrupted generation this way, and the next try may work.
    assert (caught.value.status, caught.value.transient) == (200, True)
    assert "returned no images" in str(caught.value)
    assert [r.path for r in generations(sim)][-1] == failing  # nothing was sent after it


# --- settings that must not leak between jobs ----------------------------------------------------------------


def test_the_clip_skip_and_vae_of_one_job_do_not_leak_into_the_next(sim, client):
    """A1111 keeps overrides (restore_afterwards false): the second job must run with its own defaults."""
    first = flat_config(upscale_enabled=False, adetailer_enabled=False, img2img_enabled=False)
    first["txt2img_config"] |= {"clip_skip": 2, "vae": "sdxl_vae.safetensors"}
    second = flat_config(upscale_enabled=False, adetailer_enabled=False, img2img_enabled=False)

    run_plan(client, first)
    result, _ = run_plan(client, second)

    info = result["meta"]["info"]
    assert (info["clip_skip"], info["sd_vae_name"]) == (1, None)
    assert "Clip skip" not in info["infotexts"][0]


def test_the_webui_reports_the_clip_skip_and_vae_a_job_asked_for(sim, client):
    config = flat_config(upscale_enabled=False, adetailer_enabled=False)
    config["txt2img_config"] |= {"clip_skip": 2, "vae": "SDXL_VAE.safetensors"}

    _, hooks = run_plan(client, config)

    for stage in (StageType.TXT2IMG, StageType.IMG2IMG):  # img2img inherits both from txt2img
        info = hooks.results[stage]["meta"]["info"]
        assert (info["clip_skip"], info["sd_vae_name"]) == (2, "sdxl_vae.safetensors"), stage
    assert generations(sim)[0].body["override_settings"]["sd_vae"] == "sdxl_vae.safetensors"  # its spelling


def test_preflight_rejects_a_vae_the_webui_lacks_naming_the_field_and_what_exists(sim, client):
    config = flat_config()
    config["txt2img_config"]["vae"] = "kl-f8-anime2.ckpt"

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, config)

    message = str(caught.value)
    assert "txt2img.vae" in message and "'kl-f8-anime2.ckpt'" in message
    assert "sdxl_vae.safetensors" in message
    assert generations(sim) == []


@pytest.mark.parametrize("vae", ["Automatic", "None"])
def test_a_builtin_vae_setting_needs_no_vae_file_on_the_webui(vae):
    with SimulatedWebUI(vaes=[]) as bare, WebUIClient(bare.url) as bare_client:
        config = flat_config(upscale_enabled=False, adetailer_enabled=False, img2img_enabled=False)
        config["txt2img_config"]["vae"] = vae

        run_plan(bare_client, config)

        assert generations(bare)[0].body["override_settings"]["sd_vae"] == vae


# --- refiner with hires ------------------------------------------------------------------------------------


def test_with_refiner_and_hires_the_webui_runs_the_refiner_in_the_first_pass(sim, client):
    _, hooks = run_plan(
        client, flat_config(upscale_enabled=False, adetailer_enabled=False, img2img_enabled=False)
    )

    extra = hooks.results[StageType.TXT2IMG]["meta"]["info"]["extra_generation_params"]
    assert extra["Hires refiner"] == "first pass"
    assert extra["Refiner switch at"] == 0.8
    assert generations(sim)[0].body["override_settings"]["hires_fix_refiner_pass"] == "first pass"  # recorded


REFINER_ONLY = {
    "hires_enabled": False,
    "upscale_enabled": False,
    "adetailer_enabled": False,
    "img2img_enabled": False,
}


def refiner_config(steps: int = 30, scheduler: str = "Karras", **changes: Any) -> dict[str, Any]:
    config = flat_config(**REFINER_ONLY, **changes)
    config["txt2img_config"] |= {"steps": steps, "scheduler": scheduler}
    return config


def run_recording_answers(config: dict[str, Any], *configs: dict[str, Any]) -> list[RecordedRequest]:
    """Run each config's plan on a fresh simulator; return its answered generation requests, answers kept."""
    answered: list[RecordedRequest] = []
    with SimulatedWebUI(recorder=answered.append) as server, WebUIClient(server.url) as webui:
        for each in (config, *configs):
            run_plan(webui, each)
    return [r for r in answered if r.path in GENERATION_ROUTES]


def refiner_step(request: RecordedRequest) -> int:
    """The step at which the simulated WebUI ran the refiner (``_timesteps``), from its answer's info."""
    return int(json.loads(request.answer["info"])["refiner_switch_step"])


@pytest.mark.parametrize("scheduler", ["Karras", "Exponential", "Uniform", "SGM Uniform"])
def test_a_refiner_switch_step_is_the_step_the_webui_switches_at(scheduler):
    config = refiner_config(scheduler=scheduler)
    assert config["refiner_switch_step"] == 24

    (request,) = run_recording_answers(config)

    assert request.body["refiner_switch_at"] == pytest.approx(0.8)
    assert request.body["override_settings"]["refiner_switch_by_sample_steps"] is True
    assert refiner_step(request) == 24


def test_a_refiner_fraction_means_what_the_webuis_slider_means_even_after_a_step_job():
    # The first job leaves refiner_switch_by_sample_steps on in the WebUI's options.
    by_fraction = refiner_config(refiner_switch_step=None, refiner_switch_at=0.8)

    _, request = run_recording_answers(refiner_config(), by_fraction)

    assert request.body["override_settings"]["refiner_switch_by_sample_steps"] is False
    assert refiner_step(request) == 19  # A1111's timestep ratio under Karras, 30 steps


# --- sampler names that carry a scheduler ----------------------------------------------------------------------


def test_a_sampler_name_carrying_a_scheduler_passes_preflight_and_runs_as_sampler_plus_scheduler(sim, client):
    config = flat_config()
    config["txt2img_config"] |= {"sampler_name": "DPM++ 2M Karras", "scheduler": None}
    config["img2img_config"] |= {"sampler_name": "Euler a Exponential", "scheduler": None}

    _, hooks = run_plan(client, config)

    txt2img, img2img, _upscale, adetailer = generations(sim)
    assert (txt2img.body["sampler_name"], txt2img.body["scheduler"]) == ("DPM++ 2M", "karras")
    assert (img2img.body["sampler_name"], img2img.body["scheduler"]) == ("Euler a", "exponential")
    assert (adetailer.body["sampler_name"], adetailer.body["scheduler"]) == ("Euler a", "exponential")
    infotext = hooks.results[StageType.TXT2IMG]["meta"]["info"]["infotexts"][0]
    assert "Sampler: DPM++ 2M," in infotext and "Schedule type: Karras" in infotext


def test_a_hires_sampler_carrying_a_scheduler_runs_instead_of_failing_the_hires_pass(sim, client):
    raw = nested_config()
    raw["execution_config"]["txt2img"]["hr_sampler_name"] = "Euler a Karras"

    _, hooks = run_plan(client, raw)

    txt2img = generations(sim)[0].body
    assert (txt2img["hr_sampler_name"], txt2img["hr_scheduler"]) == ("Euler a", "karras")
    extra = hooks.results[StageType.TXT2IMG]["meta"]["info"]["extra_generation_params"]
    assert extra["Hires schedule type"] == "Karras"


def test_adetailers_joined_default_sampler_name_passes_preflight_split_in_two(sim, client):
    raw = nested_config()
    raw["execution_config"]["adetailer"] |= {"adetailer_sampler": "DPM++ 2M Karras"}

    run_plan(client, raw)

    face = generations(sim)[-1].body["alwayson_scripts"]["ADetailer"]["args"][2]
    assert (face["ad_sampler"], face["ad_scheduler"]) == ("DPM++ 2M", "karras")
    assert sim.adetailer_problems == []


def test_preflight_checks_the_scheduler_an_adetailer_tab_names(sim, client):
    raw = nested_config()
    raw["execution_config"]["adetailer"] |= {"ad_scheduler": "Laplace"}

    with pytest.raises(WebUIRejected) as caught:
        run_plan(client, raw)

    assert "adetailer.face.ad_scheduler" in str(caught.value)
    assert "'Laplace'" in str(caught.value)
    assert generations(sim) == []


# --- limits re-checked before any GPU work -------------------------------------------------------------------


def test_preflight_refuses_a_queued_plan_with_an_adetailer_tab_over_the_limits_before_any_generation(
    sim, client
):
    data = json.loads(plan_of(flat_config()).to_json())
    data["stages"][3]["config"]["face"]["ad_args"] = {"ad_use_steps": True, "ad_steps": 100_000}
    plan = StageExecutionPlan.from_json(data)  # ad_* pass-throughs are ADetailer's: checked when built

    with pytest.raises(ConfigError) as caught:
        WebUIExecutor(client).preflight(plan)

    assert [p.path for p in caught.value.problems] == ["adetailer.face.ad_steps"]
    assert generations(sim) == []
