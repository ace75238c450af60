# Two commands do all set-up on a fresh machine: `make run` (the quick suite on the CPU) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: run test lint setup data test-gpu gpu-check wheelhouse wheelhouse-requirements gpu-setup

run: setup data
	$(VENV)/bin/bench run --suite quick

test: setup data
	$(PY) -m pytest -q

# The CUDA tier: the tests marked `cuda` (tests/test_cuda.py), which `make test` reports as skipped without a GPU.
test-gpu: setup
	CUBLAS_WORKSPACE_CONFIG=:4096:8 $(PY) -m pytest -m cuda -rs -q

# One command on one GPU node, within a 570 s budget (run on an H200: README, "Measured on one GPU"): the CUDA
# tests, bench perf train / gated / jobs on the GPU, the fashion_gpu suite for as many seeds as fit; writes
# results/perf/gpu-*.json and the records into results/.
# No set-up of its own (on a GPU node run `make gpu-setup` first); without CUDA it ends at once, in one line.
# e.g. make gpu-check GPU_CHECK_ARGS="--data-root /data --models resnet20 --seeds 0,1 --budget 570"
GPU_CHECK_ARGS ?=
gpu-check:
	@test -x $(PY) || { echo "make gpu-check: no $(PY); run make setup (or make gpu-setup WHEELS=folder on a GPU node) first"; exit 1; }
	@CUBLAS_WORKSPACE_CONFIG=:4096:8 $(PY) -m bench.commands.gpu_check $(GPU_CHECK_ARGS)

# --- offline install on a GPU node that has its own PyTorch ------------------------------------------------
# On a connected machine: `make wheelhouse WHEELS=folder` puts a wheel of every dependency except torch,
# torchvision and their CUDA libraries (the versions `make setup` resolved here), and the project's own
# wheel, into one folder. Wheels for another Python or platform: PIP_DOWNLOAD_OPTS="--python-version 3.12
# --platform manylinux2014_x86_64 --only-binary=:all:".
WHEELS ?= wheelhouse
PIP_DOWNLOAD_OPTS ?=
# what the node brings itself: torch, torchvision and the libraries that come with them. setuptools stays in:
# torch's metadata asks for a recent one, and a fresh venv's own (older) setuptools hides the node's.
NODE_OWN := ^(torch|torchvision|triton|nvidia-.*|cuda-.*|channelbench)( @|==)
wheelhouse-requirements: setup
	@mkdir -p $(WHEELS)
	$(PY) -m pip freeze --all --exclude-editable | grep -v -i -E '$(NODE_OWN)' | grep -v -E '^(pip|wheel)( @|==)' > $(WHEELS)/requirements.txt
	@echo "$(WHEELS)/requirements.txt: $$(wc -l < $(WHEELS)/requirements.txt) distributions (no torch, torchvision, CUDA libraries)"

wheelhouse: wheelhouse-requirements
	$(PY) -m pip download --no-deps $(PIP_DOWNLOAD_OPTS) -d $(WHEELS) -r $(WHEELS)/requirements.txt
	$(PY) -m pip wheel --no-deps -w $(WHEELS) .

# On the node, offline: a venv that sees the node's torch (--system-site-packages; an existing $(VENV) is
# used as it is), then the project from the wheelhouse only (--no-index), under a constraint that pins the
# torch and torchvision the venv already sees, so pip can never replace them. NODE_PYTHON: the node's
# Python that has torch.
NODE_PYTHON ?= python3
# --system-site-packages shows the venv the site of the Python it was made from only where that Python is
# not itself a venv: a node's torch often lives in one (/opt/torch/.venv), whose site the new venv would not
# see. node-site.pth adds NODE_PYTHON's own site-packages (and the .pth files in them) after the venv's own.
NODE_SITE := import site; print("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages()))
gpu-setup:
	@test -d "$(WHEELS)" || { echo "make gpu-setup: no wheelhouse folder $(WHEELS); give one: make gpu-setup WHEELS=folder (make wheelhouse builds it)"; exit 1; }
	@test -x $(PY) || { $(NODE_PYTHON) -m venv --system-site-packages $(VENV) && \
		$(NODE_PYTHON) -c '$(NODE_SITE)' > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/node-site.pth"; }
	@$(PY) -c "import torch, torchvision" 2>/dev/null || { echo "make gpu-setup: $(VENV) sees no torch and torchvision; create it from the node's Python that has them: make gpu-setup NODE_PYTHON=/path/to/python (or remove $(VENV))"; exit 1; }
	$(PY) -c "from importlib.metadata import version as v; print(f'torch=={v(\"torch\")}'); print(f'torchvision=={v(\"torchvision\")}')" > $(VENV)/node-torch.txt
	$(PY) -m pip install -q --no-index --find-links $(WHEELS) -c $(VENV)/node-torch.txt "channelbench[test]"
	@$(PY) -c "import torch, bench; print(f'gpu-setup: channelbench in $(VENV) on the node\'s torch {torch.__version__} ({torch.__file__}); CUDA available: {torch.cuda.is_available()}')"
	touch $(VENV)/.installed

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
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $@

# Debian packages Fashion-MNIST; installing it needs root. Without root, point --data-root elsewhere.
data:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi
