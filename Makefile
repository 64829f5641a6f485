# The two commands of the README: `make quickstart` and `make test` (every test, the slow tool runs
# included; `make test-fast` leaves the tests marked slow out). All set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: setup test test-fast quickstart benchmark clean

setup:
	@bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-fast: setup
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow" tests

quickstart: setup
	$(PY) tools/quickstart.py

benchmark: setup
	$(PY) tools/benchmark.py --config-file configs/AVA/v2.2/EVAD_ViT-B_K400_rho0.7_224.yaml --part backbone --keep-rates 1.0 0.9 0.8 0.7 0.6 --input-size 16 224 224

clean:
	rm -rf $(VENV) wheels build *.egg-info
