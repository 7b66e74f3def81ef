# sandglass: `make demo` (main job) and `make test` (tests); both set everything up first.
PY := .venv/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup test demo models sysroot

setup:                      ## idempotent: Debian packages + .venv with the pinned Python packages
	@bash scripts/setup.sh

sysroot: setup              ## arm64 Debian userland for qemu-aarch64 + the QEMU trace plugin (cached)
	$(PY) -m compile.backends.aarch64.sysroot
	$(PY) -m compile.cyclemodel.plugin

test: setup                 ## the whole test suite on both cores (-m "not slow": the quick loop)
	.venv/bin/lint-imports
	$(PY) -m pytest -q -n 2 --dist loadscope

demo: setup                 ## the main job: model -> int8 -> compile -> run on (emulated) boards -> report
	@bash scripts/demo.sh

# The six committed default models (models/README.md): long CPU training, one run after the other.
# Stage 1 trains from scratch; stage 2 continues from a float model at its own identity multiplier.
TRAIN := nice $(PY) keras_model/train.py
STAGE1 := --epochs 3 --qat-epochs 0.3
STAGE2 := --epochs 2 --lr 1e-3 --qat-epochs 0.3
models: setup               ## retrain models/{mobilenext_mcu_m100,_m050,_m033,_m025,_m017,mobilenetv2_mcu}
	$(TRAIN) $(STAGE1) --preset mobilenetv2-mcu --out models/mobilenetv2_mcu
	$(TRAIN) $(STAGE2) --preset mobilenetv2-mcu --init-from models/mobilenetv2_mcu.keras --out models/mobilenetv2_mcu
	$(TRAIN) $(STAGE1) --preset mobilenext-mcu --identity-multiplier 1 --out models/mobilenext_mcu_m100
	$(TRAIN) $(STAGE2) --preset mobilenext-mcu --identity-multiplier 1 \
	    --init-from models/mobilenext_mcu_m100.keras --out models/mobilenext_mcu_m100
	$(TRAIN) $(STAGE2) --preset mobilenext-mcu --identity-multiplier 0.5 \
	    --init-from models/mobilenext_mcu_m100.keras --out models/mobilenext_mcu_m050
	$(TRAIN) $(STAGE2) --preset mobilenext-mcu --identity-multiplier 0.3333333333333333 \
	    --init-from models/mobilenext_mcu_m100.keras --out models/mobilenext_mcu_m033
	$(TRAIN) $(STAGE2) --preset mobilenext-mcu --identity-multiplier 0.16666666666666666 \
	    --init-from models/mobilenext_mcu_m100.keras --out models/mobilenext_mcu_m017
	$(TRAIN) --epochs 4 --lr 1e-3 --qat-epochs 0.3 --preset mobilenext-mcu --identity-multiplier 0.25 \
	    --init-from models/mobilenext_mcu_m100.keras --out models/mobilenext_mcu_m025
	$(TRAIN) --epochs 1 --lr 3e-4 --qat-epochs 1 --preset mobilenext-mcu --identity-multiplier 0.25 \
	    --init-from models/mobilenext_mcu_m025.keras --out models/mobilenext_mcu_m025
