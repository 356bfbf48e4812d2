#!/usr/bin/env bash
# Stops exactly the processes cluster-up.sh started (recorded PIDs, checked against their command line), waits for
# each to exit and its ports to close, removes the pod network and the cluster state. Logs stay in .cluster/logs/.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The gateway before all: Envoy sends to pod IPs, and must be gone before the routes into the pod range are.
"${SCRIPTS_DIR}/gateway-down.sh" || log "stopping the gateway failed; continuing"

# Then the node agent, while the API server can still hear about its pods: it stops their processes and removes
# their network namespaces, veths and routes (and nodeagent-down.sh removes whatever a crashed agent left).
"${SCRIPTS_DIR}/nodeagent-down.sh" || log "the node agent's cleanup failed; continuing"

# Reverse start order: kwok and the controllers first, so nothing writes to an API server that is going away.
stop_order=(prometheus kwok kube-scheduler kube-controller-manager kube-apiserver etcd)
for name in "${stop_order[@]}"; do
	if pid="$(component_pid "${name}")"; then
		stop_pid "${name}" "${pid}" 15
	fi
	rm -f "$(pid_file "${name}")"
done

# Other tools (the node agent, the operator started by the demo) record their PIDs here too.
if [ -d "${CLUSTER_DIR}/pids" ]; then
	for file in "${CLUSTER_DIR}"/pids/*.pid; do
		[ -e "${file}" ] || continue
		pid="$(cat "${file}")"
		if [ -n "${pid}" ] && alive "${pid}"; then
			log "stopping $(basename "${file}" .pid) (pid ${pid})"
			kill -TERM "${pid}" 2>/dev/null || true
			for _ in $(seq 1 100); do alive "${pid}" || break; sleep 0.1; done
			kill -KILL "${pid}" 2>/dev/null || true
		fi
		rm -f "${file}"
	done
fi

for port in "${APISERVER_PORT}" "${ETCD_CLIENT_PORT}" "${ETCD_PEER_PORT}"; do
	for _ in $(seq 1 100); do
		ss -Hltn "sport = :${port}" | grep -q . || break
		sleep 0.1
	done
done

if ip link show "${POD_VETH_HOST}" >/dev/null 2>&1; then
	ip link delete "${POD_VETH_HOST}" || true
fi
if ip netns list 2>/dev/null | grep -qw "${POD_NETNS}"; then
	ip netns delete "${POD_NETNS}" || true
fi

if [ -d "${CLUSTER_DIR}" ]; then
	find "${CLUSTER_DIR}" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
fi
log "cluster stopped; logs kept in ${CLUSTER_DIR}/logs/"
