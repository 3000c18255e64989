# visiongate: `make demo` and `make test` each create .venv and install when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: install demo test bench bench-data up down ui clean-runs

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	mkdir -p mlruns
	touch $(STAMP)

install: $(STAMP)

demo: install   ## train, gate and promote on the synthetic shapes dataset
	@# exit code 3 = a gate refused a candidate and the champion was kept: a valid outcome
	$(BIN)/visiongate retrain || test $$? -eq 3

test: install
	@# chromium, chromedriver, postgresql for the browser and PostgreSQL tests (skip if absent)
	bash tests/system-deps.sh
	@# two workers, each test module on one (its module fixtures and servers start once);
	@# the server tests spend much of their time waiting, so two overlap well on 2 cores
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: install  ## the speed figures, each next to its reference (≈ 50 min on 2 cores); updates BENCHMARKS.md section by section
	$(BIN)/python benchmarks/bench_evaluator.py --images 5000 --repeats 3
	$(BIN)/python benchmarks/bench_import.py --repeats 3
	$(BIN)/python benchmarks/bench_predict.py --sizes 128 640 --threads 2
	$(BIN)/python benchmarks/bench_serve.py --write
	$(BIN)/python benchmarks/bench_families.py --images 64 --epochs 2 --write
	$(BIN)/python benchmarks/bench_retrain.py --repeats 3 --write
	$(BIN)/python benchmarks/bench_imports.py --write
	$(BIN)/python benchmarks/fuzz_readers.py --seconds 60 --write

bench-data: install  ## real data (COCO128, ISBI) vs raw, and 1k-50k images (over an hour on 2 cores)
	$(BIN)/python benchmarks/bench_real.py --epochs 120 --epochs-a 120 --unet-epochs 30 --write
	$(BIN)/python benchmarks/bench_scale.py --tty --write

up: install     ## Prefect server + MLflow UI on 127.0.0.1 (ports: params.yaml `stack:`), in the background
	$(BIN)/visiongate up

down:           ## stop what `make up` started
	$(BIN)/visiongate down

ui: install     ## MLflow UI on the demo's store, http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

clean-runs:     ## forget all runs and registered models (keeps data and the DVC cache)
	rm -rf mlruns/mlflow.db mlruns/artifacts .cache/train
