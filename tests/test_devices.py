"""Device names: one module says which names every route takes and what a device is."""

from __future__ import annotations

import pytest
import torch

from mil_assert.devices import describe_device, device_name, device_name_problem, resolve_device


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_names_every_route_takes(name):
    assert device_name_problem(name) is None


@pytest.mark.parametrize("name, problem", [
    ("tpu", "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
    ("cuda:x", "unknown device 'cuda:x'"),
    ("CPU", "unknown device 'CPU'"),
])
def test_unknown_names_are_named_with_the_choices(name, problem):
    assert device_name_problem(name).startswith(problem)
    with pytest.raises(ValueError, match=problem):
        resolve_device(name)


def test_ray_refuses_an_indexed_gpu_and_says_why():
    assert "with the Ray executor give --device cuda" in device_name_problem(
        "cuda:1", indexed=False)
    assert device_name_problem("cuda", indexed=False) is None


def test_a_cpu_in_words():
    cpu = torch.device("cpu")
    assert describe_device(cpu).startswith("CPU: ")
    assert f"torch {torch.__version__}" in describe_device(cpu)
    assert device_name(cpu)  # the CPU model, or what platform knows
