"""Run the app in Flower's deployment mode on this machine: one SuperLink, N SuperNodes.

    python -m simulations.deployment --num-supernodes 2 --out-dir /abs/path/run \\
        --run-config "num-server-rounds=1 max-train-per-client=500"

Starts ``flower-superlink`` and ``flower-supernode`` processes bound to 127.0.0.1 (insecure: a
local rehearsal; across sites use TLS and node authentication, see the README), each SuperNode
with its own ``partition-id`` in ``--node-config``, submits the app with
``flwr run <app> <connection> --stream`` and stops every process it started, also on failure.
The run succeeded when ``<out-dir>/results.json`` was written (``flwr run --stream`` exits 0
even when the ServerApp fails).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[1]
CONNECTION = "local-deployment"
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


@dataclass
class Deployment:
    """What a local deployment run left: its results file and the process groups it started."""

    results: Path
    process_groups: list[int]
    logs: Path


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _wait_for_port(port: int, timeout: float, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a Flower process exited during start-up; see its log")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM each process group (the SuperLink's ServerApp and the SuperNodes' ClientApps are
    children), then SIGKILL what is left."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(deadline - time.monotonic(), 0.1))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    while any(group_alive(p.pid) for p in procs) and time.monotonic() < deadline + grace:
        time.sleep(0.2)  # killed children may take a moment to be gone


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_deployment(
    out_dir: Path, num_supernodes: int = 2, run_config: str = "", base_port: int = 19090,
    timeout: float = 900.0, logs: Path | None = None,
) -> Deployment:
    """Start the processes, run the app to completion, stop everything; raise on failure."""
    if not out_dir.is_absolute():
        raise ValueError(f"out_dir must be absolute, got {out_dir}")
    logs = logs or Path(tempfile.mkdtemp(prefix="dmm-fed-deploy-"))
    home = logs / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    link = f"127.0.0.1:{base_port}"  # Flower 1.42 serves Fleet, Control and runtime APIs here
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{link}"\ninsecure = true\n'
    )
    env = {**os.environ, **QUIET_ENV, "FLWR_HOME": str(home)}
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start("superlink", [
            _bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
            "--port", str(base_port), "--disable-runtime-dependency-installation",
        ])
        _wait_for_port(base_port, 60, procs)
        for i in range(num_supernodes):
            start(f"supernode-{i}", [
                _bin("flower-supernode"), "--insecure", "--superlink", link,
                "--host", "127.0.0.1", "--port", str(base_port + 1 + i),
                "--node-config", f"partition-id={i} num-partitions={num_supernodes}",
            ])
        config = f"output-dir='{out_dir}' min-nodes={num_supernodes} {run_config}".strip()
        cmd = [_bin("flwr"), "run", str(APP_DIR), CONNECTION, "--stream", "--run-config", config]
        print(f"$ {' '.join(cmd)}", flush=True)
        with open(logs / "flwr-run.log", "w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                           check=True)
    finally:
        _stop(procs)
    results = out_dir / "results.json"
    if not results.exists():
        tail = (logs / "flwr-run.log").read_text()[-3000:]
        raise RuntimeError(f"the run wrote no {results}; logs in {logs}; flwr run said:\n{tail}")
    return Deployment(results, [p.pid for p in procs], logs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-supernodes", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, required=True, help="absolute output directory")
    parser.add_argument("--run-config", default="", help="extra key=value overrides")
    parser.add_argument("--base-port", type=int, default=19090,
                        help="SuperLink port; SuperNode i serves its ClientApp API on base+1+i")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    if not args.out_dir.is_absolute():
        parser.error(f"--out-dir must be absolute (the ServerApp runs in the SuperLink's "
                     f"working directory), got {args.out_dir}")
    done = run_deployment(args.out_dir, args.num_supernodes, args.run_config, args.base_port,
                          args.timeout)
    print(f"wrote {done.results}; process logs in {done.logs}")


if __name__ == "__main__":
    main()
