#!/usr/bin/env bash
# Checks that `cluster-down` left nothing behind: no process of ours, no port held, no pod network, no state.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

problems=0
fail() { log "left behind: $*"; problems=$((problems + 1)); }

for pid in $(pgrep -f "${BIN_CACHE}/" || true); do
	fail "process ${pid}: $(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | cut -c1-120)"
done
# The gateway's processes: Contour runs from the cache (found above), Envoy from .venv/; both name files of
# GATEWAY_DIR on their command line.
for pid in $(pgrep -f -- "${GATEWAY_DIR}/" || true); do
	tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "${BIN_CACHE}/" && continue
	fail "gateway process ${pid}: $(tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | cut -c1-120)"
done
for port in "${ETCD_CLIENT_PORT}" "${ETCD_PEER_PORT}" "${APISERVER_PORT}"; do
	if ss -Hltn "sport = :${port}" | grep -q .; then fail "port ${port} is still held"; fi
done
ip netns list 2>/dev/null | grep -qw "${POD_NETNS}" && fail "network namespace ${POD_NETNS}"
# The node agent's pods: a namespace each, and a supervisor process each.
for netns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^mdpod-' || true); do fail "network namespace ${netns}"; done
for pid in $(pgrep -f "modeldeploy_testkit[./]nodeagent" || true); do fail "node agent process ${pid}"; done
[ ! -e "${AGENT_PODS_DIR}" ] || fail "node agent pod directory ${AGENT_PODS_DIR}"
ip link show "${POD_VETH_HOST}" >/dev/null 2>&1 && fail "interface ${POD_VETH_HOST}"
if [ -d "${CLUSTER_DIR}" ]; then
	leftovers="$(find "${CLUSTER_DIR}" -mindepth 1 -maxdepth 1 ! -name logs -printf '%f ')"
	[ -z "${leftovers}" ] || fail "state in ${CLUSTER_DIR}: ${leftovers}"
fi
if [ "${problems}" -gt 0 ]; then
	exit 1
fi
log "cluster-down left no process, port, network or state behind"
