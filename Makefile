# The commands that matter: `make setup` once, then `make test`; `make demo` runs the main job.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-gpu lint clean help

help:
	@echo "make setup   install everything into $(VENV) (Debian packages, ROS 2 wheels, torch)"
	@echo "make demo    four cameras of real street footage, NanoDet-g, the live view, until Ctrl-C"
	@echo "make test    run the whole test suite"
	@echo "make test-gpu  run the CUDA tests (needs a GPU)"
	@echo "make lint    flake8 at 99 columns"

setup:
	@bash tools/setup.sh

$(PY):
	@echo "$(PY) not found: run 'make setup' first" >&2; exit 1

# Set-up first where it is not done (no venv, or no model or footage in the cache). Ctrl-C stops
# the demo cleanly (it exits 0); make itself then reports the interrupt as for any target.
# DEMO_ARGS: more options, e.g. make demo DEMO_ARGS='--view-port 8081'.
demo:
	@if ! [ -x $(VENV)/bin/multicam-ros ] || ! $(PY) -m multicam_ros.system.model_store check; then \
	  echo "make demo: running make setup first"; $(MAKE) --no-print-directory setup; fi
	$(VENV)/bin/multicam-ros demo $(DEMO_ARGS)

# The suite runs on the CPU everywhere (CI has no GPU): GPUs are hidden from it. Message fields
# are type-checked on every assignment, as Humble always does (ROS_PYTHON_CHECK_FIELDS).
test: $(PY)
	CUDA_VISIBLE_DEVICES= ROS_PYTHON_CHECK_FIELDS=1 $(PY) -m pytest

# The CUDA paths (device placement, fp16, letterboxing on the GPU), on a machine with a GPU.
test-gpu: $(PY)
	$(PY) -m pytest -m gpu test/test_models.py test/test_box_mapping.py test/test_shm_frames.py \
	  test/test_model_process.py test/test_torchvision_batched.py

lint: $(PY)
	$(PY) -m flake8 multicam_ros test tools bench launch

clean:
	rm -rf build install log .pytest_cache
