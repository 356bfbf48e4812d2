#!/usr/bin/env bash
# Stops the gateway that gateway-up.sh started (recorded PIDs, checked against their command line): Envoy first, then
# Contour, waiting for each to exit, and removes its work directory .cluster/gateway/. Needs no API server. The
# control plane keeps running, and so do the objects in it (CRDs, GatewayClass, namespace, Gateway, routes):
# gateway-up.sh reuses them. cluster-down.sh runs this before anything else, while the pod network is still there.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

found=0
for name in "${GATEWAY_COMPONENTS[@]}"; do
	if pid="$(component_pid "${name}")"; then
		stop_pid "${name}" "${pid}" 10
		found=1
	fi
	rm -f "$(pid_file "${name}")"
done
[ -d "${GATEWAY_DIR}" ] && found=1
rm -rf "${GATEWAY_DIR}"
# Quiet when there was nothing to stop: cluster-down.sh runs this every time.
if [ "${found}" = 1 ]; then
	log "gateway stopped; logs kept in ${CLUSTER_DIR}/logs/"
fi
