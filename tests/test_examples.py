"""The examples run end to end: the quick start on the embedded store, and TensorLayer's MNIST
example with separate runner processes on a real server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras", reason="the examples train tf.keras models: pip install 'tensorhub[tensorflow]'")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_quickstart_on_the_embedded_store():
    out = run("examples/quickstart.py")
    assert out.count("finished") == 3 and "best: n_units=" in out


@pytest.mark.heavy  # whole examples / hundreds of MB: engine-indifferent, not rerun on ferretdb_pg
def test_mnist_example_with_two_runner_processes(server_uri):
    runners = [subprocess.Popen([sys.executable, "-m", "tensorhub.cli", "runner", "--uri", server_uri,
                                 "--project", "mnist-example", "--poll-interval", "0.2"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        out = run("examples/mnist/distributor.py", "--uri", server_uri, "--timeout", "500")
    finally:
        for proc in runners:
            proc.terminate()
        for proc in runners:
            proc.wait(timeout=60)
    assert out.count(" finished ") == 3 and "best model: n_units=" in out
    from tensorhub import TensorHub

    hub = TensorHub(server_uri, project_name="mnist-example")
    try:
        assert len(hub.list_models("mlp")) == 3
        assert len(hub.find_metrics()) == 6  # 2 epochs reported by each of the 3 tasks
    finally:
        hub.close()


@pytest.mark.heavy  # whole examples / hundreds of MB: engine-indifferent, not rerun on ferretdb_pg
def test_resume_sweep_example_kills_a_runner_and_resumes_elsewhere(server_uri, tmp_path):
    png = tmp_path / "curves.png"
    out = run("examples/resume_sweep.py", "--uri", server_uri, "--plot", str(png), timeout=900)
    assert "kill -9 runner" in out and "resumed at epoch" in out
    assert "val_accuracy" in out and "best: epoch" in out and "learning curves:" in out
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.std() > 0.01  # a drawn figure, not a blank file
    from tensorhub import TensorHub

    hub = TensorHub(server_uri, project_name="resume-demo")
    try:
        runs = hub.list_runs("sweep")
        resumed = [r for r in runs if r.parent_run_id is not None]
        assert len(resumed) >= 1 and all(r.status == "finished" for r in resumed)
        assert hub.task_counts("sweep")["finished"] == 4
    finally:
        hub.close()
