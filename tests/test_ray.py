"""Cells on a Ray cluster (``--executor ray``): the same per-seed AUCs as one job, a
killed worker retried and then an ``error`` cell, an interrupt that keeps the finished
cells, and a cluster started with ``ray start --head`` that the run finds and then cannot
reach once it is shut down.

Every test but the first needs Ray (``pip install "mil-assert[ray]"``) and skips without
it. One local cluster of 2 CPUs serves the in-process tests (Ray takes seconds to start);
the models are the suite's toy models with their tiny budget.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import mil_assert
import mil_assert.runner
from mil_assert.ray_executor import CELL_RETRIES, ClusterError, import_ray
from mil_assert.results import CellResult

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "toy_models.py"
TESTS = "single_concept,label_swap"

FAULTY_MODELS = '''
import os
import signal
import time
from pathlib import Path

from torch import nn

from mil_assert import ModelSpec

TINY = {{"n_train_bags": 64, "n_eval_bags": 64, "epochs": 3}}
FOLDER = Path({folder!r})
DRIVER = {driver}
CALLS = {{"once": [], "always": [], "sleeper": []}}  # per model: a worker may run several


class Max(nn.Module):
    """The toy models' InstanceMax, with a hook that runs on every forward pass."""

    def __init__(self, dim, hook):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.hook = hook

    def forward(self, X, mask):
        self.hook(self.training)
        return self.score(X).squeeze(-1).masked_fill(~mask, -1e9).amax(dim=1)


def die_in_training_once(training):
    """The worker kills its own process in the middle of training, the first time only."""
    CALLS["once"].append(training)
    if sum(CALLS["once"]) == 6 and not (FOLDER / "killed").exists():
        (FOLDER / "killed").touch()
        os.kill(os.getpid(), signal.SIGKILL)


def die_in_training(training):
    """Every attempt's worker kills its own process in training; each attempt is counted."""
    CALLS["always"].append(training)
    if sum(CALLS["always"]) == 6:
        with open(FOLDER / "attempts", "a") as attempts:
            attempts.write(f"{{os.getpid()}}\\n")
        os.kill(os.getpid(), signal.SIGKILL)


def interrupt_the_driver(training):
    """Once the driver has a finished cell: record this worker, Ctrl-C the driver (if
    known), and never finish."""
    if CALLS["sleeper"]:
        return
    CALLS["sleeper"].append(training)
    while not (FOLDER / "landed").exists():
        time.sleep(0.05)
    (FOLDER / "sleeper").write_text(str(os.getpid()))
    if DRIVER:
        os.kill(DRIVER, signal.SIGINT)
    time.sleep(600)


dies_once = ModelSpec(name="dies_once", factory=lambda d: Max(d, die_in_training_once),
                      budget=TINY)
always_dies = ModelSpec(name="always_dies", factory=lambda d: Max(d, die_in_training),
                        budget=TINY)
sleeper = ModelSpec(name="sleeper", factory=lambda d: Max(d, interrupt_the_driver),
                    budget=TINY)
'''


def faulty_models(folder: Path, driver: int = 0) -> Path:
    """The faulty models' file in ``folder``, which also holds their marker files;
    ``driver``: the process the sleeper Ctrl-Cs (0: none)."""
    path = folder / "faulty_models.py"
    path.write_text(textwrap.dedent(FAULTY_MODELS.format(folder=str(folder), driver=driver)))
    return path


def per_seed(report: mil_assert.ComplianceReport) -> dict[tuple[str, str], tuple]:
    """Each cell's verdict and per-seed AUCs."""
    def seeds(summary):
        return None if summary is None else tuple(summary.per_seed)

    return {(r.model, r.test): (r.verdict, seeds(r.val_auc), seeds(r.test_auc),
                                seeds(r.control_auc)) for r in report.results}


def gone(pid: int, within_s: float = 60.0) -> bool:
    """Whether process ``pid`` has ended (polled; a bound, not a timing claim)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_without_ray_the_error_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClusterError, match=r'pip install "mil-assert\[ray\]"'):
        import_ray()
    with pytest.raises(ValueError, match=r'pip install "mil-assert\[ray\]"'):
        mil_assert.check(f"{TOY}:tiny_max", tests="single_concept", seeds=2, progress=False,
                         executor="ray")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs in this process, shared by the module's tests."""
    import logging

    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_job() -> mil_assert.ComplianceReport:
    """The reference: tiny_max and shortcut in this process (jobs=1)."""
    return mil_assert.check([f"{TOY}:tiny_max", f"{TOY}:shortcut"], tests=TESTS, seeds=2,
                            device="cpu", progress=False)


def test_ray_gives_the_per_seed_aucs_of_one_job(cluster, one_job):
    on_ray = mil_assert.check([f"{TOY}:tiny_max", f"{TOY}:shortcut"], tests=TESTS, seeds=2,
                              device="cpu", progress=False, executor="ray")
    assert len(on_ray.results) == 4 and not on_ray.interrupted
    assert per_seed(on_ray) == per_seed(one_job)
    assert {(r.model, r.test): r.verdict for r in on_ray.results} == {  # seeds 0, 1
        ("tiny_max", "single_concept"): "inconclusive",  # 1 lost, 1 unlearned
        ("tiny_max", "label_swap"): "inconclusive",  # the capacity control unlearned
        ("shortcut", "single_concept"): "violation",  # 2 inverted
        ("shortcut", "label_swap"): "violation"}  # 2 learned the swapped rule
    for result in on_ray.results:  # where each cell ran, in the report too
        assert result.ran_on["node"] == socket.gethostname()
        assert result.ran_on["device"] == "cpu"
    assert all(r.ran_on is None for r in one_job.results)
    saved = on_ray.as_dict()["results"]
    assert saved[0]["ran_on"]["executor"] == "ray"
    assert CellResult.from_dict(saved[0]).ran_on == on_ray.results[0].ran_on


def test_a_killed_worker_is_retried_then_an_error_and_no_cell_is_lost(cluster, one_job,
                                                                        tmp_path):
    models = faulty_models(tmp_path)
    report = mil_assert.check([f"{models}:dies_once", f"{models}:always_dies",
                               f"{TOY}:tiny_max"], tests="single_concept", seeds=2,
                              device="cpu", progress=False, executor="ray")
    cells = {r.model: r for r in report.results}
    assert set(cells) == {"dies_once", "always_dies", "tiny_max"} and not report.interrupted
    assert (tmp_path / "killed").exists()  # dies_once's first worker was killed in training
    reference = per_seed(one_job)[("tiny_max", "single_concept")]
    assert per_seed(report)[("dies_once", "single_concept")] == reference  # the retry's
    assert per_seed(report)[("tiny_max", "single_concept")] == reference
    attempts = (tmp_path / "attempts").read_text().split()
    assert len(attempts) == 1 + CELL_RETRIES and len(set(attempts)) == len(attempts)
    failed = cells["always_dies"]
    assert failed.verdict == "error" and failed.val_auc is None
    assert "WorkerCrashedError" in failed.message
    assert f"failed {1 + CELL_RETRIES} times" in failed.message
    assert failed.gate_failure is not None and not report.passed


@pytest.mark.skipif(bool(os.environ.get("PYTEST_XDIST_WORKER")),
                    reason="sends SIGINT to the pytest process, which an xdist worker does not "
                           "turn into KeyboardInterrupt; .ci/run runs it without -n")
def test_an_interrupt_keeps_the_finished_cells_and_stops_the_rest(cluster, tmp_path,
                                                                  monkeypatch):
    models = faulty_models(tmp_path, driver=os.getpid())
    bar = mil_assert.runner.tqdm

    class Landed(bar):  # tells the sleeper when the driver holds a finished cell
        def update(self, n=1):
            shown = super().update(n)
            if self.n >= 1:
                (tmp_path / "landed").touch()
            return shown

    monkeypatch.setattr(mil_assert.runner, "tqdm", Landed)
    # A job started in the background of a non-interactive shell (`.ci/run &`) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: restore it.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = mil_assert.check([f"{TOY}:tiny_max", f"{models}:sleeper"],
                                  tests="single_concept", seeds=2, device="cpu",
                                  progress=True, executor="ray")
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert report.interrupted and report.stopped_by == "SIGINT" and not report.passed
    assert [r.model for r in report.results] == ["tiny_max"]
    assert report.as_dict()["interrupted"] is not None
    assert gone(int((tmp_path / "sleeper").read_text()))  # its task was cancelled


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_head(temp_dir: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    """``ray start --head --block`` (ended by terminating it); returns once it runs."""
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=env)
    for line in head.stdout:
        if "Ray runtime started" in line:
            threading.Thread(target=head.stdout.read, daemon=True).start()  # keep draining
            return head
    raise AssertionError(f"ray start --head exited with {head.wait()}")


def test_a_cluster_from_ray_start_runs_the_cli_then_cannot_be_reached(one_job, tmp_path):
    pytest.importorskip("ray")
    models = faulty_models(tmp_path)
    (tmp_path / "landed").touch()  # the sleeper starts at once and never finishes
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # Ray's own way
    head = start_head(temp_dir, port, env)
    command = [sys.executable, "-m", "mil_assert.cli", "check", "--seeds", "2",
               "--tests", "single_concept", "--device", "cpu", "--executor", "ray",
               "--address", f"127.0.0.1:{port}"]
    try:
        report = tmp_path / "report.json"
        run = subprocess.Popen([*command, f"{TOY}:tiny_max", f"{models}:sleeper",
                                "--report", str(report)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               cwd=tmp_path)
        progress = b""
        while b"1.0/2 cells" not in progress and run.poll() is None:
            progress += os.read(run.stderr.fileno(), 4096)  # the bar: tiny_max landed
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
        assert run.returncode == 128 + signal.SIGTERM, (out, progress + err)
        assert f":{port}: 1 node(s), 2 CPUs, 0 GPUs" in out.decode()  # the header
        data = json.loads(report.read_text())
        assert data["interrupted"] is not None
        [cell] = data["results"]
        assert cell["model"] == "tiny_max" and cell["ran_on"]["node"] == socket.gethostname()
        reference = per_seed(one_job)[("tiny_max", "single_concept")]
        assert (cell["val_auc"]["per_seed"], cell["test_auc"]["per_seed"]) == (
            list(reference[1]), list(reference[2]))
        assert gone(int((tmp_path / "sleeper").read_text()))  # cancelled on SIGTERM
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    unreachable = subprocess.run([*command, f"{TOY}:tiny_max"], capture_output=True,
                                 text=True, env=env, cwd=tmp_path, timeout=120)
    assert unreachable.returncode == 2
    [line] = unreachable.stderr.strip().splitlines()
    assert line.startswith(f"mil-assert: error: cannot reach the Ray cluster at "
                           f"127.0.0.1:{port}")
    assert "mil-assert check:" not in unreachable.stdout  # stopped before any training
