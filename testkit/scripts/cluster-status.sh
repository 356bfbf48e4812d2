#!/usr/bin/env bash
# Says which control-plane processes run, where the API server listens, and where the logs are.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

running=0
for name in "${COMPONENTS[@]}"; do
	if pid="$(component_pid "${name}")"; then
		printf '  %-24s running (pid %s)\n' "${name}" "${pid}"
		running=$((running + 1))
	else
		printf '  %-24s not running\n' "${name}"
	fi
done
if [ -d "${CLUSTER_DIR}/pids" ]; then
	for file in "${CLUSTER_DIR}"/pids/*.pid; do
		[ -e "${file}" ] || continue
		name="$(basename "${file}" .pid)"
		case " ${COMPONENTS[*]} " in *" ${name} "*) continue ;; esac
		pid="$(cat "${file}")"
		state="not running"; kill -0 "${pid}" 2>/dev/null && state="running (pid ${pid})"
		printf '  %-24s %s\n' "${name}" "${state}"
	done
fi
if [ "${running}" -gt 0 ] && apiserver_ready; then
	echo "API server: ${APISERVER_URL} (ready); kubernetes ${KUBERNETES_VERSION}"
	echo "kubeconfig: ${CLUSTER_DIR}/kubeconfig"
	admin_kubectl get nodes 2>/dev/null | sed 's/^/  /' || true
else
	echo "API server: not ready"
fi
echo "logs: ${CLUSTER_DIR}/logs/"
