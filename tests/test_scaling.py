"""Beyond one process: Flower's deployment mode and an existing Ray cluster, both on 127.0.0.1."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from flwr.app import Context, Message

from simulations.deployment import group_alive, run_deployment

TINY = {
    "domains": "mnist,optdigits", "max-train-per-client": 150, "max-test-per-domain": 300,
    "local-epochs": 1, "pseudo-samples-per-teacher": 8, "synthesis-steps": 3, "distill-steps": 3,
    "report-baselines": False,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_deployment_mode_runs_to_completion_and_stops_every_process(data_root, tmp_path):
    config = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower()}"
                      for k, v in {**TINY, "data-root": str(data_root)}.items())
    done = run_deployment(tmp_path / "run", num_supernodes=2, run_config=config,
                          base_port=_free_port(), timeout=600, logs=tmp_path / "logs")
    results = json.loads(done.results.read_text())
    assert results["rounds"][1]["train"]["replies-usable"] == 2
    assert set(results["final-accuracy"]) == {"mnist", "optdigits"}
    # each SuperNode loaded its own partition: one client per domain
    report = json.loads((tmp_path / "run" / "round-1-dmm.json").read_text())
    assert report["clients"] == ["0:mnist", "1:optdigits"]
    assert len(done.process_groups) == 3
    assert not any(group_alive(pgid) for pgid in done.process_groups)
    assert "Starting Flower SuperLink" in (tmp_path / "logs" / "superlink.log").read_text()


@pytest.mark.slow
def test_the_simulation_attaches_to_an_existing_ray_cluster(
    run_app, data_root, tmp_path, monkeypatch
):
    port = _free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    # a private temp dir: Ray records the cluster in <temp-dir>/ray_current_cluster, and a stale
    # /tmp/ray/ray_current_cluster would make every later ray.init() try to join this cluster
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", temp_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    seen = tmp_path / "seen"
    seen.mkdir()

    def record_cluster(msg: Message, context: Context, call_next) -> Message:
        import ray  # inside the Ray actor that runs this ClientApp

        (seen / f"{os.getpid()}.txt").write_text(ray.get_runtime_context().gcs_address)
        return call_next(msg, context)

    try:
        deadline = time.monotonic() + 120
        while subprocess.run([ray_bin, "status", "--address", address],
                             capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "Ray head did not start"
            time.sleep(1)
        monkeypatch.setenv("RAY_ADDRESS", address)  # what `flwr run` users set, see README
        overrides = {**TINY, "data-root": str(data_root), "output-dir": str(tmp_path / "run"),
                     "round-timeout": 300.0, "node-wait-timeout": 60.0}
        results = run_app(overrides, 2, mods=[record_cluster])
        assert results["rounds"][1]["train"]["replies-usable"] == 2
        # every ClientApp ran on the existing cluster (Ray reports the GCS under the node's own
        # IP; the port is the one the head was started with)
        ports = {p.read_text().rsplit(":", 1)[1] for p in seen.iterdir()}
        assert ports == {str(port)}
        assert head.poll() is None  # and the simulation left the cluster running
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not Path("/tmp/ray/ray_current_cluster").exists() or str(port) not in Path(
        "/tmp/ray/ray_current_cluster").read_text()
