# sandglass: `make demo` (main job) and `make test` (tests); both set everything up first.
PY := .venv/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup test demo

setup:                      ## idempotent: Debian packages + .venv with the pinned Python packages
	@bash scripts/setup.sh

test: setup                 ## the whole test suite
	$(PY) -m pytest -q

demo: setup                 ## the main job: model -> int8 -> compile -> run on (emulated) boards -> report
	@bash scripts/demo.sh
