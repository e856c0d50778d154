"""The CustomResourceDefinitions k3s applies before it deploys manifests, restated for the real API:
k3s' helm controller's HelmChart (k3s-io/helm-controller,
pkg/crds/yaml/generated/helm.cattle.io_helmcharts.yaml: group helm.cattle.io, v1, namespaced,
the status subresource). Every `spec` field is declared with its type, so server-side field
validation refuses a field the controller does not have; the fields whose values are objects
(authSecret, podSecurityContext, securityContext, ...) keep their contents unchecked here."""

from __future__ import annotations

OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
HELMCHART_SPEC = {
    "authPassCredentials": {"type": "boolean"},
    "authSecret": OBJECT,
    "backOffLimit": {"type": "integer", "format": "int32"},
    "bootstrap": {"type": "boolean"},
    "chart": {"type": "string"},
    "chartContent": {"type": "string"},
    "createNamespace": {"type": "boolean"},
    "dockerRegistrySecret": OBJECT,
    "failurePolicy": {"type": "string", "enum": ["abort", "reinstall"], "default": "reinstall"},
    "helmVersion": {"type": "string"},
    "insecureSkipTLSVerify": {"type": "boolean"},
    "jobImage": {"type": "string"},
    "plainHTTP": {"type": "boolean"},
    "podSecurityContext": OBJECT,
    "repo": {"type": "string"},
    "repoCA": {"type": "string"},
    "repoCAConfigMap": OBJECT,
    "securityContext": OBJECT,
    "set": {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True}},
    "targetNamespace": {"type": "string"},
    "timeout": {"type": "string"},
    "valuesContent": {"type": "string"},
    "valuesSecrets": {"type": "array", "items": OBJECT},
    "version": {"type": "string"},
}
HELMCHART = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "helmcharts.helm.cattle.io"},
    "spec": {
        "group": "helm.cattle.io", "scope": "Namespaced",
        "names": {"kind": "HelmChart", "listKind": "HelmChartList", "plural": "helmcharts", "singular": "helmchart"},
        "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                          "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                          "spec": {"type": "object", "properties": HELMCHART_SPEC},
                          "status": OBJECT}}}}],
    },
}
