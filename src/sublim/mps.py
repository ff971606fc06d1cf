"""NVIDIA MPS for trainings that share a card (`sizing.<size>.gpu_share` < 1 and `mps: true`).

Without MPS the CUDA contexts of four processes on one GPU take turns in time slices; as clients of
one MPS server their kernels run side by side. Four packed 1.5b trainings on an H200: 47-49k tokens/s
without, 60.1k with (benchmarks/README.md). The first training that wants the daemon starts it,
under a lock, and checks that a CUDA client can run under it; later ones join. The workflow stops
the daemon it started when it ends (Snakefile onsuccess/onerror). Where the control program is
missing or the daemon does not work, the training runs without MPS and its log says why.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
# /tmp and short: the daemon's unix socket path must stay under ~100 characters
DEFAULT_DIR = Path(os.environ.get("SUBLIM_MPS_DIR") or f"/tmp/sublim-mps-{os.getuid()}")
STARTED_MARKER = "started-by-sublim"
# a CUDA context under the new daemon: a broken MPS setup shows here, not in the training
CUDA_PROBE = [sys.executable, "-c", "import torch; torch.ones(1, device='cuda').add_(1); torch.cuda.synchronize()"]

log = logging.getLogger(__name__)


def wanted(sizing: dict) -> bool:
    """MPS only helps trainings that share a card."""
    return bool(sizing.get("mps")) and float(sizing.get("gpu_share", 1.0)) < 1


def client_env(base_dir: Path = DEFAULT_DIR) -> dict[str, str]:
    return {"CUDA_MPS_PIPE_DIRECTORY": str(base_dir / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(base_dir / "log")}


def _control(command: str | None, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    # the daemon manages every GPU of the machine, whichever one this job was given
    daemon_env = {k: v for k, v in {**os.environ, **env}.items() if k != "CUDA_VISIBLE_DEVICES"}
    args = [CONTROL] if command is not None else [CONTROL, "-d"]
    return subprocess.run(args, input=f"{command}\n" if command else None, env=daemon_env,
                          capture_output=True, text=True, timeout=timeout)


def daemon_running(env: dict[str, str]) -> bool:
    return _control("get_server_list", env).returncode == 0


def compute_modes() -> list[str]:
    result = subprocess.run(["nvidia-smi", "--query-gpu=compute_mode", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=60)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def join(base_dir: Path = DEFAULT_DIR, probe: list[str] = CUDA_PROBE) -> str | None:
    """Make this process an MPS client, starting the daemon if none runs. Call it before CUDA is
    initialised. Returns None when joined, otherwise why not (the process then runs without MPS)."""
    if shutil.which(CONTROL) is None or shutil.which("nvidia-smi") is None:
        return f"{CONTROL} or nvidia-smi is not on PATH (no NVIDIA driver utilities here)"
    # on an exclusive-process GPU the MPS server would be its only process: generate and
    # evaluate, which do not join, could no longer start
    modes = compute_modes()
    if any(mode != "Default" for mode in modes):
        return f"GPU compute mode is {', '.join(modes)}, not Default"
    env = client_env(base_dir)
    for directory in env.values():
        Path(directory).mkdir(parents=True, exist_ok=True)
    with open(base_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not daemon_running(env):
            started = _control(None, env)
            if started.returncode or not daemon_running(env):
                return f"`{CONTROL} -d` failed: {(started.stderr or started.stdout).strip() or 'no daemon answered'}"
            checked = subprocess.run(probe, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
            if checked.returncode:
                _control("quit", env)
                last = (checked.stderr.strip().splitlines() or ["no output"])[-1]
                return f"a CUDA process failed under the new MPS daemon ({last}); daemon stopped"
            (base_dir / STARTED_MARKER).touch()
    os.environ.update(env)
    return None


def join_if_wanted(sizing: dict, base_dir: Path = DEFAULT_DIR) -> bool:
    """The training job's entry: join MPS when its sizing asks for it, log the outcome."""
    if not wanted(sizing):
        return False
    reason = join(base_dir)
    if reason:
        log.warning("training without MPS: %s. Packed trainings then time-slice the GPU (slower, same results); "
                    "set sizing mps: false to silence this", reason)
        return False
    log.info("MPS client of the daemon at %s", client_env(base_dir)["CUDA_MPS_PIPE_DIRECTORY"])
    return True


def stop_if_started(base_dir: Path = DEFAULT_DIR) -> bool:
    """Stop the daemon if a training of this workflow started it (the workflow's end handlers)."""
    marker = base_dir / STARTED_MARKER
    if not marker.exists() or shutil.which(CONTROL) is None:
        return False
    marker.unlink()
    try:  # `quit` waits for the daemon's clients to exit; it quits on its own once they have
        _control("quit", client_env(base_dir), timeout=60)
    except subprocess.TimeoutExpired:
        log.warning("the MPS daemon at %s still has clients after 60 s; it stops when they exit",
                    client_env(base_dir)["CUDA_MPS_PIPE_DIRECTORY"])
    return True
