"""Devices: a device name from the command line to a ``torch.device``, and a device in
words (the GPU, or the CPU model), for the progress line, reports and benchmarks."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N")
"""What every route takes as a device (Ray takes all but ``cuda:N``)."""


def device_name_problem(name: str, *, indexed: bool = True) -> str | None:
    """Why ``name`` is not a device every route takes (``indexed=False``: Ray's, which
    picks each cell's GPU itself, so ``cuda:N`` is refused), or ``None``."""
    if name in ("auto", "cpu", "cuda"):
        return None
    if name.startswith("cuda:"):
        if not indexed:
            return (f"device {name}: with the Ray executor give --device cuda; Ray gives "
                    f"each cell a GPU of its node")
        if name[5:].isdigit():
            return None
    return f"unknown device {name!r}: use auto, cpu, cuda or cuda:N"


def resolve_device(name: str, worker: int | None = None) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` -> ``torch.device``.

    With several workers (pytest-xdist, ``mil-assert check --jobs``) on a machine with
    several GPUs, ``"auto"`` and ``"cuda"`` put worker ``w`` on ``cuda:(w mod count)``:
    each worker trains on its own GPU, round robin over the visible devices.
    """
    problem = device_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():  # name is cuda or cuda:N
        raise ValueError(f"device {name} was asked for, but torch sees no CUDA device "
                         f"(torch {torch.__version__}); use cpu or auto")
    if name == "cuda" and worker is not None:
        return torch.device("cuda", worker % torch.cuda.device_count())
    return torch.device(name)


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), else the
    best :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, timeout=10)
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or None


def compute_environment(device: torch.device | str) -> dict[str, str | None]:
    """What decides the last bits of a run's floating-point results: the CPU model and the
    instruction set torch's CPU kernels use (``torch.backends.cpu.get_cpu_capability``),
    or the GPU and CUDA version. Per-seed AUCs are identical only where these agree."""
    target = torch.device(device)
    on_gpu = target.type == "cuda"
    return {
        "cpu": cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(target) if on_gpu else None,
        "cuda": torch.version.cuda if on_gpu else None,
    }


def describe_device(device: torch.device) -> str:
    """The device in words: GPU name, or CPU model, core count and torch threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    return (f"CPU: {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}")


def device_name(device: torch.device | str) -> str | None:
    """The GPU's name for a CUDA device, else the CPU model."""
    target = torch.device(device)
    if target.type == "cuda":
        return torch.cuda.get_device_name(target)
    return cpu_model()
