"""Run a list of (model, test) cells on a Ray cluster: one Ray task per cell.

    mil-assert check abmil --executor ray --address auto
    mil-assert dims abmil,mi_net --executor ray --address 10.0.0.5:6379 --device cuda

Where the cells run (:func:`connect`):

- ``address`` given (``--address``), else the ``RAY_ADDRESS`` environment variable: that
  cluster; ``auto`` is the one started with ``ray start`` on this machine, ``HOST:PORT``
  a head node's GCS address, ``ray://HOST:10001`` a Ray Client server;
- neither: a new local Ray instance on this machine, with all its CPUs;
- a Ray connection this process already holds (``ray.init`` in a notebook or a test) is
  used as it is.

Each task asks for one CPU and, with ``device="cuda"``, one GPU, which Ray assigns (the
task sees it as ``cuda:0``); ``device="auto"`` means ``cuda`` when the cluster has GPUs.
A task is :func:`mil_assert.harness.run_cell`, as on every route, so the same cells give
the same per-seed AUCs as ``jobs=1`` (the seeds decide every random draw, not the
worker). Its result records where it ran (``CellResult.ran_on``: node, address, device).

Faults: a task whose worker process dies (killed, out of memory, node lost) is retried
``CELL_RETRIES`` times by Ray (``max_retries``) and then becomes an ``error`` cell naming
the failure; an exception while loading the model on the worker is an ``error`` cell at
once. A KeyboardInterrupt (Ctrl-C; SIGTERM where the caller turns it into one) keeps the
cells that finished, cancels the others and propagates. A cluster that cannot be reached
raises :class:`ClusterError` before any task is submitted.

Ray is imported only here and only when asked for (``pip install "mil-assert[ray]"``).
Models given as strings are loaded again on the worker, so a ``path/to/file.py:factory``
must exist at the same path on every node (or be an installed module); a ``ModelSpec``
object is sent with Ray's cloudpickle.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mil_assert.cells import Model, Run, error_cell
from mil_assert.costs import longest_first, spec_cost
from mil_assert.devices import device_name_problem, resolve_device
from mil_assert.harness import run_cell
from mil_assert.interrupts import reclaim_stop_signals
from mil_assert.loading import as_spec
from mil_assert.registry import ModelSpec
from mil_assert.results import CellResult
from mil_assert.synthetic import TESTS

CELL_RETRIES = 2
"""Times Ray runs a cell again after its worker process died (Ray's ``max_retries``)."""
CONNECT_TIMEOUT_S = 10.0
"""How long to wait for the cluster's address to accept a connection before giving up."""
POLL_S = 0.2
"""Pause between the driver's looks for finished cells. The driver sleeps in Python, not
inside Ray's wait, because Ray turns a signal's exception raised during its wait into a
plain KeyboardInterrupt, and the run would no longer know that SIGTERM stopped it."""
INSTALL = 'pip install "mil-assert[ray]"'


class ClusterError(ValueError):
    """Ray is missing, or the cluster cannot be reached or cannot run the cells."""


def import_ray() -> Any:
    """The ``ray`` module, or :class:`ClusterError` naming the install command."""
    try:
        import ray
    except ImportError as error:
        raise ClusterError(f"the Ray executor needs Ray, which is not installed here "
                           f"({error}); install it with: {INSTALL}") from None
    return ray


def cluster_address(address: str | None) -> str | None:
    """The address to connect to: ``address``, else ``$RAY_ADDRESS``, else ``None``
    (a new local instance)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def connect(address: str | None = None, device: str = "cpu") -> str:
    """Connect to the cluster (see the module docstring) and check it can run the cells.

    Args:
        address: ``auto``, ``HOST:PORT``, ``ray://HOST:PORT`` or ``None``.
        device: ``auto``, ``cpu`` or ``cuda`` (Ray picks each cell's GPU, so ``cuda:N``
            is refused).

    Returns:
        The device every cell trains on: ``cpu`` or ``cuda``.

    Raises:
        ClusterError: Ray missing, the cluster unreachable, or ``cuda`` on a cluster
            without GPUs; one line naming the fix.
    """
    problem = device_name_problem(device, indexed=False)
    if problem is not None:
        raise ClusterError(problem)
    ray = import_ray()
    target = cluster_address(address)
    if not ray.is_initialized():
        if target is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR)
        else:
            _check_reachable(ray, target)
            try:
                ray.init(address=target, logging_level=logging.ERROR)
            except Exception as error:  # noqa: BLE001 - Ray raises several kinds here
                cause = error.__cause__ or error
                why = ("it uses token authentication and this process has no token for "
                       "it: set RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, "
                       "or the file ~/.ray/auth_token)"
                       if "auth" in str(cause).lower() else _first_line(cause))
                raise ClusterError(f"cannot connect to the Ray cluster at {target}: "
                                   f"{why}") from None
    reclaim_stop_signals()  # ray.init installs its own SIGTERM handler in the driver
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    if device == "cuda" and gpus < 1:
        raise ClusterError(f"--device cuda asks one GPU per cell, and the Ray cluster at "
                           f"{_gcs_address(ray)} has none; add GPU nodes or use --device cpu")
    return device


def describe_cluster() -> str:
    """The connected cluster in a few words: its address, nodes, CPUs and GPUs."""
    ray = import_ray()
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return (f"Ray cluster at {_gcs_address(ray)}: {nodes} node(s), "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def _check_reachable(ray: Any, target: str) -> None:
    """Fail fast (one line) when nothing listens at the cluster's address: ``ray.init``
    would otherwise retry for minutes."""
    host_port: str | None = target.removeprefix("ray://")
    if target == "auto":
        host_port = _auto_address(ray)
        if host_port is None:
            raise ClusterError("--address auto found no Ray cluster started on this machine; "
                               "start one with `ray start --head`, or give --address "
                               "HOST:PORT")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {target!r}: give auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ClusterError(f"cannot reach the Ray cluster at {target} ({host_port}: "
                           f"{error}); start it (`ray start --head`) or give the head "
                           f"node's address with --address HOST:PORT") from None


def _auto_address(ray: Any) -> str | None:
    """The address ``auto`` means: ``$RAY_ADDRESS`` or the last ``ray start`` on this
    machine (Ray's own lookup; ``None`` when there is none)."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - a private helper: any failure means "not found"
        return None


def _gcs_address(ray: Any) -> str:
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001 - only used to name the cluster in a message
        return "this address"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def run_on_ray(cells: Sequence[tuple[Model, str]], run: Run, bar: tqdm,
               results: list[CellResult], address: str | None = None) -> None:
    """Run every cell as a Ray task; append each result to ``results`` as it lands.

    The cells are submitted longest first (:mod:`mil_assert.costs`): Ray starts tasks
    that ask for the same resources about in the order they were submitted, so the long
    cells do not start last while the rest of the cluster idles. ``bar`` advances by one
    per finished cell. On any exception in the driver (KeyboardInterrupt included) the
    cells already finished are still appended, the others are cancelled (their workers
    stopped), and the exception propagates.
    """
    device = connect(address, run.device)
    ray = import_ray()
    cell_run = dataclasses.replace(run, device=device)
    task = ray.remote(_cell_on_worker).options(
        num_cpus=1, num_gpus=1 if device == "cuda" else 0, max_retries=CELL_RETRIES,
        retry_exceptions=False)
    cells = longest_first(cells, lambda cell: spec_cost(cell[0].spec, cell[1]))
    models = [_sendable(ray, model) for model, _ in cells]  # all checked before any task
    pending: dict[Any, tuple[Model, str, float]] = {}
    try:
        for (model, test), sent in zip(cells, models, strict=True):
            pending[task.remote(sent, model.base_dir, test, cell_run)] = (
                model, test, time.monotonic())
        while pending:
            reclaim_stop_signals()  # Ray's driver may set its SIGTERM handler again
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                _land(ray, ref, pending.pop(ref), run, bar, results)
            if not ready:
                time.sleep(POLL_S)
    except BaseException:
        if pending:
            finished, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in finished:
                _land(ray, ref, pending.pop(ref), run, bar, results)
            for ref in pending:
                ray.cancel(ref, force=True)
        raise


def _sendable(ray: Any, model: Model) -> str | ModelSpec:
    """The model's reference, checked to pickle before any task starts."""
    if not isinstance(model.ref, str):
        try:
            ray.cloudpickle.dumps(model.ref)
        except Exception as error:  # noqa: BLE001 - any pickling failure means the same
            raise ClusterError(f"the Ray executor sends each model to its worker, and model "
                               f"{model.spec.name!r} cannot be pickled ({error}); give it "
                               f"as 'pkg.module:factory' or 'path/to/file.py:factory'") from None
    return model.ref


def _land(ray: Any, ref: Any, cell: tuple[Model, str, float], run: Run, bar: tqdm,
          results: list[CellResult]) -> None:
    """Record one finished task: its result, or an ``error`` cell naming the failure."""
    model, test, submitted = cell
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        cause = error.cause if isinstance(error.cause, BaseException) else error
        result = failed_cell(model.spec, test, run, time.monotonic() - submitted,
                             f"on the Ray worker: {_first_line(cause)}")
    except ray.exceptions.RayError as error:
        result = failed_cell(model.spec, test, run, time.monotonic() - submitted,
                             f"the Ray task failed {1 + CELL_RETRIES} times (its worker "
                             f"process died; Ray retried it {CELL_RETRIES} times): "
                             f"{_first_line(error)}")
    results.append(result)
    bar.set_postfix_str(f"{result.model} on {result.test}")
    bar.update(1)
    bar.refresh()  # a landed cell is shown whatever the redraw interval


def failed_cell(spec: ModelSpec, test: str, run: Run, seconds: float,
                message: str) -> CellResult:
    """The ``error`` cell of a task that returned no result, with the seconds from its
    submission to its failure."""
    return dataclasses.replace(error_cell(spec, test, run, message), seconds=seconds)


def _cell_on_worker(ref: str | ModelSpec, base_dir: Path, test: str, run: Run) -> CellResult:
    """One cell on a Ray worker, with the CPUs (threads) and device Ray assigned it."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    device = resolve_device(run.device)
    spec = as_spec(ref, base_dir)
    result = run_cell(spec, TESTS[test], run.seeds, run.budget, run.dim, device,
                      regime=run.regime)
    return dataclasses.replace(result, ran_on=placement(ray, device))


def placement(ray: Any, device: Any) -> dict[str, Any]:
    """Where a task runs: ``node`` (host name), ``address`` (the node's IP), ``device``
    (as the task sees it) and, on a GPU, ``gpus``: the node's GPU ids Ray assigned."""
    where = {"executor": "ray", "node": socket.gethostname(),
             "address": ray.util.get_node_ip_address(), "device": str(device)}
    if device.type == "cuda":
        where["gpus"] = [str(g) for g in ray.get_gpu_ids()]
    return where
