"""The refiner switch step, against figures worked out from A1111 v1.10.1's schedulers and apply_refiner."""

from __future__ import annotations

import itertools
import math

import pytest

from stablenew.simulator import (
    SIGMA_MAX,
    SIGMA_MIN,
    refiner_switch_step,
    step_sigmas,
    timestep_of,
)


def test_model_sigma_range_is_the_sd15_and_sdxl_one():
    assert pytest.approx(0.0292, abs=1e-4) == SIGMA_MIN
    assert pytest.approx(14.6146, abs=1e-4) == SIGMA_MAX
    assert timestep_of(SIGMA_MIN) == 0
    assert timestep_of(SIGMA_MAX) == 999


def test_thirty_karras_steps_at_0_8_switch_near_step_19_not_24():
    # Karras spends most steps at low noise: step 19 sits at sigma ~0.483, timestep ~162, ratio ~0.837,
    # while step 18 (sigma ~0.606, timestep ~214) is still at ~0.785.
    assert refiner_switch_step(30, "Karras", 0.8, by_sample_steps=False) == 19


def test_switch_by_sample_steps_counts_steps():
    assert refiner_switch_step(30, "Karras", 0.8, by_sample_steps=True) == 24
    assert refiner_switch_step(30, "Karras", 0.5, by_sample_steps=True) == 15
    assert refiner_switch_step(20, "Exponential", 0.75, by_sample_steps=True) == 15


def test_uniform_timesteps_make_the_ratio_follow_the_steps():
    # Uniform spaces timesteps evenly from 999 to 0: step i sits at 999 - 34.45 i, so 0.8 is reached at i = 24.
    assert refiner_switch_step(30, "Uniform", 0.8, by_sample_steps=False) == 24


def test_each_scheduler_gives_its_own_step():
    figures = {
        "Karras": 19,
        "Exponential": 16,
        "Uniform": 24,
        "Normal": 24,
        "Simple": 24,
        "SGM Uniform": 25,
        "KL Optimal": 21,
    }
    got = {name: refiner_switch_step(30, name, 0.8, by_sample_steps=False) for name in figures}
    assert got == figures


def test_scheduler_names_and_labels_mean_the_same_schedule():
    assert step_sigmas(25, "sgm_uniform") == step_sigmas(25, "SGM Uniform")
    assert step_sigmas(25, "karras") == step_sigmas(25, "Karras")


def test_automatic_uses_the_samplers_own_default():
    # DPM++ 2M defaults to Karras, DPM++ 2M SDE to Exponential, Euler has none and uses the uniform schedule.
    assert step_sigmas(30, "Automatic", sampler="DPM++ 2M") == step_sigmas(30, "Karras")
    assert step_sigmas(30, "Automatic", sampler="DPM++ 2M SDE") == step_sigmas(30, "Exponential")
    assert step_sigmas(30, "Automatic", sampler="Euler") == step_sigmas(30, "Uniform")
    assert refiner_switch_step(30, "Automatic", 0.8, False, sampler="DPM++ 2M") == 19
    assert refiner_switch_step(30, "Automatic", 0.8, False, sampler="Euler a") == 24


def test_karras_schedule_runs_from_the_largest_to_the_smallest_model_sigma():
    sigmas = step_sigmas(30, "Karras")
    assert len(sigmas) == 30
    assert sigmas[0] == pytest.approx(SIGMA_MAX)
    assert sigmas[-1] == pytest.approx(SIGMA_MIN)
    assert all(a > b for a, b in itertools.pairwise(sigmas))


def test_samplers_that_discard_the_penultimate_sigma_stop_at_a_higher_noise():
    plain = step_sigmas(30, "Karras", sampler="DPM++ 2M")
    discarding = step_sigmas(30, "Karras", sampler="DPM2")
    assert len(discarding) == 30
    assert discarding[-1] > plain[-1]
    assert discarding == step_sigmas(31, "Karras")[:-1]


def test_no_switch_point_switches_at_once_and_one_never_switches():
    assert refiner_switch_step(30, "Karras", None, by_sample_steps=False) == 0
    # the timestep ratio tops out at 0.999, so 1.0 is never reached
    assert refiner_switch_step(30, "Karras", 1.0, by_sample_steps=False) == 30
    assert refiner_switch_step(30, "Karras", 1.0, by_sample_steps=True) == 30


def test_a_later_switch_point_never_switches_earlier():
    steps = [refiner_switch_step(40, "Karras", k / 20, False) for k in range(1, 20)]
    assert steps == sorted(steps)
    assert steps[0] < steps[-1]


def test_timestep_is_the_nearest_table_entry_not_an_interpolation():
    sigma = step_sigmas(30, "Karras")[19]
    t = timestep_of(sigma)
    assert isinstance(t, int)
    assert t == 162
    assert math.isclose((999 - t) / 1000, 0.837)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="scheduler"):
        refiner_switch_step(30, "Align Your Steps", 0.8, False)
    with pytest.raises(ValueError, match="sampler"):
        refiner_switch_step(30, "Karras", 0.8, False, sampler="UniPC")
    with pytest.raises(ValueError, match="steps"):
        refiner_switch_step(0, "Karras", 0.8, False)
