# Two commands do all set-up on a fresh machine: `make run` (the quick suite on the CPU) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test lint setup data

run: setup data
	$(VENV)/bin/bench run --suite quick

test: setup data
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

setup: $(VENV)/.installed

# torch and torchvision first and exactly: on these machines pip takes them from local disk.
# That torch brings ~4 GB of CUDA libraries: set-up plus the tests peak at ~7 GB (measured), so say so first.
NEEDS_GB := 7
$(VENV)/.installed: pyproject.toml
	@free_gb=$$(df -Pk . | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ ! -d $(VENV) ] && [ "$$free_gb" -lt $(NEEDS_GB) ]; then \
		echo "make: only $$free_gb GB free under $$(pwd); set-up and tests need about $(NEEDS_GB) GB. Free some disk and run make again."; \
		exit 1; \
	fi
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# Debian packages Fashion-MNIST; installing it needs root. Without root, point --data-root elsewhere.
data:
	@if [ ! -d $(FASHION_MNIST) ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi
