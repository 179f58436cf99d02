# Quick start: `make demo` trains on built-in Tetrominoes-like data and writes runs/demo/report.html;
# `make test` runs the test suite. Both create .venv (CPU PyTorch) when it is missing.
PY := .venv/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint bench clean tf

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch .venv/installed

demo: .venv/installed
	.venv/bin/slotlab demo --workdir runs/demo

# TensorFlow for `slotlab convert official-tf` and its parity test (CI runs it; `make test` skips it without TF).
# tf-keras (Keras 2, which wrote the official checkpoints) is installed without its dependencies: it asks for the
# full `tensorflow` package, which would be a second copy beside tensorflow-cpu.
tf: .venv/installed
	$(PY) -m pip install --quiet -e ".[test,tf]"
	$(PY) -m pip install --quiet --no-deps tf-keras==2.21.0

test: .venv/installed
	$(PY) -m pytest -q

lint: .venv/installed
	.venv/bin/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
