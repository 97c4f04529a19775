#!/usr/bin/env bash
# A real-cluster run for users' CI: a kind cluster, the image loaded into it, the chart
# installed (its operator must become Ready), then the e2e scenarios through
# $STREAMHERD_E2E_KUBECONFIG. Not run on the project's machines (no kind, no Docker): see README.md.
#
# Needs: kind, kubectl, helm, podman or docker, and this repository's .venv (make deps).
# Environment:
#   STREAMHERD_E2E_CONSUMER_IMAGE  an image with python3, redis-py and this repository's e2e/
#                                  (the consumer pods the scenarios start); required
#   STREAMHERD_E2E_POD_REDIS_HOST  this machine's address as pods see it (default: the kind
#                                  network's gateway)
#   IMAGE      the operator image (default localhost/streamherd:dev, what `make image` builds)
#   CLUSTER    the kind cluster's name (default streamherd-e2e); KEEP=1 keeps it afterwards
#   TESTS      what to run (default: the operator's end-to-end modules, those marked control_plane:
#              the ones whose tests run on any cluster)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${CLUSTER:-streamherd-e2e}
image=${IMAGE:-localhost/streamherd:dev}
tests=${TESTS:-tests/reconcile/test_reconcile.py tests/reconcile/test_patterns.py tests/reconcile/test_resilience.py tests/reconcile/test_scale.py tests/scaling tests/janitor/test_operator.py tests/retention/test_operator.py}
: "${STREAMHERD_E2E_CONSUMER_IMAGE:?set it to an image with python3, redis-py and e2e/ (see e2e/kind/README.md)}"
work=$(mktemp -d)
kubeconfig=$work/kubeconfig

cleanup() {
    if [[ -z ${KEEP:-} ]]; then
        kind delete cluster --name "$cluster" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

kind create cluster --name "$cluster" --kubeconfig "$kubeconfig" --wait 120s

# The image, from the local store (podman's or docker's) into the cluster's nodes.
if command -v podman >/dev/null; then
    podman save --format docker-archive -o "$work/image.tar" "$image"
else
    docker save -o "$work/image.tar" "$image"
fi
kind load image-archive "$work/image.tar" --name "$cluster"

# The chart, its image the one just loaded (never pulled).
helm install streamherd "$repo/helm/streamherd" \
    --kubeconfig "$kubeconfig" --namespace streamherd --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
    --set image.pullPolicy=Never --wait --timeout 180s
kubectl --kubeconfig "$kubeconfig" -n streamherd rollout status deployment/streamherd --timeout=120s

# The scenarios start their own operator process (with their own settings) against the
# cluster: the installed one steps aside, or two operators would reconcile the same objects.
kubectl --kubeconfig "$kubeconfig" -n streamherd scale deployment/streamherd --replicas=0

gateway=$(docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}' 2>/dev/null ||
    podman network inspect kind -f '{{(index .Subnets 0).Gateway}}')
export STREAMHERD_E2E_KUBECONFIG=$kubeconfig
export STREAMHERD_E2E_REDIS_BIND=0.0.0.0
export STREAMHERD_E2E_POD_REDIS_HOST=${STREAMHERD_E2E_POD_REDIS_HOST:-$gateway}
export STREAMHERD_E2E_CONSUMER_IMAGE
cd "$repo"
# shellcheck disable=SC2086  # $tests is a list of paths
.venv/bin/pytest $tests -p no:cacheprovider
