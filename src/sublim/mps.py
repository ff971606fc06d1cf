"""NVIDIA MPS for trainings that share a card (`sizing.<size>.gpu_share` < 1 and `mps: true`).

Without MPS the CUDA contexts of four processes on one GPU take turns in time slices; as clients of
one MPS server their kernels run side by side (what that gains: benchmarks/README.md). The first training that wants the daemon starts it,
under a lock, and checks that a CUDA client can run under it; later ones join. The workflow stops
the daemons it started when it ends (Snakefile onsuccess/onerror). Where the control program is
missing or the daemon does not work, the training runs without MPS and its log says why.

With one card (profiles/b200) there is one daemon, for the machine. Where sublim.devices gave the
job its card (profiles/multi-gpu) each card has its own daemon, in its own folder, started with
only that card visible (by UUID). Its clients name the card by UUID too: NVIDIA's MPS guide
("CUDA_VISIBLE_DEVICES") warns that indices are renumbered by the server and recommends UUIDs, and
a client that cannot reach the daemon still runs on its own card. The lent H200 checks this
(benchmarks/multi_gpu_check.py: the packed processes must show as MPS clients, on the right card).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sublim import devices

CONTROL = "nvidia-cuda-mps-control"
# /tmp and short: the daemon's unix socket path must stay under ~100 characters
DEFAULT_DIR = Path(os.environ.get("SUBLIM_MPS_DIR") or f"/tmp/sublim-mps-{os.getuid()}")
STARTED_MARKER = "started-by-sublim"
# a CUDA context under the new daemon: a broken MPS setup shows here, not in the training
CUDA_PROBE = [sys.executable, "-c", "import torch; torch.ones(1, device='cuda').add_(1); torch.cuda.synchronize()"]

log = logging.getLogger(__name__)


def wanted(sizing: dict) -> bool:
    """MPS only helps trainings that share a card."""
    return bool(sizing["mps"]) and float(sizing["gpu_share"]) < 1


def daemon_dir(base_dir: Path = DEFAULT_DIR, device: str | None = None) -> Path:
    """The machine's daemon lives in base_dir, a card's in base_dir/gpu-<device>."""
    return base_dir if device is None else base_dir / f"gpu-{device}"


def client_env(base_dir: Path = DEFAULT_DIR, device: str | None = None, uuid: str | None = None) -> dict[str, str]:
    folder = daemon_dir(base_dir, device)
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    return {**env, "CUDA_VISIBLE_DEVICES": uuid} if uuid else env


def _control(command: str | None, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    # the machine's daemon manages every GPU, whichever one this job was given; a card's daemon
    # gets that card's UUID from client_env
    daemon_env = {**{k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}, **env}
    args = [CONTROL] if command is not None else [CONTROL, "-d"]
    return subprocess.run(args, input=f"{command}\n" if command else None, env=daemon_env,
                          capture_output=True, text=True, timeout=timeout)


def daemon_running(env: dict[str, str]) -> bool:
    return _control("get_server_list", env).returncode == 0


def _query(fields: str, device: str | None = None) -> list[str]:
    selected = ["-i", device] if device is not None else []
    result = subprocess.run(["nvidia-smi", *selected, f"--query-gpu={fields}", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=60)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def compute_modes(device: str | None = None) -> list[str]:
    return _query("compute_mode", device)


def gpu_uuid(device: str) -> str | None:
    """The UUID of a card named by its nvidia-smi index (or already by its UUID)."""
    if device.startswith(("GPU-", "MIG-")):
        return device
    found = _query("uuid", device)
    return found[0] if len(found) == 1 and found[0].startswith(("GPU-", "MIG-")) else None


def join(base_dir: Path = DEFAULT_DIR, probe: list[str] = CUDA_PROBE, device: str | None = None) -> str | None:
    """Make this process an MPS client, starting the daemon if none runs: the machine's, or with
    `device` that card's own. Call it before CUDA is initialised. Returns None when joined,
    otherwise why not (the process then runs without MPS)."""
    if shutil.which(CONTROL) is None or shutil.which("nvidia-smi") is None:
        return f"{CONTROL} or nvidia-smi is not on PATH (no NVIDIA driver utilities here)"
    # on an exclusive-process GPU the MPS server would be its only process: generate and
    # evaluate, which do not join, could no longer start
    modes = compute_modes(device)
    if any(mode != "Default" for mode in modes):
        return f"GPU compute mode is {', '.join(modes)}, not Default"
    uuid = None
    if device is not None and (uuid := gpu_uuid(device)) is None:
        return f"nvidia-smi gives no UUID for GPU {device}"
    env = client_env(base_dir, device, uuid)
    folder = daemon_dir(base_dir, device)
    for directory in (env["CUDA_MPS_PIPE_DIRECTORY"], env["CUDA_MPS_LOG_DIRECTORY"]):
        Path(directory).mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as lock:
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
            (folder / STARTED_MARKER).touch()
    os.environ.update(env)
    return None


def join_if_wanted(sizing: dict, base_dir: Path = DEFAULT_DIR) -> bool:
    """The training job's entry: join MPS when its sizing asks for it, log the outcome. A job
    whose card came from sublim.devices joins that card's daemon."""
    if not wanted(sizing):
        return False
    cards = devices.claimed()
    device = cards[0] if cards and len(cards) == 1 else None
    reason = join(base_dir, device=device)
    if reason:
        log.warning("training without MPS: %s. Packed trainings then time-slice the GPU (slower, same results); "
                    "set sizing mps: false to silence this", reason)
        return False
    log.info("MPS client of the daemon at %s", client_env(base_dir, device)["CUDA_MPS_PIPE_DIRECTORY"])
    return True


def stop_if_started(base_dir: Path = DEFAULT_DIR) -> bool:
    """Stop the daemons that trainings of this workflow started: the machine's and each card's
    (the workflow's end handlers)."""
    if shutil.which(CONTROL) is None:
        return False
    stopped = False
    for marker in [base_dir / STARTED_MARKER, *sorted(base_dir.glob(f"gpu-*/{STARTED_MARKER}"))]:
        if not marker.exists():
            continue
        marker.unlink()
        env = client_env(marker.parent, None)
        try:  # `quit` waits for the daemon's clients to exit; it quits on its own once they have
            _control("quit", env, timeout=60)
        except subprocess.TimeoutExpired:
            log.warning("the MPS daemon at %s still has clients after 60 s; it stops when they exit",
                        env["CUDA_MPS_PIPE_DIRECTORY"])
        stopped = True
    return stopped
