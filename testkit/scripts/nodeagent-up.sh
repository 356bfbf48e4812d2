#!/usr/bin/env bash
# Starts the node agent (modeldeploy_testkit.nodeagent: the kubelet of extra nodes whose pods run as real
# processes), detached, records its PID in .cluster/pids/node-agent.pid and waits until its nodes are Ready.
# Idempotent: a running agent is left as it is. Needs root (network namespaces), .venv/ and a running cluster
# (make cluster-up).
# MODELDEPLOY_NODE_AGENT_NODES: space-separated node names (default: agent-node-0).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

nodes="${MODELDEPLOY_NODE_AGENT_NODES:-agent-node-0}"
pid_path="$(pid_file node-agent)"
log_path="${CLUSTER_DIR}/logs/node-agent.log"

agent_pid() { # the recorded PID when that process is alive and is still the node agent
	local pid
	[ -f "${pid_path}" ] || return 1
	pid="$(cat "${pid_path}")"
	[ -n "${pid}" ] && [ -r "/proc/${pid}/cmdline" ] || return 1
	tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "-m ${NODEAGENT_MODULE}" || return 1
	echo "${pid}"
}

if pid="$(agent_pid)"; then
	log "node agent already running (pid ${pid}); log: ${log_path}"
	exit 0
fi
[ "$(id -u)" = 0 ] || die "the node agent needs root: it creates a network namespace and a veth pair per pod"
[ -x "${REPO_ROOT}/.venv/bin/python" ] || die "no .venv/: run 'make install' first"
apiserver_ready || die "the API server is not ready: run 'make cluster-up' first"

args=(--state-dir "${AGENT_STATE_DIR}" --pods-dir "${AGENT_PODS_DIR}")
for node in ${nodes}; do args+=(--node "${node}"); done
mkdir -p "${CLUSTER_DIR}/pids" "${CLUSTER_DIR}/logs"
log "starting the node agent for ${nodes}; log: ${log_path}"
(cd "${REPO_ROOT}" && exec setsid "${REPO_ROOT}/.venv/bin/python" -m "${NODEAGENT_MODULE}" "${args[@]}" \
	>>"${log_path}" 2>&1 </dev/null) &
echo $! >"${pid_path}"

for node in ${nodes}; do
	wait_ready node-agent 60 "${log_path}" agent_pid -- admin_kubectl wait --for=condition=Ready "node/${node}" --timeout=2s
done
log "node agent running (pid $(cat "${pid_path}")): nodes ${nodes} Ready"
