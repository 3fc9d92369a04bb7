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

# The bundled checkpoint's recipe from random init, ~26 minutes on 2 CPU cores (README: The bundled
# checkpoint): every tower on 6,000 cases; then the ECG tower alone and then the X-ray tower alone, each
# against the other towers' embeddings computed once, on 12,000 cases drawn once (CASE_CACHE); the X-ray
# stage for 10 minutes with label-aware targets and side-swapped reports, which lifted effusion top-2 in
# Classify from 125 to 155 of 200 films (141 without the two terms; session 24); then the calibration. Copy $(RUN)/stage3 into
# encoders/checkpoints/default/ to bundle it.
train-tiny: $(STAMP)
	$(TRAIN) --preset tiny --cases 6000 --lr 1e-3 --warmup-steps 50 --max-minutes 8 --out $(RUN)/stage1
	$(TRAIN) --init-from $(RUN)/stage1 --freeze xray,text --cases 12000 --lr 3e-4 --warmup-steps 20 --max-minutes 2.5 --out $(RUN)/stage2
	$(TRAIN) --init-from $(RUN)/stage2 --freeze ecg,text --cases 12000 --lr 5e-4 --warmup-steps 20 --max-minutes 10 --label-targets xray_text=0.3 --side-swap 0.5 --out $(RUN)/stage3
	$(VENV)/bin/tribind calibrate --checkpoint $(RUN)/stage3 --data phantom --seed 4242 --cases 1500

protos: $(STAMP)
	$(PY) -m protos.generate

clean-venv:
	rm -rf $(VENV)
