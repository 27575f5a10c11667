# The commands that matter: `make setup` once, then `make test`; `make demo` runs the main job.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint colcon-build clean help

help:
	@echo "make setup   install everything into $(VENV) (Debian packages, ROS 2 wheels, torch)"
	@echo "make test    run the whole test suite"
	@echo "make lint    flake8 at 99 columns"

setup:
	@bash tools/setup.sh

$(PY):
	@echo "$(PY) not found: run 'make setup' first" >&2; exit 1

test: $(PY)
	$(PY) -m pytest

lint: $(PY)
	$(PY) -m flake8 multicam_ros test tools bench launch

clean:
	rm -rf build install log .pytest_cache
