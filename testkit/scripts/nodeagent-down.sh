#!/usr/bin/env bash
# Stops the node agent recorded in .cluster/pids/node-agent.pid and waits for it: on SIGTERM it stops its pods'
# processes (SIGTERM, grace, SIGKILL) and removes their network namespaces, veths and routes. Then removes whatever
# is left all the same (after a crash or a SIGKILL): processes in pod namespaces, the namespaces, the agent's veths,
# container shims. Run by cluster-down.sh before the API server stops; safe to run when no agent runs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pid_path="$(pid_file node-agent)"
if [ -f "${pid_path}" ]; then
	pid="$(cat "${pid_path}")"
	if [ -n "${pid}" ] && [ -r "/proc/${pid}/cmdline" ] && tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "-m ${NODEAGENT_MODULE}"; then
		# Its pods get up to 10s each (--shutdown-grace), in parallel, then a few API calls.
		stop_pid node-agent "${pid}" 45
	fi
	rm -f "${pid_path}"
fi

# Fallback: nothing the agent made may outlive it.
left=0
for pid in $(pgrep -f "${NODEAGENT_DIR}/shim.py" || true); do
	kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null || true
	left=$((left + 1))
done
for netns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^mdpod-' || true); do
	for pid in $(ip netns pids "${netns}" 2>/dev/null || true); do kill -KILL "${pid}" 2>/dev/null || true; done
	ip netns delete "${netns}" 2>/dev/null || true
	left=$((left + 1))
done
for dev in $(ip -o link show 2>/dev/null | grep 'alias modeldeploy-nodeagent:' | awk -F': ' '{print $2}' | cut -d@ -f1); do
	ip link delete "${dev}" 2>/dev/null || true
	left=$((left + 1))
done
if [ -d "${AGENT_PODS_DIR}" ]; then
	rm -rf "${AGENT_PODS_DIR}"
fi
if [ "${left}" -gt 0 ]; then
	log "removed ${left} leftovers of the node agent (shims, pod namespaces, veths)"
fi
