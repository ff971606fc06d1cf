"""How jobs share a GPU when Snakemake runs them on one machine (profiles/b200; per card, with
sublim.devices picking the card, under profiles/multi-gpu).

A card is GPU_SLOTS slots (the profile caps the `gpu_slots` resource at that). Generate and
evaluate take whole cards: vLLM reserves most of the card's memory. A train job takes
`sizing.<size>.gpu_share` of one card: small models leave the GPU idle between kernel launches, so
four trainings side by side, under MPS (sublim.mps), get several times one training's throughput
(figures: benchmarks/README.md). The `gpu` resource stays the number of GPUs a job uses, which is what a cluster is asked for.
"""

from __future__ import annotations

from sublim.config import ConfigError

GPU_SLOTS = 4


def whole_gpu_slots(sizing: dict) -> int:
    """Slots of a job that needs its GPUs to itself (generate, evaluate)."""
    return GPU_SLOTS * int(sizing["gpus"])


def train_processes(sizing: dict) -> int:
    """Processes of one training: 1, or one per GPU of the job (sublim.train splits it with FSDP)."""
    return int(sizing["train_processes"])


def train_gpu_slots(sizing: dict, size: str) -> int:
    """Slots of one training: a share of one card, or whole cards (one per training process)."""
    share, gpus, processes = sizing["gpu_share"], int(sizing["gpus"]), train_processes(sizing)
    if not 0 < share <= 1:
        raise ConfigError(f"config key 'sizing.{size}.gpu_share': {share} is not in (0, 1]; "
                          f"it is the fraction of one GPU a training job takes (1 = the whole card)")
    if share < 1 and (gpus != 1 or processes != 1):
        raise ConfigError(f"config key 'sizing.{size}.gpu_share': {share} shares one GPU, but "
                          f"sizing.{size}.gpus is {gpus} (train_processes {processes}); "
                          f"set gpus: 1 and train_processes: 1, or gpu_share: 1")
    if gpus > 1 and processes != gpus:
        raise ConfigError(f"config key 'sizing.{size}.train_processes': {processes}, but sizing.{size}.gpus is "
                          f"{gpus}: a training runs one process per GPU; set train_processes: {gpus} (the "
                          f"model is then sharded over the GPUs with FSDP)")
    if processes > 1 and gpus not in (0, processes):
        raise ConfigError(f"config key 'sizing.{size}.train_processes': {processes} training processes, one "
                          f"per GPU, but sizing.{size}.gpus is {gpus}; set them to the same number")
    if share == 1:
        return whole_gpu_slots(sizing)
    slots = round(share * GPU_SLOTS)
    if slots < 1 or abs(slots - share * GPU_SLOTS) > 1e-9:
        raise ConfigError(f"config key 'sizing.{size}.gpu_share': {share} is not a multiple of "
                          f"1/{GPU_SLOTS}; use 0.25, 0.5, 0.75 or 1")
    return slots


def train_threads(sizing: dict) -> int:
    """CPU threads of one training: four packed trainings at 3 threads each were fastest on 16 cores."""
    return int(sizing["train_threads"])
