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
# Start from scratch, so the demo shows the same story every time it runs.
kubectl delete -n "${NS}" mdep "${NAME}" --ignore-not-found --wait=true >/dev/null
kubectl apply -n "${NS}" -f "${REPO_ROOT}/manifests/examples/${NAME}.yaml"
kubectl wait -n "${NS}" --for=condition=Ready "mdep/${NAME}" --timeout=120s
kubectl get -n "${NS}" mdep,deployments,services,pods

say "Rolling out version 1.5.0 as a canary (steps from the example: 25%, pause 15s, 50%, pause 15s)"
kubectl patch -n "${NS}" mdep "${NAME}" --type merge \
	-p '{"spec":{"model":{"version":"1.5.0","uri":"s3://models/fraud-detector/1.5.0/model.joblib"}}}'
for step in 1 3; do
	kubectl wait -n "${NS}" --for=jsonpath='{.status.currentStepIndex}'="${step}" "mdep/${NAME}" --timeout=120s >/dev/null
	echo
	"${REPO_ROOT}/.venv/bin/kubectl-mdep" status "${NAME}" -n "${NS}"
	echo
	kubectl get -n "${NS}" mdep "${NAME}"
done
kubectl wait -n "${NS}" --for=jsonpath='{.status.stable.version}'=1.5.0 "mdep/${NAME}" --timeout=120s >/dev/null
kubectl wait -n "${NS}" --for=condition=Ready "mdep/${NAME}" --timeout=120s
kubectl get -n "${NS}" mdep,deployments
echo
"${REPO_ROOT}/.venv/bin/kubectl-mdep" status "${NAME}" -n "${NS}"

say "Done"
cat <<MSG
The control plane and the operator keep running:
  export KUBECONFIG=${KUBECONFIG} PATH=${REPO_ROOT}/.venv/bin:\$PATH
  ${KUBERNETES_BIN}/kubectl get mdep -A
  kubectl-mdep status ${NAME} -n ${NS}     # or, with kubectl on PATH: kubectl mdep status ...
  tail -f ${CLUSTER_DIR}/logs/operator-demo.log
Stop everything with: make cluster-down
MSG
