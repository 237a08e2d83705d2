# Two commands do everything on a fresh Debian machine: `make repro` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup data repro test bench full-scale clean-checkpoints

setup: $(VENV)/.installed data .dvc/plots/offline.html

# `dvc plots show` offline: vega inlined into the HTML template (.dvc/config plots.html_template).
.dvc/plots/offline.html:
	bash scripts/offline_plots_template.sh

# A new venv takes about 6 GiB on x86_64 (torch's CUDA build), under 1 on aarch64: checked first, so a
# full disk fails here in one line rather than half-way through pip.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 scripts/check_disk.py $(VENV)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip
	$(PY) -m pip install -q --no-cache-dir -r requirements.txt
	touch $@

# Debian's dataset-fashion-mnist where apt-get is usable as root; else `prepare` downloads it.
data:
	@if [ ! -f $(FASHION_MNIST) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || \
	  echo "apt-get could not install dataset-fashion-mnist; prepare will download it"; \
	fi

repro: setup
	dvc repro

test: setup
	$(PY) -m pytest -q

# The benchmarks read the prepared data and mean RGB: made (or restored from DVC's cache) first.
bench: setup
	dvc repro mean_rgb
	$(PY) -m benchmarks.run

# ILSVRC-2012 at full scale as a DVC experiment: make full-scale ROOT=/data/ILSVRC2012 [EXTRA="k=v ..."]
full-scale: setup
	@test -n "$(ROOT)" || { echo "error: ROOT: set ROOT=/path/to/ILSVRC2012 (train/, val/)"; exit 2; }
	flags=$$($(PY) -m scripts.preset presets/ilsvrc2012.yaml data.root=$(ROOT) $(EXTRA)) && \
	  dvc exp run -n ilsvrc2012 $$flags

clean-checkpoints:
	rm -rf .ckpt
