#!/usr/bin/env bash
# The main job, end to end on the local control plane: CRD, operator, an example model, a version rollout.
# Expects `make cluster-up` to have run (the Makefile's demo target does that first).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export KUBECONFIG="${CLUSTER_DIR}/kubeconfig"
kubectl() { "${KUBERNETES_BIN}/kubectl" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
NS=demo
NAME=fraud-detector

say "Installing the CRD"
kubectl apply --server-side --force-conflicts -f "${REPO_ROOT}/crds/" >/dev/null
kubectl wait --for=condition=Established crd/modeldeployments.modeldeploy.io --timeout=60s >/dev/null

say "Starting the operator (modeldeploy run), log: ${CLUSTER_DIR}/logs/operator-demo.log"
pid_path="$(pid_file operator-demo)"
if [ -f "${pid_path}" ] && kill -0 "$(cat "${pid_path}")" 2>/dev/null; then
	kill -TERM "$(cat "${pid_path}")"
	while kill -0 "$(cat "${pid_path}")" 2>/dev/null; do sleep 0.1; done
fi
setsid "${REPO_ROOT}/.venv/bin/modeldeploy" run --metrics-bind-address 127.0.0.1:18080 \
	>"${CLUSTER_DIR}/logs/operator-demo.log" 2>&1 </dev/null &
echo $! >"${pid_path}"

say "Applying manifests/examples/${NAME}.yaml in namespace ${NS}"
kubectl create namespace "${NS}" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "${NS}" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kubectl apply -n "${NS}" -f "${REPO_ROOT}/manifests/examples/${NAME}.yaml"
kubectl wait -n "${NS}" --for=condition=Ready "mdep/${NAME}" --timeout=120s
kubectl get -n "${NS}" mdep,deployments,services,pods

say "Rolling out version 1.5.0 (a new revision; the old one serves until the new one is Ready)"
kubectl patch -n "${NS}" mdep "${NAME}" --type merge \
	-p '{"spec":{"model":{"version":"1.5.0","uri":"s3://models/fraud-detector/1.5.0/model.joblib"}}}'
kubectl wait -n "${NS}" --for=jsonpath='{.status.stable.version}'=1.5.0 "mdep/${NAME}" --timeout=120s >/dev/null
kubectl wait -n "${NS}" --for=condition=Ready "mdep/${NAME}" --timeout=120s
kubectl get -n "${NS}" mdep,deployments
echo
kubectl get -n "${NS}" mdep "${NAME}" -o jsonpath='{range .status.history[*]}{.time}  {.version}  {.outcome}  {.reason}{"\n"}{end}'

say "Done"
cat <<MSG
The control plane and the operator keep running:
  export KUBECONFIG=${KUBECONFIG}
  ${KUBERNETES_BIN}/kubectl get mdep -A
  tail -f ${CLUSTER_DIR}/logs/operator-demo.log
Stop everything with: make cluster-down
MSG
