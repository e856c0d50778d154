# flakefleet: the two commands of the README quick start, and their set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-upstream bench reference configurations

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# The main job: validate every stack and print its planned fleet (hosts, zones, addresses, API).
demo: setup
	@for stack in local dev staging prod; do $(PY) -m flakefleet plan --stack $$stack || exit 1; echo; done

# Every test tier.
test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/plan_scale.py

reference: setup
	$(PY) scripts/config_reference.py

# nixos/configurations.json, the flake's nixosConfigurations, from the stack files.
configurations: setup
	$(PY) scripts/nixos_configurations.py

# Tier 5, local only: the checks against real upstreams. FLAKEFLEET_NIXPKGS_LIB is a directory
# with nixpkgs' lib/ (e.g. a checkout of nix-community/nixpkgs.lib, its lib/ folder).
test-upstream: setup
	$(PY) -m pytest -m upstream
