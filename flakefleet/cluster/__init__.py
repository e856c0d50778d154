"""The Kubernetes cluster as delivery and the operator commands touch it, over pinned SSH on a
control plane (`k3s kubectl`): node readiness, joining and leaving, restoring a snapshot, the
admin kubeconfig."""
