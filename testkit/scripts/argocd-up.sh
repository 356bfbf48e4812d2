#!/usr/bin/env bash
# Starts Argo CD beside the local control plane, as local processes on 127.0.0.1: Redis, the repo server and the
# application controller (built by `build-tools.sh argocd`; no API server or UI), configured for a run
# outside the cluster. Installs into the cluster the Application and AppProject CRDs of the same Argo CD version,
# the namespace `argocd` with argocd-cm (our ModelDeployment health check included), argocd-rbac-cm, argocd-secret
# and the `default` AppProject, and creates a git repository to sync from, a bare one under .cluster/argocd/,
# seeded with the ModelDeployments of manifests/examples/ under models/.
#
# Idempotent: a healthy Argo CD is left as it is. PIDs go to .cluster/pids/argocd-*.pid: `argocd-down.sh`
# stops Argo CD alone, `cluster-down.sh` stops it with everything else. Logs: .cluster/logs/argocd-*.log.
# The ports chosen (free ones on 127.0.0.1) and the repository's URL are written to .cluster/argocd/argocd.env.
# Redis is Debian's redis-server; when it is missing and this runs as root, it is installed with apt-get.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "${SCRIPTS_DIR}/argocd-lib.sh"

RECONCILIATION_TIMEOUT="${MODELDEPLOY_ARGOCD_RECONCILIATION_TIMEOUT:-10s}"
LOGS="${CLUSTER_DIR}/logs"
started=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - started) / 1000000 )) ms"; }

metrics_up() { curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$1/metrics"; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
healthy() {
	[ -f "${ARGOCD_ENV}" ] || return 1
	# shellcheck disable=SC1090
	. "${ARGOCD_ENV}"
	for name in "${ARGOCD_COMPONENTS[@]}"; do argocd_pid "${name}" >/dev/null || return 1; done
	redis_up "${ARGOCD_REDIS_PORT}" && metrics_up "${ARGOCD_REPO_SERVER_METRICS_PORT}" \
		&& metrics_up "${ARGOCD_CONTROLLER_METRICS_PORT}" \
		&& admin_kubectl get appproject default -n "${ARGOCD_NAMESPACE}" -o name >/dev/null 2>&1
}

apiserver_ready || die "the API server is not ready: run 'make cluster-up' first"
if healthy 2>/dev/null; then
	log "argo cd already running; settings in ${ARGOCD_ENV}"
	exit 0
fi
for name in "${ARGOCD_COMPONENTS[@]}"; do
	if [ -f "$(pid_file "${name}")" ]; then
		log "found a partial or unhealthy argo cd; stopping it first"
		"${SCRIPTS_DIR}/argocd-down.sh"
		break
	fi
done

mkdir -p "${ARGOCD_DIR}" "${LOGS}" "${CLUSTER_DIR}/pids"
: >"${LOGS}/argocd-up.log"
[ -x "${ARGOCD_BIN}/argocd" ] || die "argo cd ${ARGOCD_VERSION} is not built: run 'testkit/scripts/build-tools.sh argocd'"
command -v git >/dev/null || die "git is needed for the repository argo cd syncs from"
if ! command -v redis-server >/dev/null; then
	[ "$(id -u)" = 0 ] || die "redis-server is missing: install Debian's redis-server package (apt-get install redis-server)"
	log "installing redis-server (apt-get)"
	# Only the program is wanted: the package's own service is not started (there is no init system here, and a
	# policy-rc.d, when the machine has one, says the same).
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"${LOGS}/argocd-up.log" 2>&1 \
		|| die "apt-get update failed; see ${LOGS}/argocd-up.log"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
		>>"${LOGS}/argocd-up.log" 2>&1 || die "apt-get install redis-server failed; see ${LOGS}/argocd-up.log"
	command -v redis-server >/dev/null || die "redis-server is still missing after apt-get install"
fi

WORK="${ARGOCD_DIR}/run"
rm -rf "${WORK}"
mkdir -p "${WORK}"/{tmp,home,tls,ssh,gnupg,plugins,redis}

# --- ports --------------------------------------------------------------------------------------------------------
chosen=()
free_port ARGOCD_REDIS_PORT
free_port ARGOCD_REPO_SERVER_PORT
free_port ARGOCD_REPO_SERVER_METRICS_PORT
free_port ARGOCD_CONTROLLER_METRICS_PORT

# --- cluster objects ----------------------------------------------------------------------------------------------
# The CRDs of exactly the version that runs, from the module the binary was built from (Go module cache).
module_dir="$(cd "${TOOLS_DIR}/argocd" && go mod download -json "github.com/argoproj/argo-cd/v2@${ARGOCD_VERSION}" \
	| sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[ -d "${module_dir}/manifests/crds" ] || die "no manifests/crds in the argo-cd module (${module_dir:-not downloaded})"
log "installing the Application and AppProject CRDs of argo cd ${ARGOCD_VERSION}"
admin_kubectl apply --server-side --force-conflicts \
	-f "${module_dir}/manifests/crds/application-crd.yaml" \
	-f "${module_dir}/manifests/crds/appproject-crd.yaml" >>"${LOGS}/argocd-up.log"
# Just created, a CRD has no conditions yet, which `kubectl wait` reports as an error rather than waiting.
crds_established() {
	admin_kubectl wait --for=condition=Established --timeout=5s crd/applications.argoproj.io crd/appprojects.argoproj.io
}
for _ in $(seq 1 60); do crds_established >/dev/null 2>&1 && break; sleep 0.5; done
crds_established >>"${LOGS}/argocd-up.log" || die "the Argo CD CRDs did not become Established"

log "configuring namespace ${ARGOCD_NAMESPACE}: argocd-cm, argocd-rbac-cm, argocd-secret, AppProject default"
admin_kubectl apply --server-side --field-manager modeldeploy-argocd-up -f - >>"${LOGS}/argocd-up.log" <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: ${ARGOCD_NAMESPACE}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: ${ARGOCD_NAMESPACE}
  labels: {app.kubernetes.io/name: argocd-cm, app.kubernetes.io/part-of: argocd}
data:
  timeout.reconciliation: ${RECONCILIATION_TIMEOUT}
  resource.exclusions: |
    - apiGroups: [""]
      kinds: [Endpoints]
    - apiGroups: [discovery.k8s.io]
      kinds: [EndpointSlice]
    - apiGroups: [coordination.k8s.io]
      kinds: [Lease]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-rbac-cm
  namespace: ${ARGOCD_NAMESPACE}
  labels: {app.kubernetes.io/name: argocd-rbac-cm, app.kubernetes.io/part-of: argocd}
data:
  policy.default: role:readonly
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: ${ARGOCD_NAMESPACE}
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
YAML
# The health check goes in exactly as docs/argocd.md tells users to install it.
admin_kubectl -n "${ARGOCD_NAMESPACE}" patch configmap argocd-cm --type merge \
	--patch-file "${REPO_ROOT}/argocd/argocd-cm.yaml" >>"${LOGS}/argocd-up.log"
if ! admin_kubectl get secret argocd-secret -n "${ARGOCD_NAMESPACE}" -o name >/dev/null 2>&1; then
	admin_kubectl create secret generic argocd-secret -n "${ARGOCD_NAMESPACE}" \
		--from-literal=server.secretkey="$(openssl rand -base64 32)" >>"${LOGS}/argocd-up.log"
fi
admin_kubectl label secret argocd-secret -n "${ARGOCD_NAMESPACE}" --overwrite \
	app.kubernetes.io/name=argocd-secret app.kubernetes.io/part-of=argocd >>"${LOGS}/argocd-up.log"

# --- git ----------------------------------------------------------------------------------------------------------
git_() { git -c user.name=modeldeploy -c user.email=modeldeploy@localhost -c init.defaultBranch=main "$@"; }
if [ ! -d "${ARGOCD_GIT_REPO}" ]; then
	log "creating the git repository ${ARGOCD_GIT_URL} (models/ from manifests/examples/)"
	git_ init -q --bare "${ARGOCD_GIT_REPO}"
	seed="$(mktemp -d "${ARGOCD_DIR}/seed.XXXXXX")"
	git_ clone -q "${ARGOCD_GIT_REPO}" "${seed}" 2>>"${LOGS}/argocd-up.log"
	mkdir -p "${seed}/models"
	for file in "${REPO_ROOT}"/manifests/examples/*.yaml; do
		grep -q '^kind: ModelDeployment$' "${file}" && cp "${file}" "${seed}/models/"
	done
	git_ -C "${seed}" add -A
	git_ -C "${seed}" commit -q -m "ModelDeployments from manifests/examples"
	git_ -C "${seed}" push -q origin HEAD:main 2>>"${LOGS}/argocd-up.log"
	rm -rf "${seed}"
fi

# --- processes ----------------------------------------------------------------------------------------------------
# The defaults of these paths are under /app/config and /home/argocd, where the container image puts them.
COMMON_ENV=(
	HOME="${WORK}/home" TMPDIR="${WORK}/tmp"
	ARGOCD_RECONCILIATION_TIMEOUT="${RECONCILIATION_TIMEOUT}"
	ARGOCD_GPG_ENABLED=false
	ARGOCD_TLS_DATA_PATH="${WORK}/tls" ARGOCD_SSH_DATA_PATH="${WORK}/ssh" ARGOCD_GNUPGHOME="${WORK}/gnupg"
	ARGOCD_PLUGINSOCKFILEPATH="${WORK}/plugins" ARGOCD_ASK_PASS_SOCK="${WORK}/tmp/reposerver-ask-pass.sock"
)
start() { # start NAME ENV... -- PROGRAM ARGS...: detached, logged to .cluster/logs/NAME.log, PID recorded
	local name="$1"; shift
	local env=()
	while [ "$1" != -- ]; do env+=("$1"); shift; done
	shift
	setsid env "${env[@]}" "$@" >"${LOGS}/${name}.log" 2>&1 </dev/null &
	echo $! >"$(pid_file "${name}")"
}
wait_for() { # wait_for NAME SECONDS COMMAND...: poll until the command succeeds, or fail with the log
	local name="$1" seconds="$2"
	shift 2
	wait_ready "${name}" "${seconds}" "${LOGS}/${name}.log" argocd_pid "${name}" -- "$@"
}
# One binary for every component: ARGOCD_BINARY_NAME picks it. Each runs through a symlink in the cache named after
# it, so that `ps` and argocd_pid tell them apart, and Redis through one too: verify-down.sh, which looks for
# processes run from the cache, then finds any of them left behind.
for name in argocd-repo-server argocd-application-controller; do
	ln -sfn argocd "${ARGOCD_BIN}/${name}"
done
ln -sfn "$(command -v redis-server)" "${ARGOCD_BIN}/redis-server"

log "starting redis (127.0.0.1:${ARGOCD_REDIS_PORT})"
start argocd-redis -- "${ARGOCD_BIN}/redis-server" --bind 127.0.0.1 --port "${ARGOCD_REDIS_PORT}" \
	--save "" --appendonly no --dir "${WORK}/redis" --protected-mode yes
wait_for argocd-redis 20 redis_up "${ARGOCD_REDIS_PORT}"

log "starting argocd-repo-server ${ARGOCD_VERSION} (127.0.0.1:${ARGOCD_REPO_SERVER_PORT})"
start argocd-repo-server ARGOCD_BINARY_NAME=argocd-repo-server "${COMMON_ENV[@]}" -- \
	"${ARGOCD_BIN}/argocd-repo-server" \
	--address 127.0.0.1 --port "${ARGOCD_REPO_SERVER_PORT}" \
	--metrics-address 127.0.0.1 --metrics-port "${ARGOCD_REPO_SERVER_METRICS_PORT}" \
	--redis "127.0.0.1:${ARGOCD_REDIS_PORT}" --disable-tls --loglevel info
wait_for argocd-repo-server 60 metrics_up "${ARGOCD_REPO_SERVER_METRICS_PORT}"

# ARGOCD_FAKE_IN_CLUSTER with KUBECONFIG: the destination https://kubernetes.default.svc is the kubeconfig's cluster.
# The metrics server binds every address (only its port can be chosen); nothing else listens beyond loopback.
log "starting argocd-application-controller ${ARGOCD_VERSION} (metrics on port ${ARGOCD_CONTROLLER_METRICS_PORT})"
start argocd-application-controller ARGOCD_BINARY_NAME=argocd-application-controller "${COMMON_ENV[@]}" \
	ARGOCD_FAKE_IN_CLUSTER=true KUBECONFIG="${CLUSTER_DIR}/kubeconfig" -- \
	"${ARGOCD_BIN}/argocd-application-controller" \
	--kubeconfig "${CLUSTER_DIR}/kubeconfig" --namespace "${ARGOCD_NAMESPACE}" \
	--redis "127.0.0.1:${ARGOCD_REDIS_PORT}" \
	--repo-server "127.0.0.1:${ARGOCD_REPO_SERVER_PORT}" --repo-server-plaintext \
	--metrics-port "${ARGOCD_CONTROLLER_METRICS_PORT}" \
	--app-resync-jitter 0 --loglevel info
wait_for argocd-application-controller 60 metrics_up "${ARGOCD_CONTROLLER_METRICS_PORT}"

cat >"${ARGOCD_ENV}" <<EOF
ARGOCD_VERSION=${ARGOCD_VERSION}
ARGOCD_NAMESPACE=${ARGOCD_NAMESPACE}
ARGOCD_GIT_URL=${ARGOCD_GIT_URL}
ARGOCD_GIT_REPO=${ARGOCD_GIT_REPO}
ARGOCD_REDIS_PORT=${ARGOCD_REDIS_PORT}
ARGOCD_REPO_SERVER_PORT=${ARGOCD_REPO_SERVER_PORT}
ARGOCD_REPO_SERVER_METRICS_PORT=${ARGOCD_REPO_SERVER_METRICS_PORT}
ARGOCD_CONTROLLER_METRICS_PORT=${ARGOCD_CONTROLLER_METRICS_PORT}
EOF
log "argo cd ready in $(elapsed); applications go in namespace ${ARGOCD_NAMESPACE}"
log "  git repository: ${ARGOCD_GIT_URL} (models/)"
log "  settings: ${ARGOCD_ENV}; logs: ${LOGS}/argocd-*.log"
