# flakefleet: the two commands of the README quick start, and their set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench reference

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
