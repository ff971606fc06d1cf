"""Which GPU(s) a job runs on when one machine has several (profiles/multi-gpu, config `local_gpus`).

Snakemake's `gpu_slots` budget (GPU_SLOTS per card, sublim.gpu_share) keeps the jobs that run at
once within the machine; this module picks the physical cards. Every card is GPU_SLOTS lock files,
one per slot, under LOCK_DIR. A job holds the locks of its slots (fcntl.flock) for as long as its
process lives, so a job that fails, or is SIGKILLed, frees its card: the kernel drops a dead
process's locks. A training with `gpu_share` < 1 takes slots of one card, on the fullest card it
fits (whole cards stay free for generate/evaluate); a job of k GPUs (vLLM `tensor_parallel_size`
k, a training on k processes) takes k whole cards. Placement happens under one allocator lock and
is all or nothing, so no job holds a card while it waits for another. A job that finds no place
(cards fragmented by packed trainings that ended in another order) waits until one frees, and
logs that it waits. The job then sees only its cards: CUDA_VISIBLE_DEVICES, set before CUDA starts.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sublim.config import ConfigError
from sublim.gpu_share import GPU_SLOTS

# one folder per user and machine: two workflows of one user on one machine share the cards too
LOCK_DIR = Path(os.environ.get("SUBLIM_GPU_LOCK_DIR") or f"/tmp/sublim-gpus-{os.getuid()}")
WAIT_POLL_S = 1.0

log = logging.getLogger(__name__)


@dataclass
class Claim:
    """The cards one job holds: device ids as CUDA_VISIBLE_DEVICES names them, and its slots."""
    devices: list[str]
    slots: int  # per card: GPU_SLOTS for whole cards, fewer for a packed training
    waited_s: float = 0.0
    _handles: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for handle in self._handles:
            handle.close()  # closing the file drops its lock
        self._handles.clear()


_claim: Claim | None = None  # this process's claim (one job per process)


def claimed() -> list[str] | None:
    """The devices this job process claimed, or None where no allocator runs (one GPU, SLURM, CPU)."""
    return list(_claim.devices) if _claim else None


def resolve_devices(setting, environ=None) -> list[str]:
    """`local_gpus.devices`: a list of device ids, or `auto`: those this process may use
    ($CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists)."""
    environ = os.environ if environ is None else environ
    if setting != "auto":
        devices = [str(device).strip() for device in setting]
    elif environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        devices = [device.strip() for device in environ["CUDA_VISIBLE_DEVICES"].split(",") if device.strip()]
    else:
        devices = _nvidia_smi_indices()
    if not devices or len(set(devices)) != len(devices):
        raise ConfigError(
            f"config key 'local_gpus.devices': {setting!r} gives {devices or 'no devices'}; list each GPU "
            f"once (e.g. [0, 1, 2, 3]), or with `auto` make them visible (nvidia-smi, or CUDA_VISIBLE_DEVICES)")
    return devices


def _nvidia_smi_indices() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=60)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def slot_budget(n_devices: int, given: int | None) -> int:
    """The `gpu_slots` resource of the whole machine: GPU_SLOTS per card unless the user caps it lower."""
    full = GPU_SLOTS * n_devices
    if given is None:
        return full
    if given > full:
        raise ConfigError(f"resources gpu_slots={given} is more than the {n_devices} GPU(s) of "
                          f"local_gpus.devices hold ({GPU_SLOTS} per card = {full}); Snakemake would start "
                          f"jobs that can only wait for a card. Leave gpu_slots out or set it to at most {full}")
    return given


def local_gpu_slots(config: dict, given) -> int | None:
    """At parse time (common.smk): resolve `local_gpus.devices` in the config, once for every job
    (config is no rerun trigger), and return the machine's `gpu_slots` budget; None without the
    allocator. `given`: the gpu_slots resource from the command line or profile, if any."""
    section = config.get("local_gpus")
    if not section:
        return None
    section["devices"] = resolve_devices(section["devices"])
    return slot_budget(len(section["devices"]), getattr(given, "value", given))


def job_request(resources) -> tuple[int, int]:
    """(cards, slots per card) of a job, from the resources Snakemake booked for it (`gpu`: GPUs,
    `gpu_slots`: its share, common.smk). A training that shares a card books fewer than GPU_SLOTS."""
    cards = int(resources.get("gpu", 0) or 0)
    slots = int(resources.get("gpu_slots", 0) or 0)
    if cards == 1 and 0 < slots < GPU_SLOTS:
        return 1, slots
    return cards, GPU_SLOTS


def _slot_path(lock_dir: Path, device: str, slot: int) -> Path:
    return lock_dir / f"gpu-{device}.slot-{slot}.lock"


def _try_lock(path: Path):
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _free_slots(lock_dir: Path, device: str) -> list[int]:
    """Slots of a card nobody holds. Called under the allocator lock: a probe that finds a slot free
    lets go at once, and no other claimant can take it in between."""
    free = []
    for slot in range(GPU_SLOTS):
        handle = _try_lock(_slot_path(lock_dir, device, slot))
        if handle is not None:
            handle.close()
            free.append(slot)
    return free


def _place(free: dict[str, list[int]], cards: int, slots: int) -> dict[str, list[int]] | None:
    """Which slots of which cards a job takes, or None if it must wait."""
    if slots < GPU_SLOTS:  # a share of one card: the fullest card it fits on, so whole cards stay free
        fitting = [device for device in free if len(free[device]) >= slots]
        if not fitting:
            return None
        device = min(fitting, key=lambda d: len(free[d]))  # min() keeps the first of equals: device order
        return {device: free[device][:slots]}
    idle = [device for device in free if len(free[device]) == GPU_SLOTS]
    return {device: free[device] for device in idle[:cards]} if len(idle) >= cards else None


class _AllocatorLock:
    def __init__(self, lock_dir: Path):
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.path = lock_dir / "allocator.lock"

    def __enter__(self):
        self.handle = open(self.path, "a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.handle.close()


def claim(devices: list[str], cards: int, slots: int = GPU_SLOTS, job: str = "", lock_dir: Path = LOCK_DIR,
          poll_s: float = WAIT_POLL_S) -> Claim:
    """Take `slots` slots on each of `cards` cards of `devices`, waiting until they are free."""
    if cards > len(devices):
        raise ConfigError(f"{job or 'this job'} asks for {cards} GPUs (resource gpu, from sizing.<size>.gpus) "
                          f"but local_gpus.devices has {len(devices)} ({', '.join(devices)}): lower the size's "
                          f"gpus (with tensor_parallel_size / train_processes) or use a machine with more GPUs")
    if not 1 <= slots <= GPU_SLOTS or (slots < GPU_SLOTS and cards != 1):
        raise ValueError(f"cannot claim {slots} slots on each of {cards} cards")
    started, told = time.monotonic(), False
    while True:
        with _AllocatorLock(lock_dir):
            place = _place({device: _free_slots(lock_dir, device) for device in devices}, cards, slots)
            handles = [] if place is None else [_try_lock(_slot_path(lock_dir, device, slot))
                                                for device, taken in place.items() for slot in taken]
            if place is not None and all(handles):
                for handle in handles:  # who holds the slot, for a person looking at the lock folder
                    handle.truncate(0)
                    handle.write(f"pid {os.getpid()} {job}\n")
                    handle.flush()
                return Claim(list(place), slots, time.monotonic() - started, handles)
            for handle in handles:
                if handle is not None:
                    handle.close()
        if not told:
            what = f"{slots} of {GPU_SLOTS} slots of one GPU" if slots < GPU_SLOTS else f"{cards} whole GPU(s)"
            log.info("%s waits for %s of %s (lock files in %s)", job or "job", what, ", ".join(devices), lock_dir)
            told = True
        time.sleep(poll_s)


def held_slots(devices: list[str], lock_dir: Path = LOCK_DIR) -> dict[str, int]:
    """Slots held per card right now (for checks and benchmarks; takes the allocator lock)."""
    with _AllocatorLock(lock_dir):
        return {device: GPU_SLOTS - len(_free_slots(lock_dir, device)) for device in devices}


def claim_gpus(config: dict, resources, job: str, lock_dir: Path | None = None) -> Claim | None:
    """A GPU job's first step (workflow/scripts), before CUDA starts: claim its cards and make them
    the only ones it sees. Does nothing unless the profile turns the allocator on (`local_gpus`) and
    the job uses a GPU. The claim lasts as long as the process."""
    global _claim
    section = config.get("local_gpus")
    cards, slots = job_request(resources)
    if not section or cards == 0:
        return None
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        raise RuntimeError("claim_gpus() must run before CUDA is initialised: CUDA_VISIBLE_DEVICES is read once")
    _claim = claim(resolve_devices(section["devices"]), cards, slots, job, LOCK_DIR if lock_dir is None else lock_dir)
    # indices as nvidia-smi numbers the cards (PCI bus order), unless the user chose an order
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_claim.devices)
    share = f"{slots} of {GPU_SLOTS} slots" if slots < GPU_SLOTS else "whole card(s)"
    log.info("GPU %s (%s) for this job, waited %.0f s", ",".join(_claim.devices), share, _claim.waited_s)
    return _claim
