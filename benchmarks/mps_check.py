"""Is a process that sublim.mps.join()ed really an MPS client? Joins, starts CUDA, and prints what
the control daemon and nvidia-smi report (an MPS client shows as type M+C in nvidia-smi). The
daemon outlives it: stop it after with `PYTHONPATH=src python -c "from sublim import mps; mps.stop_if_started()"`."""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sublim import mps  # noqa: E402

print("join:", mps.join() or "joined", flush=True)
import torch  # noqa: E402

x = torch.ones(1 << 20, device="cuda") * 2
torch.cuda.synchronize()
print("pid", os.getpid(), "servers:", mps._control("get_server_list", mps.client_env()).stdout.strip())
print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout[-900:])
