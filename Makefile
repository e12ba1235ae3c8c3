# Two-command set-up: `make demo` and `make test` both create or reuse .venv.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first: the local CPU wheel, so nothing pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e .[dev]
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cosingan-monai demo

test: $(STAMP)
	$(VPY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check cosingan_monai tests benchmarks

bench: $(STAMP)
	$(VPY) benchmarks/bench_gan.py

clean:
	rm -rf $(VENV) data/phantom runs
