"""sublim.devices, the per-card allocator of profiles/multi-gpu, on fake devices: real processes
claim "GPUs" that are only names, through the real lock files (fcntl.flock)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from fake_gpu import install_fakes
from sublim import devices
from sublim.config import ConfigError

# A job: claim, say so, hold the cards for `hold` seconds (or until killed), record what it held.
CLAIMANT = """
import json, sys, time
from pathlib import Path
from sublim import devices
lock_dir, names, cards, slots, hold, record = sys.argv[1:7]
claim = devices.claim(names.split(","), int(cards), int(slots), job="test", lock_dir=Path(lock_dir), poll_s=0.05)
start = time.time()
print("claimed", ",".join(claim.devices), flush=True)
time.sleep(float(hold))
with open(record, "a") as out:
    out.write(json.dumps({"devices": claim.devices, "slots": claim.slots, "start": start, "end": time.time()}) + "\\n")
"""


def start_claimant(tmp_path, names, cards=1, slots=4, hold=0.5) -> subprocess.Popen:
    args = [str(tmp_path / "locks"), ",".join(names), str(cards), str(slots), str(hold), str(tmp_path / "held.jsonl")]
    return subprocess.Popen([sys.executable, "-c", CLAIMANT, *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def held(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "held.jsonl").read_text().splitlines()]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_devices_come_from_the_profile_or_from_what_is_visible(tmp_path, monkeypatch):
    assert devices.resolve_devices([0, 1, "GPU-abc"], environ={}) == ["0", "1", "GPU-abc"]
    assert devices.resolve_devices("auto", environ={"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    monkeypatch.setenv("PATH", f"{install_fakes(tmp_path / 'bin')}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GPUS", "0 1 2 3 4 5 6 7")
    assert devices.resolve_devices("auto", environ={}) == [str(i) for i in range(8)]
    monkeypatch.setenv("FAKE_GPUS", "")
    with pytest.raises(ConfigError, match="local_gpus.devices"):
        devices.resolve_devices("auto", environ={})
    with pytest.raises(ConfigError, match="list each GPU once"):
        devices.resolve_devices([0, 0], environ={})


def test_the_slot_budget_is_four_per_card_and_never_more():
    assert devices.slot_budget(8, None) == 32
    assert devices.slot_budget(8, 16) == 16  # the user may hold some cards back
    with pytest.raises(ConfigError, match="gpu_slots=40"):
        devices.slot_budget(8, 40)


def test_a_job_asks_for_what_snakemake_booked():
    assert devices.job_request({"gpu": 0, "gpu_slots": 0}) == (0, 4)
    assert devices.job_request({"gpu": 1, "gpu_slots": 1}) == (1, 1)  # a packed training
    assert devices.job_request({"gpu": 1, "gpu_slots": 4}) == (1, 4)
    # a 2-GPU job whose slots Snakemake capped at a smaller machine's budget still asks for 2 cards
    assert devices.job_request({"gpu": 2, "gpu_slots": 4}) == (2, 4)


def test_n_concurrent_jobs_on_n_gpus_never_share_a_card(tmp_path):
    names = ["0", "1", "2", "3"]
    jobs = [start_claimant(tmp_path, names, hold=0.6) for _ in range(8)]  # twice as many jobs as cards
    assert [job.wait(timeout=120) for job in jobs] == [0] * 8
    records = held(tmp_path)
    assert len(records) == 8 and all(len(r["devices"]) == 1 for r in records)
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if overlapping(a, b):
                assert a["devices"] != b["devices"], (a, b)
    assert {r["devices"][0] for r in records} == set(names)


def test_tensor_parallel_jobs_get_k_distinct_cards(tmp_path):
    names = ["0", "1", "2", "3"]
    jobs = [start_claimant(tmp_path, names, cards=2, hold=0.5) for _ in range(3)]
    assert [job.wait(timeout=120) for job in jobs] == [0] * 3
    records = held(tmp_path)
    assert all(len(set(r["devices"])) == 2 for r in records)
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if overlapping(a, b):
                assert not set(a["devices"]) & set(b["devices"]), (a, b)
    with pytest.raises(ConfigError, match="asks for 5 GPUs"):
        devices.claim(names, cards=5, lock_dir=tmp_path / "locks")


def test_a_sigkilled_job_frees_its_card(tmp_path):
    job = start_claimant(tmp_path, ["0"], hold=600)
    assert job.stdout.readline().split() == ["claimed", "0"]
    assert devices.held_slots(["0"], tmp_path / "locks") == {"0": 4}
    job.send_signal(signal.SIGKILL)  # no handler, no cleanup: only the kernel lets go of the lock
    job.wait(timeout=30)
    claim = devices.claim(["0"], cards=1, lock_dir=tmp_path / "locks", poll_s=0.05)
    assert claim.devices == ["0"] and claim.waited_s < 5
    claim.release()


def test_small_trainings_pack_on_the_fullest_card_and_whole_card_jobs_wait_for_a_free_one(tmp_path):
    lock_dir, names = tmp_path / "locks", ["0", "1"]
    packed = [devices.claim(names, cards=1, slots=1, lock_dir=lock_dir) for _ in range(4)]
    assert [c.devices for c in packed] == [["0"]] * 4  # card 1 stays whole
    whole = devices.claim(names, cards=1, lock_dir=lock_dir)
    assert whole.devices == ["1"]
    assert devices.held_slots(names, lock_dir) == {"0": 4, "1": 4}
    whole.release()
    packed[0].release()
    refill = devices.claim(names, cards=1, slots=1, lock_dir=lock_dir)  # card 0 has 1 free slot, card 1 four
    assert refill.devices == ["0"]
    late = devices.claim(names, cards=1, slots=2, lock_dir=lock_dir)
    assert late.devices == ["1"]

    # fragmented: no card is whole; a whole-card job waits, holding nothing, until one empties
    got = {}
    waiter = threading.Thread(target=lambda: got.update(claim=devices.claim(names, cards=1, lock_dir=lock_dir,
                                                                              poll_s=0.05)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and devices.held_slots(names, lock_dir) == {"0": 4, "1": 2}
    late.release()
    waiter.join(timeout=10)
    assert got["claim"].devices == ["1"] and got["claim"].waited_s >= 0.4
    for claim in [*packed[1:], refill, got["claim"]]:
        claim.release()
    assert devices.held_slots(names, lock_dir) == {"0": 0, "1": 0}


def test_claim_gpus_sets_the_visible_devices_and_is_a_no_op_without_the_allocator(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "_claim", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unchanged")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "")
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    assert devices.claim_gpus({}, {"gpu": 1, "gpu_slots": 4}, "job", lock_dir=tmp_path) is None  # b200, SLURM
    config = {"local_gpus": {"devices": ["4", "5", "6"]}}
    assert devices.claim_gpus(config, {"gpu": 0, "gpu_slots": 0}, "job", lock_dir=tmp_path) is None  # a CPU job
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "unchanged" and devices.claimed() is None
    claim = devices.claim_gpus(config, {"gpu": 2, "gpu_slots": 8}, "job", lock_dir=tmp_path)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5" and devices.claimed() == ["4", "5"]
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert (tmp_path / "gpu-4.slot-0.lock").read_text().startswith(f"pid {os.getpid()} job")
    claim.release()
