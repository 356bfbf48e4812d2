#!/usr/bin/env bash
# Stops the Argo CD that argocd-up.sh started (recorded PIDs, checked against their command line), waits for
# each process to exit, and removes its work directory .cluster/argocd/ (the git repository with it). The control
# plane keeps running, and so do the objects in it (CRDs, namespace argocd, Applications): argocd-up.sh reuses
# them. `cluster-down.sh` stops Argo CD as well, through the same PID files.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "${SCRIPTS_DIR}/argocd-lib.sh"

# The controller first: nothing then asks the repo server or Redis for anything.
for name in "${ARGOCD_COMPONENTS[@]}"; do
	if pid="$(argocd_pid "${name}")"; then
		stop_pid "${name}" "${pid}" 10
	fi
	rm -f "$(pid_file "${name}")"
done
rm -rf "${ARGOCD_DIR}"
log "argo cd stopped; logs kept in ${CLUSTER_DIR}/logs/"
