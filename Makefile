# flakefleet: the two commands of the README quick start, and their set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup prerequisites kubernetes demo demo-down test test-deep test-upstream bench reference configurations

# The system packages (installed as root on Debian/Ubuntu, else named in one line), then .venv.
setup: prerequisites $(VENV)/.installed

prerequisites:
	@sh scripts/prerequisites.sh

# requirements.txt pins what flakefleet runs on; pyproject.toml adds the `flakefleet` command
# (.venv/bin/flakefleet, an editable install of this checkout).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# The main job: the local stack's fleet on test hosts (root), planned, delivered and shown.
demo: setup
	@$(PY) -m flakefleet plan --stack local && echo && $(PY) scripts/demo.py up

demo-down: setup
	@$(PY) scripts/demo.py down

# The real Kubernetes control plane the cluster tests run on (etcd, kube-apiserver,
# kube-controller-manager, kubectl at the flake's k3s' release), built once from the Go module
# proxy into ~/.cache/flakefleet (~5 minutes of two cores; scripts/kubernetes.sh says why these
# versions). Without Go it says so in one line and those tests skip (CI fails instead).
kubernetes:
	@sh scripts/kubernetes.sh >/dev/null || [ "$$FLAKEFLEET_REQUIRE_ALL" != 1 ]

# Every test tier.
test: setup kubernetes
	$(PY) -m pytest

# The generated stacks' whole lives (tests/test_user_life.py) with 300 examples instead of CI's 50.
test-deep: setup
	FLAKEFLEET_GENERATED_STACKS=300 $(PY) -m pytest tests/test_user_life.py

bench: setup
	$(PY) bench/plan_scale.py

reference: setup
	$(PY) scripts/config_reference.py

# nixos/configurations.json, the flake's nixosConfigurations, from the stack files, and
# nixos/common/spec-schema.json, the pool spec's schema the flake declares its options from.
configurations: setup
	$(PY) scripts/nixos_configurations.py

# Tier 5, local only: the checks against real upstreams. FLAKEFLEET_NIXPKGS_LIB is a directory
# with nixpkgs' lib/ (e.g. a checkout of nix-community/nixpkgs.lib, its lib/ folder).
test-upstream: setup
	$(PY) -m pytest -m upstream
