"""One host, as the deployer works on it: `nixos/host/hostctl.sh` (what runs on the
host, as root, sent on stdin) and the session that drives it over pinned SSH (the host's plan, its report, progress)."""
