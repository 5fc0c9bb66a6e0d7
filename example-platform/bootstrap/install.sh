#!/usr/bin/env bash
# Install Argo CD the way gpuplat does for this example tree (gpuplat reads CHART_VERSION from here;
# it runs the same helm command from a Job in the cluster, with the values below).
set -euo pipefail

CHART_VERSION="9.5.21"
NAMESPACE="argocd"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

kubectl get namespace "${NAMESPACE}" >/dev/null 2>&1 || kubectl create namespace "${NAMESPACE}"
kubectl -n "${NAMESPACE}" get secret argocd-redis >/dev/null 2>&1 ||
  kubectl -n "${NAMESPACE}" create secret generic argocd-redis --from-literal=auth="$(openssl rand -hex 24)"
helm upgrade --install argo-cd argo/argo-cd --repo https://argoproj.github.io/argo-helm \
  --version "${CHART_VERSION}" --namespace "${NAMESPACE}" -f "${HERE}/argo-cd/values.yaml" --wait
