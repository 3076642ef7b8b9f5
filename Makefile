# fakeface: two commands for a fresh machine.
#   make demo   set up, build a small synthetic dataset, train a small CPU model, launch the app
#   make test   set up (Python + Debian deps), run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.requirements-installed

DEMO_DATA  ?= demo_data
DEMO_MODEL ?= demo_model
DEMO_N     ?= 600
DEMO_EPOCHS ?= 4


.PHONY: release panel-benchmark setup editable system-deps audit test test-fast demo demo-data demo-model benchmark train-benchmark real-benchmark real-benchmark-probes load-test clean

# Idempotent: reinstalls only when a requirements file or pyproject.toml changes.
# The checkout itself goes in editable (console scripts fakeface-*; scripts/*.py
# import the package) in setuptools' compat mode: one .pth line puts the checkout
# on sys.path, so the dev-only top-level benchmarks/ package (not in the wheel)
# imports too. --no-deps: the pins above are the package's dependencies already;
# --no-build-isolation: build with the pinned setuptools, nothing downloaded.
# setuptools' build folder (build/lib, build/bdist.*) goes to a scratch folder named by DIST_EXTRA_CONFIG
# and removed afterwards, never the checkout: tools would read build/lib/fakeface as a second copy of the package.
EDITABLE_INSTALL = scratch=$$(mktemp -d) && printf '[build]\nbuild_base = %s/build\n' "$$scratch" > "$$scratch/setup.cfg" && \
	DIST_EXTRA_CONFIG="$$scratch/setup.cfg" $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation \
	--config-settings editable_mode=compat -e .; status=$$?; rm -rf "$$scratch"; exit $$status

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(EDITABLE_INSTALL)
	touch $@

setup: $(STAMP)

# The editable install alone (after a console script is added to pyproject.toml), into an existing venv.
editable:
	$(EDITABLE_INSTALL)

system-deps:
	bash scripts/install_system_deps.sh

# Known-vulnerability audit of the pins (PyPI data; never fails the build
# on a network problem, the report says what could not be audited).
audit: setup
	-$(BIN)/python scripts/audit_dependencies.py --output test-results/dependency_audit.md

test: setup system-deps audit
	$(BIN)/python -m pytest -q

# Everything but the slow (> ~20 s each on 2 cores) and browser tests, for a quick local loop.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

$(DEMO_DATA)/README.md: | $(STAMP)
	$(BIN)/python scripts/build_dataset.py --synthetic $(DEMO_N) --output-dir $(DEMO_DATA) --seed 0

$(DEMO_MODEL)/model.safetensors: $(DEMO_DATA)/README.md
	$(BIN)/python train.py --dataset $(DEMO_DATA) --model mobilenetv2_100 --recipe robust --epochs $(DEMO_EPOCHS) \
		--input-size 128 --output-dir $(DEMO_MODEL) --seed 0

demo-data: $(DEMO_DATA)/README.md
# The demo release is a panel too (content + trace expert), so the app shows each expert and the sentence; with
# no generator families to hold out in the synthetic set, its fusion and band are fitted on the validation split
# and the release says so.
$(DEMO_MODEL)/experts/trace/config.json: $(DEMO_MODEL)/model.safetensors
	$(BIN)/python scripts/build_panel.py --content $(DEMO_MODEL) --fit-on-validation $(DEMO_DATA) --output $(DEMO_MODEL)

demo-model: $(DEMO_MODEL)/experts/trace/config.json

# With FAKEFACE_MODEL set, serve that model instead of training the demo one.
ifeq ($(strip $(FAKEFACE_MODEL)),)
demo: setup demo-model
	FAKEFACE_MODEL=$(DEMO_MODEL) FAKEFACE_DATASET=$${FAKEFACE_DATASET:-$(DEMO_DATA)} FAKEFACE_DEMO_BANNER=1 MALLOC_ARENA_MAX=2 \
		GRADIO_ANALYTICS_ENABLED=False $(BIN)/python app.py
else
demo: setup
	MALLOC_ARENA_MAX=2 GRADIO_ANALYTICS_ENABLED=False $(BIN)/python app.py
endif

benchmark: setup
	$(BIN)/python scripts/benchmark.py --train-releases

train-benchmark: setup
	$(BIN)/python scripts/train_benchmark.py

# Real faces (../shared/data/faces-dev): the generalisation benchmark that decides the released default (leave one
# generator family out, nested abstention bands, 140K pair; ~1 h on 2 busy cores; crops and twins cached in
# .cache/generalisation and .cache/twins); not in CI. Writes results/generalisation.md and results/abstention_band.json.
real-benchmark: setup
	$(BIN)/python scripts/generalisation_benchmark.py

# The earlier real-faces benchmark: linear probes and short fine-tunes; ~25 min on 2 busy cores (17 of them
# building the feature cache in .cache/real_faces, reused by later runs); not in CI.
real-benchmark-probes: setup
	$(BIN)/python scripts/real_benchmark.py

# The released default, in one command: faces-dev as a dataset, the content expert (train.py's defaults), the
# panel benchmark (trace expert on reals and their twins, five leave-one-family-out content fine-tunes, the
# nested fusion; writes results/panel*.{json,md}) and the panel release that puts them together in $(RELEASE).
# About an hour on 2 cores on a cold cache; not in CI.
FACES_DEV ?= ../shared/data/faces-dev
RELEASE   ?= runs/faces-dev-panel
runs/faces-dev-dataset/README.md: | $(STAMP)
	$(BIN)/python scripts/build_dataset.py \
		$$(for d in $(FACES_DEV)/real/*/; do printf -- '--real-dir %s ' "$$d"; done) \
		$$(for d in $(FACES_DEV)/fake/*/; do printf -- '--fake-dir %s ' "$$d"; done) --fake-generator faces-dev \
		--output-dir runs/faces-dev-dataset --no-progress

runs/faces-dev-finetune/model.safetensors: runs/faces-dev-dataset/README.md
	$(BIN)/python train.py --dataset runs/faces-dev-dataset --epochs 2 --output-dir runs/faces-dev-finetune

panel-benchmark: setup
	$(BIN)/python scripts/panel_benchmark.py

release: runs/faces-dev-finetune/model.safetensors panel-benchmark
	$(BIN)/python scripts/build_panel.py --content runs/faces-dev-finetune --trace .cache/panel/trace-expert \
		--entry results/panel_release.json --output $(RELEASE)

load-test: setup
	$(BIN)/python scripts/load_test.py

clean:
	rm -rf $(DEMO_DATA) $(DEMO_MODEL) .pytest_cache
