"""The simulated A1111 WebUI, exercised over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.client import HTTPConnection
from typing import Any

import pytest
import requests
from PIL import Image

from stablenew.simulator import Fault, SimulatedWebUI

TXT2IMG = "/sdapi/v1/txt2img"
IMG2IMG = "/sdapi/v1/img2img"
EXTRAS = "/sdapi/v1/extra-single-image"
PROGRESS = "/sdapi/v1/progress?skip_current_image=true"


@pytest.fixture
def sim() -> Iterator[SimulatedWebUI]:
    with SimulatedWebUI() as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(
    http: requests.Session, sim: SimulatedWebUI, route: str, body: Any, **kwargs: Any
) -> requests.Response:
    return http.post(sim.url + route, json=body, timeout=kwargs.pop("timeout", 10), **kwargs)


def get(http: requests.Session, sim: SimulatedWebUI, route: str, **kwargs: Any) -> requests.Response:
    return http.get(sim.url + route, timeout=10, **kwargs)


def decode(encoded: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    image.load()
    return image


def png_b64(width: int, height: int, colour: tuple[int, int, int] = (10, 10, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def centre(image: Image.Image) -> tuple[int, ...]:
    pixel = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return pixel


def in_thread(call: Callable[[], requests.Response]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def assert_a1111_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    payload = response.json()
    assert set(payload) == {"error", "detail", "body", "errors"}
    return payload


# -- txt2img ------------------------------------------------------------------------------------------------


def test_txt2img_returns_a_png_of_the_requested_size_with_a_parameters_chunk(sim, http):
    body = {"prompt": "a red fox", "negative_prompt": "blurry", "width": 640, "height": 384, "seed": 42}
    response = post(http, sim, TXT2IMG, {**body, "steps": 20, "sampler_name": "Euler a"})

    assert response.status_code == 200
    payload = response.json()
    assert payload["parameters"]["prompt"] == "a red fox"
    image = decode(payload["images"][0])
    assert image.format == "PNG" and image.size == (640, 384)
    infotext = image.info["parameters"]
    assert infotext.startswith("a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a")
    assert "Seed: 42" in infotext and "Size: 640x384" in infotext and "Model: sd_xl_base_1.0" in infotext
    info = json.loads(payload["info"])
    assert info["infotexts"] == [infotext]
    assert (info["width"], info["height"], info["seed"], info["steps"]) == (640, 384, 42, 20)
    assert info["sd_model_name"] == "sd_xl_base_1.0" and info["sd_model_hash"] == "31e35c80fc"


def test_txt2img_returns_batch_size_times_n_iter_images_with_consecutive_seeds(sim, http):
    response = post(
        http, sim, TXT2IMG, {"prompt": "p", "width": 64, "height": 64, "batch_size": 2, "n_iter": 2}
    )

    payload = response.json()
    info = json.loads(payload["info"])
    assert len(payload["images"]) == 4 and len(info["infotexts"]) == 4
    assert info["all_seeds"] == [info["seed"] + i for i in range(4)]
    assert info["all_subseeds"] == [info["subseed"] + i for i in range(4)]
    assert 0 <= info["seed"] < 2**32  # -1 by default: a random seed is chosen and reported


def test_unknown_sampler_silently_falls_back_to_dpmpp_2m(sim, http):
    response = post(http, sim, TXT2IMG, {"width": 64, "height": 64, "sampler_name": "Euler Ancestral"})

    assert json.loads(response.json()["info"])["sampler_name"] == "DPM++ 2M"


def test_hires_scale_doubles_the_size_while_info_keeps_the_first_pass_size(sim, http):
    body = {"width": 320, "height": 256, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.4}
    response = post(http, sim, TXT2IMG, {**body, "hr_upscaler": "R-ESRGAN 4x+"})

    assert response.status_code == 200
    assert decode(response.json()["images"][0]).size == (640, 512)
    info = json.loads(response.json()["info"])
    assert (info["width"], info["height"]) == (320, 256)
    assert info["extra_generation_params"]["Hires upscale"] == 2.0
    assert info["extra_generation_params"]["Hires upscaler"] == "R-ESRGAN 4x+"


def test_hires_scale_is_floored_and_hires_resize_overrides_it(sim, http):
    body = {"width": 100, "height": 100, "enable_hr": True, "denoising_strength": 0.4, "hr_scale": 1.55}
    assert decode(post(http, sim, TXT2IMG, body).json()["images"][0]).size == (155, 155)

    resized = post(http, sim, TXT2IMG, {**body, "hr_resize_x": 200, "hr_resize_y": 0})
    assert decode(resized.json()["images"][0]).size == (200, 200)


def test_hires_without_denoising_strength_fails_with_the_a1111_error_shape(sim, http):
    response = post(http, sim, TXT2IMG, {"width": 64, "height": 64, "enable_hr": True, "hr_scale": 2})

    assert assert_a1111_error(response, 500)["error"] == "TypeError"


def test_hires_sampler_named_use_same_sampler_fails_with_500(sim, http):
    body = {"enable_hr": True, "denoising_strength": 0.3, "hr_sampler_name": "Use same sampler"}
    assert_a1111_error(post(http, sim, TXT2IMG, body), 500)


def test_unknown_hires_upscaler_fails_with_500_but_latent_modes_are_accepted(sim, http):
    body = {"width": 64, "height": 64, "enable_hr": True, "denoising_strength": 0.3}
    failure = assert_a1111_error(post(http, sim, TXT2IMG, {**body, "hr_upscaler": "Bogus"}), 500)
    assert "Bogus" in failure["errors"]
    assert post(http, sim, TXT2IMG, {**body, "hr_upscaler": "Latent (bicubic)"}).status_code == 200


def test_unknown_refiner_checkpoint_fails_but_a_known_one_is_reported(sim, http):
    assert_a1111_error(post(http, sim, TXT2IMG, {"refiner_checkpoint": "nope.safetensors"}), 500)

    body = {"width": 64, "height": 64, "refiner_checkpoint": "sd_xl_refiner_1.0", "refiner_switch_at": 0.8}
    extra = json.loads(post(http, sim, TXT2IMG, body).json()["info"])["extra_generation_params"]
    assert extra["Refiner"] == "sd_xl_refiner_1.0 [7440042bbd]" and extra["Refiner switch at"] == 0.8


def test_override_checkpoint_must_match_exactly_or_is_silently_ignored(sim, http):
    def model_for(checkpoint: str) -> str:
        body = {"width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": checkpoint}}
        response = post(http, sim, TXT2IMG, body)
        assert response.status_code == 200
        return str(json.loads(response.json()["info"])["sd_model_name"])

    assert model_for("v1-5-pruned-emaonly.safetensors [6ce0161689]") == "v1-5-pruned-emaonly"
    assert model_for("v1-5") == "sd_xl_base_1.0"
    assert sim.requests[-1].body["override_settings"] == {"sd_model_checkpoint": "v1-5"}


# -- img2img and ADetailer ----------------------------------------------------------------------------------


def test_img2img_without_init_images_is_404_in_the_a1111_error_shape(sim, http):
    assert (
        assert_a1111_error(post(http, sim, IMG2IMG, {"prompt": "p"}), 404)["detail"] == "Init image not found"
    )
    assert_a1111_error(post(http, sim, IMG2IMG, {"init_images": []}), 404)


def test_img2img_with_undecodable_base64_is_500_invalid_encoded_image(sim, http):
    response = post(http, sim, IMG2IMG, {"init_images": ["definitely not an image"]})

    assert assert_a1111_error(response, 500)["detail"] == "Invalid encoded image"


def test_img2img_output_defaults_to_the_init_image_size_and_accepts_data_urls(sim, http):
    init = "data:image/png;base64," + png_b64(200, 120)
    response = post(http, sim, IMG2IMG, {"init_images": [init], "denoising_strength": 0.5})

    assert response.status_code == 200
    assert decode(response.json()["images"][0]).size == (200, 120)
    sized = post(http, sim, IMG2IMG, {"init_images": [png_b64(200, 120)], "width": 96, "height": 64})
    assert decode(sized.json()["images"][0]).size == (96, 64)


def test_adetailer_with_skip_img2img_keeps_the_input_size_even_with_width_and_height_128(sim, http):
    tab = {"ad_model": "face_yolov8n.pt", "ad_denoising_strength": 0.4, "ad_inpaint_only_masked": True}
    body = {"init_images": [png_b64(768, 640)], "width": 128, "height": 128, "steps": 1}
    body["alwayson_scripts"] = {"ADetailer": {"args": [True, True, tab]}}
    response = post(http, sim, IMG2IMG, body)

    image = decode(response.json()["images"][0])
    assert image.size == (768, 640)
    red, green, blue = centre(image)
    assert red > green and blue > green  # purple: the ADetailer stage
    assert (
        json.loads(response.json()["info"])["extra_generation_params"]["ADetailer model"] == "face_yolov8n.pt"
    )
    assert sim.adetailer_problems == []


def test_adetailer_args_without_two_leading_booleans_are_recorded_as_problems(sim, http):
    body = {
        "init_images": [png_b64(64, 64)],
        "alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "x.pt"}]}},
    }
    assert post(http, sim, IMG2IMG, body).status_code == 200  # like ADetailer: never an HTTP error

    problems = sim.adetailer_problems
    assert any("two booleans" in p for p in problems)
    assert any("unknown ad_model" in p for p in problems)


def test_adetailer_tab_with_an_unknown_key_is_recorded_as_a_problem(sim, http):
    args = [True, True, {"ad_model": "face_yolov8n.pt", "ad_mask_k_largest": 1}]
    body = {"init_images": [png_b64(64, 64)], "alwayson_scripts": {"ADetailer": {"args": args}}}
    post(http, sim, IMG2IMG, body)

    assert any("ad_mask_k_largest" in p for p in sim.adetailer_problems)


def test_adetailer_is_absent_when_not_installed():
    with SimulatedWebUI(adetailer_installed=False) as sim, requests.Session() as http:
        assert get(http, sim, "/adetailer/v1/version").status_code == 404
        assert get(http, sim, "/adetailer/v1/ad_model").json() == {"detail": "Not Found"}
        body = {
            "init_images": [png_b64(64, 64)],
            "alwayson_scripts": {"ADetailer": {"args": [True, True, {}]}},
        }
        assert_a1111_error(post(http, sim, IMG2IMG, body), 422)


# -- extras ---------------------------------------------------------------------------------------------------


def test_extras_upscale_by_two_floors_each_side_to_a_multiple_of_8(sim, http):
    body = {"image": png_b64(301, 203), "resize_mode": 0, "upscaling_resize": 2, "upscaler_1": "R-ESRGAN 4x+"}
    response = post(http, sim, EXTRAS, body)

    assert response.status_code == 200
    assert decode(response.json()["image"]).size == (600, 400)
    assert response.json()["html_info"].startswith("<p>")


def test_extras_resize_mode_1_upscales_to_the_given_width_and_height(sim, http):
    body = {
        "image": png_b64(100, 100),
        "resize_mode": 1,
        "upscaling_resize_w": 300,
        "upscaling_resize_h": 250,
    }
    response = post(http, sim, EXTRAS, {**body, "upscaler_1": "Lanczos"})

    assert decode(response.json()["image"]).size == (300, 250)


def test_extras_with_upscaler_none_keeps_the_size_and_the_parameters_chunk(sim, http):
    generated = post(http, sim, TXT2IMG, {"prompt": "kept", "width": 96, "height": 80}).json()["images"][0]
    response = post(http, sim, EXTRAS, {"image": generated, "upscaler_1": "None", "upscaling_resize": 4})

    image = decode(response.json()["image"])
    assert image.size == (96, 80)
    assert image.info["parameters"].startswith("kept\n")


def test_extras_with_an_unknown_upscaler_is_500(sim, http):
    response = post(http, sim, EXTRAS, {"image": png_b64(64, 64), "upscaler_1": "4x-Imaginary"})

    assert "4x-Imaginary" in assert_a1111_error(response, 500)["errors"]


def test_extras_without_an_image_is_a_422_validation_error(sim, http):
    response = post(http, sim, EXTRAS, {"upscaler_1": "Lanczos"})

    assert response.status_code == 422
    expected = {"loc": ["body", "image"], "msg": "field required", "type": "value_error.missing"}
    assert response.json() == {"detail": [expected]}


def test_a_body_that_is_not_json_is_a_422_validation_error(sim, http):
    response = http.post(sim.url + TXT2IMG, data=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "value_error.jsondecode"


def test_each_stage_has_its_own_colour(sim, http):
    txt = decode(post(http, sim, TXT2IMG, {"width": 64, "height": 64, "seed": 1}).json()["images"][0])
    img = decode(post(http, sim, IMG2IMG, {"init_images": [png_b64(64, 64)], "seed": 1}).json()["images"][0])
    up = decode(post(http, sim, EXTRAS, {"image": png_b64(64, 64), "upscaler_1": "Nearest"}).json()["image"])

    (r1, g1, b1), (r2, g2, b2), (r3, g3, b3) = centre(txt), centre(img), centre(up)
    assert b1 > r1 and b1 > g1  # blue-ish txt2img
    assert g2 > r2 and g2 > b2  # green-ish img2img
    assert r3 > g3 > b3  # orange-ish upscale


# -- progress, interrupt and the queue lock -------------------------------------------------------------------


def test_progress_rises_live_during_latency_and_is_idle_afterwards(sim, http):
    sim.set_latency(0.6)
    thread, outcome = in_thread(lambda: requests.post(sim.url + TXT2IMG, json={"steps": 20}, timeout=10))
    seen: list[dict[str, Any]] = []
    while thread.is_alive():
        seen.append(get(http, sim, PROGRESS).json())
        time.sleep(0.03)
    thread.join()

    assert outcome[0].status_code == 200
    running = [p for p in seen if 0 < p["progress"] < 1]
    assert running, seen
    assert all(p["state"]["job_count"] == 1 and p["state"]["sampling_steps"] == 20 for p in running)
    assert [p["progress"] for p in running] == sorted(p["progress"] for p in running)
    idle = get(http, sim, PROGRESS).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None


def test_interrupt_cuts_a_long_latency_short_and_still_returns_an_image(sim, http):
    sim.set_latency(30)
    started = time.monotonic()
    thread, outcome = in_thread(lambda: requests.post(sim.url + TXT2IMG, json={"width": 64}, timeout=10))
    wait_for(lambda: get(http, sim, PROGRESS).json()["state"]["job_count"] == 1)

    assert post(http, sim, "/sdapi/v1/interrupt", {}).status_code == 200
    thread.join(timeout=5)

    assert time.monotonic() - started < 3
    assert outcome[0].status_code == 200
    assert decode(outcome[0].json()["images"][0]).size == (64, 512)
    assert sim.interrupted_count == 1
    assert get(http, sim, PROGRESS).json()["state"]["interrupted"] is True


def test_generations_run_one_at_a_time(sim):
    sim.set_latency(0.2)
    started = time.monotonic()
    calls = [
        in_thread(lambda: requests.post(sim.url + TXT2IMG, json={"width": 64}, timeout=10)) for _ in range(2)
    ]
    for thread, _ in calls:
        thread.join()

    assert time.monotonic() - started >= 0.4
    assert all(outcome[0].status_code == 200 for _, outcome in calls)


# -- catalogue routes, auth and routing -----------------------------------------------------------------------


def test_catalogue_routes_have_the_a1111_shapes(sim, http):
    models = get(http, sim, "/sdapi/v1/sd-models").json()
    assert models[0]["title"] == "sd_xl_base_1.0.safetensors [31e35c80fc]"
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert {"name": "DPM++ 2M", "aliases": [], "options": {}} in get(http, sim, "/sdapi/v1/samplers").json()
    schedulers = get(http, sim, "/sdapi/v1/schedulers").json()
    assert {(s["name"], s["label"]) for s in schedulers} >= {("automatic", "Automatic"), ("karras", "Karras")}
    upscalers = {u["name"]: u for u in get(http, sim, "/sdapi/v1/upscalers").json()}
    assert "4x-UltraSharp" in upscalers and upscalers["None"]["scale"] == 4
    assert {"name": "Latent"} in get(http, sim, "/sdapi/v1/latent-upscale-modes").json()
    assert set(get(http, sim, "/sdapi/v1/memory").json()) == {"ram", "cuda"}
    assert get(http, sim, "/internal/ping").json() is None
    assert get(http, sim, "/adetailer/v1/version").json() == {"version": "25.3.0"}
    assert "face_yolov8n.pt" in get(http, sim, "/adetailer/v1/ad_model").json()["ad_model"]


def test_unknown_routes_are_404_and_wrong_methods_are_405(sim, http):
    assert get(http, sim, "/sdapi/v1/nothing-here").json() == {"detail": "Not Found"}
    assert get(http, sim, TXT2IMG).status_code == 405


def test_auth_protects_only_the_sdapi_routes():
    with SimulatedWebUI(auth=("user", "secret")) as sim, requests.Session() as http:
        refused = get(http, sim, "/sdapi/v1/sd-models")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "Incorrect username or password"
        assert refused.headers["WWW-Authenticate"] == "Basic"
        assert get(http, sim, "/sdapi/v1/sd-models", auth=("user", "wrong")).status_code == 401
        assert get(http, sim, "/sdapi/v1/sd-models", auth=("user", "secret")).status_code == 200
        assert get(http, sim, "/adetailer/v1/version").status_code == 200
        assert get(http, sim, "/internal/ping").status_code == 200


# -- faults -------------------------------------------------------------------------------------------------


def test_status_fault_answers_with_that_status_once_then_recovers(sim, http):
    sim.inject(Fault("status", status=503))

    assert_a1111_error(post(http, sim, TXT2IMG, {"width": 64, "height": 64}), 503)
    assert post(http, sim, TXT2IMG, {"width": 64, "height": 64}).status_code == 200


def test_status_fault_422_uses_the_validation_shape(sim, http):
    sim.inject(Fault("status", status=422))

    response = post(http, sim, IMG2IMG, {"init_images": [png_b64(8, 8)]})
    assert response.status_code == 422 and isinstance(response.json()["detail"], list)


def test_fault_applies_only_to_its_route_and_for_count_requests(sim, http):
    sim.inject(Fault("status", route=EXTRAS, status=500, count=2))
    extras = {"image": png_b64(16, 16)}

    assert post(http, sim, TXT2IMG, {"width": 64, "height": 64}).status_code == 200
    assert [post(http, sim, EXTRAS, extras).status_code for _ in range(3)] == [500, 500, 200]


def test_hang_fault_outlasts_a_short_read_timeout(sim, http):
    sim.inject(Fault("hang", seconds=5))

    with pytest.raises(requests.ReadTimeout):
        post(http, sim, TXT2IMG, {"width": 64, "height": 64}, timeout=(1, 0.2))


def test_hang_fault_answers_normally_after_its_delay(sim, http):
    sim.inject(Fault("hang", seconds=0.3))
    started = time.monotonic()

    assert post(http, sim, TXT2IMG, {"width": 64, "height": 64}).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_malformed_json_fault_returns_a_truncated_body(sim, http):
    sim.inject(Fault("malformed_json"))

    response = post(http, sim, TXT2IMG, {})
    assert response.status_code == 200 and response.text == '{"images": ['
    with pytest.raises(ValueError):
        response.json()


def test_bad_base64_fault_returns_undecodable_images(sim, http):
    sim.inject(Fault("bad_base64", count=2))

    assert post(http, sim, TXT2IMG, {"width": 64, "height": 64}).json()["images"] == ["not base64!!"]
    assert post(http, sim, EXTRAS, {"image": png_b64(8, 8)}).json()["image"] == "not base64!!"


def test_close_fault_drops_the_connection_without_a_response(sim, http):
    sim.inject(Fault("close"))

    with pytest.raises(requests.ConnectionError):
        post(http, sim, TXT2IMG, {})
    assert post(http, sim, TXT2IMG, {"width": 64, "height": 64}).status_code == 200


# -- recording, caching, connections and lifecycle ----------------------------------------------------------


def test_the_recorder_keeps_method_path_body_and_headers(sim, http):
    post(http, sim, TXT2IMG, {"prompt": "recorded", "width": 64, "height": 64})
    get(http, sim, PROGRESS)

    first, second = sim.requests
    assert (first.method, first.path, first.body["prompt"]) == ("POST", TXT2IMG, "recorded")
    assert first.headers["Content-Type"] == "application/json"
    assert (second.method, second.path, second.body) == ("GET", "/sdapi/v1/progress", None)
    assert second.query == "skip_current_image=true"
    sim.clear_requests()
    assert sim.requests == []


def test_image_cache_reuses_pixels_but_keeps_each_requests_parameters():
    with SimulatedWebUI(image_cache=True) as sim, requests.Session() as http:
        first = decode(
            post(http, sim, TXT2IMG, {"prompt": "one", "width": 96, "seed": 3}).json()["images"][0]
        )
        second = decode(
            post(http, sim, TXT2IMG, {"prompt": "two", "width": 96, "seed": 11}).json()["images"][0]
        )

    assert first.tobytes() == second.tobytes()  # 3 % 8 == 11 % 8
    assert first.info["parameters"].startswith("one\n") and second.info["parameters"].startswith("two\n")


def test_keep_alive_serves_several_requests_on_one_connection(sim):
    connection = HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    try:
        for _ in range(3):
            connection.request("GET", "/sdapi/v1/samplers")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read())
    finally:
        connection.close()


def test_stop_returns_promptly_while_a_request_hangs(sim):
    sim.inject(Fault("hang", seconds=30))
    thread, outcome = in_thread(lambda: requests.post(sim.url + TXT2IMG, json={}, timeout=10))
    wait_for(lambda: len(sim.requests) == 1)

    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=2)
    assert isinstance(outcome[0], requests.ConnectionError)


def test_stop_returns_promptly_during_latency(sim):
    sim.set_latency(30)
    thread, _ = in_thread(lambda: requests.post(sim.url + TXT2IMG, json={}, timeout=10))
    wait_for(lambda: len(sim.requests) == 1)

    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    thread.join(timeout=2)
    assert not thread.is_alive()


def test_a_stopped_simulator_refuses_connections_and_restarts_on_the_same_port(sim, http):
    url = sim.url
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/internal/ping", timeout=1)

    sim.start()
    assert sim.url == url
    assert requests.get(url + "/internal/ping", timeout=2).status_code == 200


# -- A1111 1.10 samplers, schedulers, VAEs and lingering options ----------------------------------------------


def info_of(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    info: dict[str, Any] = json.loads(response.json()["info"])
    return info


def test_the_sampler_list_is_a1111_1_10s_without_names_carrying_a_scheduler(sim, http):
    names = [s["name"] for s in get(http, sim, "/sdapi/v1/samplers").json()]

    assert names[0] == "DPM++ 2M"
    assert {"DPM++ 2M SDE", "Euler a", "DDIM", "UniPC", "LCM"} <= set(names)
    assert not [name for name in names if name.endswith((" Karras", " Exponential"))]


def test_sd_vae_lists_the_vae_files_as_a1111_does(sim, http):
    vaes = get(http, sim, "/sdapi/v1/sd-vae").json()

    assert {"model_name": "sdxl_vae.safetensors", "filename": "/models/VAE/sdxl_vae.safetensors"} in vaes


@pytest.mark.parametrize(
    ("sampler_name", "scheduler", "runs"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("Euler a karras", None, ("Euler a", "Karras")),  # the scheduler's name works as well as its label
        ("DPM++ 2M Karras", "exponential", ("DPM++ 2M", "Exponential")),  # an explicit scheduler wins
        ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", None)),
        # A1111 tries " Uniform" before " SGM Uniform": the rest, "Euler SGM", is unknown -> the first sampler.
        ("Euler SGM Uniform", None, ("DPM++ 2M", "Uniform")),
    ],
)
def test_a_sampler_name_carrying_a_scheduler_is_resolved_as_a1111_does(
    sim, http, sampler_name, scheduler, runs
):
    body = {"width": 64, "height": 64, "sampler_name": sampler_name, "scheduler": scheduler}

    info = info_of(post(http, sim, TXT2IMG, body))

    assert info["sampler_name"] == runs[0]
    schedule = f"Schedule type: {runs[1]}"
    assert (schedule in info["infotexts"][0]) is (runs[1] is not None)


def test_a_hires_sampler_carrying_a_scheduler_fails_with_500_as_a1111_does(sim, http):
    body = {"width": 64, "height": 64, "enable_hr": True, "denoising_strength": 0.3}

    assert_a1111_error(post(http, sim, TXT2IMG, {**body, "hr_sampler_name": "Euler a Karras"}), 500)
    split = {**body, "hr_sampler_name": "Euler a", "hr_scheduler": "Karras"}
    assert (
        info_of(post(http, sim, TXT2IMG, split))["extra_generation_params"]["Hires schedule type"] == "Karras"
    )


def test_override_settings_linger_for_the_next_request_unless_restored(sim, http):
    """A1111 keeps a request's overrides when override_settings_restore_afterwards is false (default: true)."""
    overrides = {"CLIP_stop_at_last_layers": 2, "sd_vae": "sdxl_vae.safetensors"}
    plain = {"width": 64, "height": 64}

    restored = info_of(post(http, sim, TXT2IMG, {**plain, "override_settings": overrides}))
    after_restored = info_of(post(http, sim, TXT2IMG, plain))
    kept = info_of(
        post(
            http,
            sim,
            TXT2IMG,
            {**plain, "override_settings": overrides, "override_settings_restore_afterwards": False},
        )
    )
    after_kept = info_of(post(http, sim, TXT2IMG, plain))

    assert (restored["clip_skip"], restored["sd_vae_name"]) == (2, "sdxl_vae.safetensors")
    assert (after_restored["clip_skip"], after_restored["sd_vae_name"]) == (1, None)
    assert (kept["clip_skip"], kept["sd_vae_name"]) == (2, "sdxl_vae.safetensors")
    assert (after_kept["clip_skip"], after_kept["sd_vae_name"]) == (2, "sdxl_vae.safetensors")
    assert "Clip skip: 2" in after_kept["infotexts"][0]


def test_a_checkpoint_override_kept_by_one_request_is_the_model_of_the_next(sim, http):
    keep = {"override_settings_restore_afterwards": False}
    post(
        http,
        sim,
        TXT2IMG,
        {"width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "v1-5-pruned-emaonly"}}
        | keep,
    )

    assert (
        info_of(post(http, sim, TXT2IMG, {"width": 64, "height": 64}))["sd_model_name"]
        == "v1-5-pruned-emaonly"
    )


def test_an_unknown_vae_override_silently_runs_without_a_vae(sim, http):
    body = {"width": 64, "height": 64, "override_settings": {"sd_vae": "missing_vae.pt"}}

    assert info_of(post(http, sim, TXT2IMG, body))["sd_vae_name"] is None


@pytest.mark.parametrize(("refiner_pass", "reported"), [(None, None), ("first pass", "first pass")])
def test_with_hires_the_refiner_joins_the_pass_the_option_names(sim, http, refiner_pass, reported):
    body: dict[str, Any] = {
        "width": 64, "height": 64, "enable_hr": True, "denoising_strength": 0.3,
        "refiner_checkpoint": "sd_xl_refiner_1.0", "refiner_switch_at": 0.8,
    }  # fmt: skip
    if refiner_pass:
        body["override_settings"] = {"hires_fix_refiner_pass": refiner_pass}

    extra = info_of(post(http, sim, TXT2IMG, body))["extra_generation_params"]

    assert extra.get("Hires refiner") == reported  # A1111 records it only when it is not "second pass"


def test_send_images_false_returns_no_images(sim, http):
    response = post(http, sim, TXT2IMG, {"width": 64, "height": 64, "send_images": False})

    assert response.status_code == 200
    assert response.json()["images"] == []


def test_a_no_images_fault_answers_200_with_an_empty_image_list(sim, http):
    sim.inject(Fault("no_images"))

    first = post(http, sim, TXT2IMG, {"width": 64, "height": 64})
    second = post(http, sim, TXT2IMG, {"width": 64, "height": 64})

    assert (first.status_code, first.json()["images"]) == (200, [])
    assert len(second.json()["images"]) == 1


# -- errors a retry cannot fix, options that persist, scheduler spellings -----------------------------------


def test_an_unknown_override_settings_key_fails_with_a1111s_keyerror_500(sim, http):
    body = {"width": 64, "height": 64, "override_settings": {"no_such_option": 1}}

    failure = assert_a1111_error(post(http, sim, TXT2IMG, body), 500)

    assert failure["error"] == "KeyError"
    assert failure["errors"] == "'no_such_option'"
    body["override_settings"] = {"no_such_option": None}  # a null value returns before the lookup
    assert post(http, sim, TXT2IMG, body).status_code == 200


def test_an_unknown_hires_upscaler_fails_as_processing_raises_it(sim, http):
    body = {"width": 64, "height": 64, "enable_hr": True, "denoising_strength": 0.3, "hr_upscaler": "Bogus"}

    failure = assert_a1111_error(post(http, sim, TXT2IMG, body), 500)

    assert (failure["error"], failure["errors"]) == ("Exception", "could not find upscaler named Bogus")


REFINER = {
    "width": 64,
    "height": 64,
    "steps": 30,
    "scheduler": "Karras",
    "refiner_checkpoint": "sd_xl_refiner_1.0",
}


def test_the_refiner_step_follows_the_switch_option_and_the_option_persists(sim, http):
    def refiner_step(body: dict[str, Any]) -> int:
        return int(info_of(post(http, sim, TXT2IMG, body))["refiner_switch_step"])

    by_steps = {"override_settings": {"refiner_switch_by_sample_steps": True}}
    kept = {"override_settings_restore_afterwards": False}

    assert refiner_step({**REFINER, "refiner_switch_at": 0.8}) == 19  # A1111's default: timestep ratio
    assert refiner_step({**REFINER, "refiner_switch_at": 0.8, **by_steps}) == 24
    assert refiner_step({**REFINER, "refiner_switch_at": 0.8}) == 19  # restored afterwards by default
    assert refiner_step({**REFINER, "refiner_switch_at": 0.8, **by_steps, **kept}) == 24
    assert refiner_step({**REFINER, "refiner_switch_at": 0.8}) == 24  # the option stayed set
    assert refiner_step({**REFINER, "refiner_switch_at": None}) == 0  # no switch point: at once


@pytest.mark.parametrize(
    ("sampler_name", "scheduler", "runs"),
    [
        ("Euler", "sgm_uniform", "SGM Uniform"),  # a name
        ("Euler", "SGM Uniform", "SGM Uniform"),  # a label
        ("Euler", "SGMUniform", None),  # the alias is no scheduler name: Automatic
        ("Euler", "KARRAS", None),  # case-sensitive: Automatic
        ("Euler SGMUniform", None, "SGM Uniform"),  # the alias works as a sampler-name suffix
        ("Euler karras", None, "Karras"),
    ],
)
def test_scheduler_spellings_are_accepted_as_a1111_1_10_1_accepts_them(
    sim, http, sampler_name, scheduler, runs
):
    body = {"width": 64, "height": 64, "sampler_name": sampler_name, "scheduler": scheduler}

    info = info_of(post(http, sim, TXT2IMG, body))

    assert info["sampler_name"] == "Euler"
    assert (
        (f"Schedule type: {runs}" in info["infotexts"][0])
        if runs
        else ("Schedule type" not in info["infotexts"][0])
    )


# -- ADetailer as the extension and A1111 treat its arguments -------------------------------------------------

FACE = {"ad_model": "face_yolov8n.pt", "ad_inpaint_only_masked": True}


def adetailer_body(*tabs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {"init_images": [png_b64(96, 80)], "width": 64, "height": 64, "steps": 20}
    body["alwayson_scripts"] = {"ADetailer": {"args": [True, True, *tabs]}}
    return body | changes


@pytest.mark.parametrize("max_tabs", [4, 1, 15])
def test_script_info_declares_adetailers_enable_skip_and_one_arg_per_tab(max_tabs):
    with SimulatedWebUI(adetailer_max_tabs=max_tabs) as sim, requests.Session() as http:
        entries = [e for e in get(http, sim, "/sdapi/v1/script-info").json() if e["name"] == "adetailer"]

    assert sorted(e["is_img2img"] for e in entries) == [False, True]
    assert all(e["is_alwayson"] and len(e["args"]) == 2 + max_tabs for e in entries)
    assert [a["label"] for a in entries[0]["args"][:2]] == ["ADetailer", "Skip img2img"]


def test_adetailer_max_tabs_is_within_its_slider_range():
    with pytest.raises(ValueError, match=r"1\.\.15"):
        SimulatedWebUI(adetailer_max_tabs=16)


@pytest.mark.parametrize(
    "tabs",
    [
        [{"ad_model": "None"}],
        [FACE | {"ad_tab_enable": False}],
        [FACE | {"ad_mask_k_largest": 1}],  # fails validation (extra=forbid)
    ],
    ids=["no detector", "tab disabled", "invalid tab"],
)
def test_with_no_live_tab_adetailer_disables_itself_and_a_plain_img2img_runs(sim, http, tabs):
    response = post(http, sim, IMG2IMG, adetailer_body(*tabs))

    image = decode(response.json()["images"][0])
    info = info_of(response)
    assert image.size == (64, 64)  # the request's size, not the input's: no skip img2img happened
    red, green, blue = centre(image)
    assert green > red and green > blue  # green: a plain img2img
    assert info["denoising_strength"] == 0.75  # the API's default, the request sent none
    assert "ADetailer model" not in info["extra_generation_params"]
    assert any("disables itself" in p for p in sim.adetailer_problems)


def test_a_tab_beyond_max_tabs_is_dropped_without_a_word():
    with SimulatedWebUI(adetailer_max_tabs=1) as sim, requests.Session() as http:
        response = post(http, sim, IMG2IMG, adetailer_body({"ad_model": "None"}, FACE))

        assert response.status_code == 200
        assert decode(response.json()["images"][0]).size == (64, 64)  # the face tab never ran
        assert any("beyond its 1 tab(s)" in p for p in sim.adetailer_problems)


def test_adetailer_raises_job_count_after_its_dummy_pass_so_progress_drops(http):
    with SimulatedWebUI(adetailer_masks=2) as sim:
        sim.set_latency(0.8)
        hands = {"ad_model": "hand_yolov8n.pt"}
        thread, outcome = in_thread(
            lambda: requests.post(sim.url + IMG2IMG, json=adetailer_body(FACE, hands, steps=1), timeout=10)
        )
        seen: list[dict[str, Any]] = []
        while thread.is_alive():
            seen.append(get(http, sim, PROGRESS).json())
            time.sleep(0.01)
        thread.join()

    assert outcome[0].status_code == 200
    states = [p["state"] for p in seen if p["state"]["job_count"]]
    assert {s["job"] for s in states} == {"scripts_img2img"}
    counts = [s["job_count"] for s in states]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] == 5  # dummy + 2 masks x 2 tabs
    dummy = [p["progress"] for p in seen if p["state"]["job_count"] == 1]
    after = [p["progress"] for p in seen if p["state"]["job_count"] == 3]
    assert 1.0 in dummy  # the dummy pass done, detection running: A1111 shows 100%
    assert after and min(after) < 0.5  # then the masks raise job_count and progress drops


# -- /internal/progress: which task is the one generating ----------------------------------------------------


def internal(http: requests.Session, sim: SimulatedWebUI, task: str) -> dict[str, Any]:
    response = post(http, sim, "/internal/progress", {"id_task": task})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_internal_progress_tells_the_active_task_from_a_queued_one(sim, http):
    sim.set_latency(30)
    first, _ = in_thread(
        lambda: requests.post(sim.url + TXT2IMG, json={"width": 64, "force_task_id": "task(a)"}, timeout=10)
    )
    wait_for(lambda: internal(http, sim, "task(a)")["active"])
    second, _ = in_thread(
        lambda: requests.post(sim.url + TXT2IMG, json={"width": 64, "force_task_id": "task(b)"}, timeout=10)
    )
    wait_for(lambda: internal(http, sim, "task(b)")["queued"])

    waiting = internal(http, sim, "task(b)")
    assert (waiting["active"], waiting["textinfo"]) == (False, "In queue: 1/1")
    assert internal(http, sim, "task(a)")["progress"] is not None

    post(http, sim, "/sdapi/v1/interrupt", {})
    first.join(timeout=5)
    wait_for(lambda: internal(http, sim, "task(b)")["active"])  # begin() cleared the flag: b runs on
    assert internal(http, sim, "task(a)")["completed"]
    post(http, sim, "/sdapi/v1/interrupt", {})
    second.join(timeout=5)


def test_internal_progress_does_not_exist_under_nowebui(http):
    with SimulatedWebUI(nowebui=True) as sim:
        assert post(http, sim, "/internal/progress", {"id_task": "task(a)"}).status_code == 404
