#!/bin/sh
# bench/engine_scale.py's stand-in for hosts, copied over scripts/flakefleet in its project copy
# only (never the project's): every delivery, update and removal succeeds at once with the report
# the runner prints (from the plan), and the kubeconfig runner prints a kubeconfig. Nothing is
# contacted: what the bench measures is the engine and the program.
exec "$(dirname "$0")/../.venv/bin/python" - "$@" <<'EOF'
import base64, json, os, sys
if sys.argv[1:2] == ["kubeconfig"]:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nbench\n-----END CERTIFICATE-----\n").decode()
    print(f"apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: https://bench:6443\n  name: default")
elif "--remove" not in sys.argv:
    plan = json.loads(os.environ["FLAKEFLEET_DELIVERY"])
    print(json.dumps({"host": plan["host"], "system": plan["system"], "outcome": "activated", "found": {}}))
EOF
