# vigil: `make demo` installs the core and replays the shipped clip; `make test` installs everything
# the tests need (system packages too, when run as root) and runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# espeak-ng: speech for the speech tests; GStreamer's RTSP server: the live-camera tests; iproute2: the
# two-host tests (network namespaces); mosquitto: the MQTT broker of the alert tests.
APT_PACKAGES := espeak-ng iproute2 mosquitto python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad

.PHONY: demo test lint bench install install-all system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[ultralytics,openai-whisper,transformers,dev]'
	touch $@ $(VENV)/.core

install: $(VENV)/.core
install-all: $(VENV)/.all

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "system-deps: not root or no apt-get; make sure these are installed: $(APT_PACKAGES)"; fi

demo: install
	$(BIN)/python run.py demo

test: system-deps install-all
	$(BIN)/python -m pytest -q

lint: install-all
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy .

bench: install
	$(BIN)/python run.py bench

clean:
	rm -rf $(VENV) demo-output bench-output .pytest_cache .mypy_cache .ruff_cache
