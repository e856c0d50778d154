"""The real Kubernetes API under the cluster tests (issue 37): what it costs to start one, and
what one of flakefleet's cluster calls costs on it against the stand-in k3s' answer.

    .venv/bin/python bench/kube_api.py [RUNS]

Needs the binaries scripts/kubernetes.sh builds. Measures, RUNS times each (default 3): a
control plane's start (etcd, kube-apiserver until /readyz, kube-controller-manager until the
default ServiceAccount exists), a kubelet's registration and one heartbeat (status PATCH and
Lease), and the readiness query of a batch of three (`kubectl get nodes A B C -o json`) through
the real kubectl and through tests/standin/k3s.py's file-based API (as a subprocess, the way a
host runs it). Prints a Markdown table (min / median / max seconds) for docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flakefleet.cluster.kubectl import nodes_query  # noqa: E402
from tests.kube import pki  # noqa: E402
from tests.kube.controlplane import ControlPlane, binaries  # noqa: E402
from tests.kube.kubelet import Kubelet  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def standin_query(directory: Path, names: tuple[str, ...]) -> None:
    """The stand-in k3s answering the same query from its directory (a fresh interpreter, as on a host)."""
    code = (f"import importlib.util,sys; s=importlib.util.spec_from_file_location('k', {str(ROOT / 'tests/standin/k3s.py')!r});"
            f"m=importlib.util.module_from_spec(s); s.loader.exec_module(m); m.API={str(directory / 'api')!r};"
            f"m.KUBECONFIG={str(directory / 'k3s.yaml')!r}; m.LOG={str(directory / 'log')!r};"
            f"import time; [m.write_node(n, renewTime=time.time()) for n in {list(names)!r}];"
            f"sys.exit(m.kubectl({nodes_query(names)[2:]!r}))")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def main(runs: int) -> None:
    found = binaries()
    if found is None:
        print("bench/kube_api.py: the Kubernetes binaries are missing: run scripts/kubernetes.sh", file=sys.stderr)
        sys.exit(1)
    rows: dict[str, list[float]] = {"control plane start": [], "of which kube-apiserver ready": [],
                                     "control plane stop (killed)": [], "kubelet registration + heartbeat": [],
                                     "readiness query, real kubectl + API": [], "readiness query, stand-in k3s": []}
    names = ("n-a", "n-b", "n-c")
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            plane = ControlPlane(Path(tmp) / "kube", found, pki.stack_cas("bench"))
            try:
                rows["control plane start"].append(timed(plane.start))
                rows["of which kube-apiserver ready"].append(plane.timings["kube-apiserver ready"])
                for name in names:
                    rows["kubelet registration + heartbeat"].append(timed(Kubelet(plane, name).register))
                query = nodes_query(names)[2:]
                rows["readiness query, real kubectl + API"].append(timed(lambda: plane.kubectl(plane.admin(), *query)))
            finally:
                rows["control plane stop (killed)"].append(timed(plane.stop))
            (Path(tmp) / "api").mkdir()
            (Path(tmp) / "k3s.yaml").write_text("admin\n")
            rows["readiness query, stand-in k3s"].append(timed(lambda: standin_query(Path(tmp), names)))
    print("| step | runs | min s | median s | max s |\n|---|---:|---:|---:|---:|")
    for step, values in rows.items():
        print(f"| {step} | {len(values)} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    except ValueError:
        print("usage: bench/kube_api.py [RUNS]", file=sys.stderr)
        sys.exit(1)
