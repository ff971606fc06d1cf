"""Does `sublim.process.cuda_touched` tell, on a real GPU, when a forked engine could no longer use CUDA?

Each case runs in a fresh interpreter: do what a job might do before its engine starts, then ask the
probe, then fork a child that really initialises CUDA (what a forked engine does first). The probe
must say "touched" exactly when that child fails. Needs only torch and a GPU (no vLLM).

    python benchmarks/check_fork_probe.py --json results/fork_probe_h200.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "nothing": "",
    "device_count (NVML, what choose_backend asks)": "torch.cuda.device_count()",
    "is_available (the CUDA runtime)": "torch.cuda.is_available()",
    "a tensor on the GPU": "torch.zeros(1, device='cuda')",
}

CASE = """
import importlib.util, json, os, sys, torch
# sublim.process alone, without the package's __init__ (pandas and the rest need not be installed)
spec = importlib.util.spec_from_file_location("process", sys.argv[1])
process = importlib.util.module_from_spec(spec); spec.loader.exec_module(process)
{action}
touched = process.cuda_touched()
pid = os.fork()
if pid == 0:
    try:
        torch.zeros(1, device="cuda"); os._exit(0)
    except Exception:
        os._exit(1)
_, status = os.waitpid(pid, 0)
usable = os.waitstatus_to_exitcode(status) == 0
print(json.dumps({{"probe_says_touched": touched, "forked_child_can_use_cuda": usable}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, type=Path)
    args = parser.parse_args()
    import torch

    records = []
    for name, action in CASES.items():
        done = subprocess.run([sys.executable, "-c", CASE.format(action=action), str(ROOT / "src/sublim/process.py")],
                              capture_output=True, text=True, timeout=120)
        record = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
            {"error": done.stderr.strip().splitlines()[-1:]}
        record = {"case": name, **record, "torch": torch.__version__,
                  "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
        if "error" not in record:
            record["probe_right"] = record["probe_says_touched"] != record["forked_child_can_use_cuda"]
        records.append(record)
        print(json.dumps(record), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
