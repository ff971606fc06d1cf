"""Stand-ins for the NVIDIA driver utilities, for tests on a machine without a GPU: an
nvidia-cuda-mps-control that keeps its state in files and answers the commands sublim.mps sends
(-d, get_server_list, quit) as the real one does, and an nvidia-smi that answers the queries
sublim.mps and sublim.devices make. Install both on PATH with install_fakes()."""

from __future__ import annotations

import stat
from pathlib import Path

FAKE_CONTROL = r"""#!/usr/bin/env bash
# state: $CUDA_MPS_PIPE_DIRECTORY/daemon exists while the daemon "runs"; every start is counted,
# with the devices it was started with (CUDA_VISIBLE_DEVICES, or "all" when unset)
state="$CUDA_MPS_PIPE_DIRECTORY/daemon"
if [ "${1:-}" = "-d" ]; then
  [ -n "${FAKE_MPS_FAIL_START:-}" ] && { echo "An instance of this daemon is already running" >&2; exit 1; }
  touch "$state"; echo "${CUDA_VISIBLE_DEVICES-all}" >> "$CUDA_MPS_PIPE_DIRECTORY/starts"; exit 0
fi
read -r command
[ -e "$state" ] || { echo "Cannot find MPS control daemon process" >&2; exit 1; }
case "$command" in
  get_server_list) exit 0 ;;
  quit) rm -f "$state"; exit 0 ;;
esac
"""

# FAKE_GPUS: the indices of the machine's cards ("0 1 2 3"); a card's UUID is GPU-fake-<index>
FAKE_NVIDIA_SMI = r"""#!/usr/bin/env bash
device=""; query=""
while [ $# -gt 0 ]; do
  case "$1" in -i) device="$2"; shift ;; --query-gpu=*) query="${1#--query-gpu=}" ;; esac
  shift
done
case "$query" in
  index) for index in ${FAKE_GPUS-0}; do echo "$index"; done ;;
  uuid) for index in ${device:-${FAKE_GPUS-0}}; do echo "GPU-fake-$index"; done ;;
  *) for index in ${device:-${FAKE_GPUS-0}}; do echo "${FAKE_COMPUTE_MODE:-Default}"; done ;;
esac
"""


def install(bin_dir: Path, name: str, text: str) -> None:
    program = bin_dir / name
    program.write_text(text)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)


def install_fakes(bin_dir: Path) -> Path:
    """Both programs in bin_dir; put bin_dir first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    install(bin_dir, "nvidia-cuda-mps-control", FAKE_CONTROL)
    install(bin_dir, "nvidia-smi", FAKE_NVIDIA_SMI)
    return bin_dir


def daemon_starts(pipe_dir: Path) -> list[str]:
    """The devices each start of the daemon at pipe_dir saw ("all": CUDA_VISIBLE_DEVICES unset)."""
    path = pipe_dir / "starts"
    return path.read_text().split() if path.exists() else []
