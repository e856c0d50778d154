"""The cluster's kubeconfig: read from the first control plane over pinned SSH, server rewritten.

Invoked by a `pulumi_command.local.Command` (whose stdout is a Pulumi secret) as
`scripts/flakefleet kubeconfig` with FLAKEFLEET_KUBECONFIG (JSON: endpoint, api_endpoint).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import yaml

from flakefleet.common.retry import backoff_delays
from flakefleet.common.ssh import pinned_ssh
from flakefleet.plan.contract import IDENTITY_ENV, KUBECONFIG_PLAN_ENV, KubeconfigPlan
from flakefleet.common.cli import guard, required_env
K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"


def rewrite_server(kubeconfig: str, server: str, name: str) -> str:
    """The kubeconfig with every cluster's server set to `server` and names set to `name`."""
    doc = yaml.safe_load(kubeconfig)
    for cluster in doc.get("clusters", []):
        cluster["cluster"]["server"] = server
        cluster["name"] = name
    for context in doc.get("contexts", []):
        context["context"]["cluster"] = name
        context["name"] = name
    doc["current-context"] = name
    return yaml.safe_dump(doc, sort_keys=False)


def ca_certificate(kubeconfig: str) -> str:
    """The cluster CA certificate (PEM) from a kubeconfig."""
    doc = yaml.safe_load(kubeconfig)
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


def fetch(plan: KubeconfigPlan, identity: str | None, attempts: int = 5) -> str:
    """`cat` the k3s kubeconfig on the control plane in `plan.endpoint`, with bounded retries."""
    e = plan.endpoint
    delays, last = backoff_delays(), ""
    with pinned_ssh(e.address, e.port, e.user, e.host_key, identity) as ssh:
        for attempt in range(attempts):
            res = subprocess.run([*ssh, f"cat {K3S_KUBECONFIG}"], capture_output=True, text=True, timeout=60)
            if res.returncode == 0:
                return res.stdout
            last = res.stderr.strip()
            if attempt < attempts - 1:
                time.sleep(next(delays))
    raise RuntimeError(f"cannot read {K3S_KUBECONFIG} on {e.host}: {last}")


def main() -> int:
    plan = KubeconfigPlan.from_json(required_env(KUBECONFIG_PLAN_ENV))
    try:
        text = fetch(plan, os.environ.get(IDENTITY_ENV))
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    sys.stdout.write(rewrite_server(text, plan.api_endpoint, plan.cluster))
    return 0


if __name__ == "__main__":
    sys.exit(guard("flakefleet kubeconfig", main))
