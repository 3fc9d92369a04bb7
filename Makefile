# Two entry points do all the set-up on a fresh machine: `make serve` and `make test`.
# Both create .venv and install the project when missing; the stamp makes a second run a no-op
# until pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
export TRIBIND_SHARED_DATA ?= $(abspath ../shared/data)
# The text encoder's weights ship inside a pip package; never reach for a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

DATA_DIR ?= ./var/tribind
LISTEN   ?= 127.0.0.1:50051
SEED_CASES ?= 2000
RUN        ?= runs/tiny
CASE_CACHE ?= var/cases
TRAIN      := $(VENV)/bin/tribind train --data phantom --case-cache $(CASE_CACHE) --seed 0 --epochs 40 --batch-size 32 --threads 2

.PHONY: install test serve bench clean-venv protos train-tiny

define TORCH_PINS
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d for d in deps if d.startswith(("torch==", "torchvision=="))))
endef
export TORCH_PINS

install: $(STAMP)

# torch and torchvision go first, on their own (pins read from pyproject.toml): pip keeps every wheel it
# downloaded until its whole install ends, and torch's CUDA wheels are most of them. No pip cache: it
# would hold a second copy. A CI run ran out of disk during the single-step install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir --upgrade -q pip
	$(PY) -m pip install --no-cache-dir -q $$($(PY) -c "$$TORCH_PINS")
	$(PY) -m pip install --no-cache-dir -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

serve: $(STAMP)
	$(VENV)/bin/tribind serve --data-dir $(DATA_DIR) --listen $(LISTEN) --seed-cases $(SEED_CASES) $(SERVE_ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.run $(if $(QUICK),--quick,)

# The bundled checkpoint's recipe from random init, ~58 minutes on 2 CPU cores (README: The bundled
# checkpoint): every tower on 6,000 cases; then the ECG tower alone on 12,000 cases and then the X-ray tower
# alone on 24,000, each against the other towers' embeddings computed once, on cases drawn once (CASE_CACHE).
# The X-ray stage runs 40 minutes with label-aware targets and side-swapped reports: effusion top-2 in
# Classify went 296 -> 329 of 400 held-out films over the 10-minute stage (seeds 99, 777, 31337, 2024;
# session 25) and X-ray zero-shot 0.936-0.946 -> 0.948-0.956; then the calibration. Copy $(RUN)/stage3 into
# encoders/checkpoints/default/ to bundle it.
train-tiny: $(STAMP)
	$(TRAIN) --preset tiny --cases 6000 --lr 1e-3 --warmup-steps 50 --max-minutes 8 --out $(RUN)/stage1
	$(TRAIN) --init-from $(RUN)/stage1 --freeze xray,text --cases 12000 --lr 3e-4 --warmup-steps 20 --max-minutes 2.5 --out $(RUN)/stage2
	$(TRAIN) --init-from $(RUN)/stage2 --freeze ecg,text --cases 24000 --lr 5e-4 --warmup-steps 20 --max-minutes 40 --label-targets xray_text=0.3 --side-swap 0.5 --out $(RUN)/stage3
	$(VENV)/bin/tribind calibrate --checkpoint $(RUN)/stage3 --data phantom --seed 4242 --cases 1500

protos: $(STAMP)
	$(PY) -m protos.generate

clean-venv:
	rm -rf $(VENV)
