"""The real Kubernetes API under the cluster tests: certificates (pki.py), a control plane started
as k3s starts one (controlplane.py) and a kubelet's API calls made with its own node credentials
(kubelet.py)."""
