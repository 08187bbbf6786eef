# One-command set-up: every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
# Where pip takes torch and torchvision from. Empty: the package index, which serves whatever
# build it has (a CPU build, or a CUDA build that may be newer than the GPU's driver). A PyTorch
# wheel index picks the build for the driver, e.g. https://download.pytorch.org/whl/cu126 (docs/GETTING_STARTED.md, Install).
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
# "registry" installs the sal-detectron2 wheel (a re-publication of detectron2's
# main branch, the only detectron2 on PyPI); "git" installs upstream from GitHub.
DETECTRON2 ?= registry
DETECTRON2_GIT ?= git+https://github.com/facebookresearch/detectron2.git
D2_RUNTIME_DEPS := fvcore iopath pycocotools omegaconf hydra-core yacs termcolor tabulate \
	cloudpickle tqdm matplotlib tensorboard "setuptools<81"
STAMP := $(VENV)/.srn_d2-installed-$(DETECTRON2)

.PHONY: install test lint demo clean-venv

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=23"
	$(PIP) install -q $(TORCH_INDEX) torch==$(TORCH_VERSION) torchvision==$(TORCHVISION_VERSION)
ifeq ($(DETECTRON2),git)
	$(PIP) install -q --no-build-isolation "$(DETECTRON2_GIT)"
else
	$(PIP) install -q --no-deps --only-binary=:all: --python-version 3.10 --upgrade \
		--target "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
		sal-detectron2==0.7.2
	$(PIP) install -q $(D2_RUNTIME_DEPS)
endif
	$(PIP) install -q -e ".[test,export]"
	$(PY) -c "import srn_d2, detectron2; print('srn_d2 ready on detectron2', detectron2.__version__)"
	touch $@

# One test process a core (pytest-xdist); each process computes on one thread.
test: install
	$(PY) -m pytest -q -n auto tests

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: install
	$(PY) -m srn_d2.tools.ablation

clean-venv:
	rm -rf $(VENV)
