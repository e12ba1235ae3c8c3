# Two-command set-up: `make demo` and `make test` both create or reuse .venv.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow lint bench clean label-venv label-serve test-label

$(STAMP): setup.cfg pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch first: the local CPU wheel, so nothing pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e .[dev]
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default data: one phantom case in (seed 0), CoSinGAN + classifier + 2D/3D segmenters
# out, evaluated on DEMO_HELDOUT other phantom cases (seeds 100.., 3 of 10 healthy) against a real-slice +
# strong-augmentation baseline; the summary ends with the verdict line. The data are the same for every DEMO_SEED:
# it seeds the pipeline (GAN, conditions, sampling, downstream trainings), so `make demo DEMO_SEED=1` is a rerun of
# the method, not of the data (docs/results.md "Demo").
DEMO_RUN ?= runs/demo
DEMO_SEED ?= 0
DEMO_HELDOUT ?= 10
demo: $(STAMP)
	$(VENV)/bin/cosingan-monai phantom --out data/phantom/train --cases 1 --seed 0 --size 256 --slices 48 --healthy-fraction 0
	$(VENV)/bin/cosingan-monai phantom --out data/phantom/heldout --cases $(DEMO_HELDOUT) --seed 100 --size 256 --slices 48 \
	  --healthy-fraction 0.3
	$(VENV)/bin/cosingan-monai pipeline --case data/phantom/train/COVID-19-CT-Seg_20cases/phantom_000.nii.gz \
	  --preset demo --eval data/phantom/heldout --seed $(DEMO_SEED) --out $(DEMO_RUN) --force

# Two pytest workers, one test file each at a time (module fixtures such as the pipeline run are built once):
# the suite takes about half the wall time on the 2-core machine. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The long tests (marked slow, not in `make test`): classifier AUC >= 0.9 on held-out phantoms (15-30 min here),
# the MedSeg-dev real-data segmenter, `train-seg --dims 3`, and the torchrun DDP configs.
test-slow: $(STAMP)
	$(VPY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check cosingan_monai tests benchmarks
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(VPY) benchmarks/bench_gan.py

# --- MONAI Label (issue #6) ------------------------------------------------------------------------------------
# MONAI Label 0.8.5 needs torch 2.14.1 + torchvision 0.29.1 (about 8 GB, CUDA build), so it gets its own venv.
# The project goes in with --no-deps and then its own non-torch requirements, so its torch pin never fights.
LVENV := .venv-label
LPY := $(LVENV)/bin/python
LSTAMP := $(LVENV)/.installed
APP ?= $(RUN)/label_app
PORT ?= 8000

$(LSTAMP): setup.cfg
	test -x $(LPY) || $(PY) -m venv $(LVENV)
	$(LPY) -m pip install -q --upgrade pip
	$(LPY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(LPY) -m pip install -q monailabel==0.8.5 pydicom==2.4.5 dicomweb-client==0.59.1 pynetdicom==2.1.1
	$(LPY) -m pip install -q --no-deps -e .
	$(LPY) -c "import configparser as c; p=c.ConfigParser(); p.read('setup.cfg'); \
	print('\n'.join(r for r in p['options']['install_requires'].split() if not r.startswith('torch')))" \
	  > $(LVENV)/project-requirements.txt
	$(LPY) -m pip install -q -r $(LVENV)/project-requirements.txt \
	  monailabel==0.8.5 pydicom==2.4.5 dicomweb-client==0.59.1 pynetdicom==2.1.1
	touch $(LSTAMP)

label-venv: $(LSTAMP)

# Serve RUN's trained segmenters on 127.0.0.1:$(PORT) in the foreground; the app folder is built on first use only,
# so labels saved from 3D Slicer into $(APP)/studies survive a restart.
label-serve: $(STAMP) $(LSTAMP)
	@test -n "$(RUN)" || { echo "usage: make label-serve RUN=runs/<your run> [APP=...] [PORT=8000]"; exit 2; }
	test -f $(APP)/main.py || $(VENV)/bin/cosingan-monai label-app --run $(RUN) --out $(APP) --port $(PORT)
	$(LPY) -m monailabel.main start_server --app $(APP) --studies $(APP)/studies \
	  --conf models all --conf zoo_source github --host 127.0.0.1 --port $(PORT)

test-label: $(STAMP) $(LSTAMP)
	$(VPY) -m pytest -q -m label tests/test_label_server.py

clean:
	rm -rf $(VENV) data/phantom runs
