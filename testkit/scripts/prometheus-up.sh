#!/usr/bin/env bash
# Starts Prometheus (built by `build-tools.sh prometheus`) on 127.0.0.1, scraping the model servers of the
# local cluster: pods discovered through the API server (role pod, client-certificate TLS), kept only when they
# carry app.kubernetes.io/component=model-server, only their port named `metrics`, and only when the address is
# a pod IP in 198.18.0.0/15, every 2s. Series get the labels pod, namespace, revision and version.
# Idempotent; records its PID in .cluster/pids/prometheus.pid, so that cluster-down stops it. Log:
# .cluster/logs/prometheus.log. MODELDEPLOY_PROMETHEUS_PORT: listen port (default 9090).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_BIN="${BIN_CACHE}/prometheus-${PROMETHEUS_VERSION}"
PROMETHEUS_PORT="${MODELDEPLOY_PROMETHEUS_PORT:-9090}"
PROMETHEUS_URL="http://127.0.0.1:${PROMETHEUS_PORT}"
SCRAPE_INTERVAL="${MODELDEPLOY_PROMETHEUS_SCRAPE_INTERVAL:-2s}"

if pid="$(component_pid prometheus)" && curl -fsS --noproxy "*" --max-time 2 "${PROMETHEUS_URL}/-/ready" >/dev/null 2>&1; then
	log "prometheus already running (pid ${pid}): ${PROMETHEUS_URL}"
	exit 0
fi
[ -x "${PROMETHEUS_BIN}/prometheus" ] || die "prometheus ${PROMETHEUS_VERSION} is not built: run 'testkit/scripts/build-tools.sh prometheus'"
apiserver_ready || die "the API server is not ready: run 'make cluster-up' first"
if ss -Hltn "sport = :${PROMETHEUS_PORT}" | grep -q .; then
	die "port ${PROMETHEUS_PORT} is already in use; set MODELDEPLOY_PROMETHEUS_PORT"
fi

# Prometheus cannot run `ip route get` before each scrape, so the routes are checked here, before it starts: the
# pod range must end at our veths (the cluster's, or a per-pod veth of the node agent), never at a gateway.
pod_range_routed_here || die "refusing to start prometheus"

mkdir -p "${CLUSTER_DIR}/config" "${CLUSTER_DIR}/prometheus" "${CLUSTER_DIR}/logs" "${CLUSTER_DIR}/pids"
PKI="${CLUSTER_DIR}/pki"
CONFIG="${CLUSTER_DIR}/config/prometheus.yml"
cat >"${CONFIG}" <<YAML
global:
  scrape_interval: ${SCRAPE_INTERVAL}
  scrape_timeout: 1s
  evaluation_interval: ${SCRAPE_INTERVAL}
scrape_configs:
  - job_name: model-servers
    # The runtime's own labels (model, version) win over the target's: they say which version answered.
    honor_labels: true
    kubernetes_sd_configs:
      - role: pod
        api_server: ${APISERVER_URL}
        tls_config:
          ca_file: ${PKI}/ca.crt
          cert_file: ${PKI}/admin.crt
          key_file: ${PKI}/admin.key
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
        regex: model-server
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: metrics
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      # Pod IPs only (198.18.0.0/15 is 198.18.* and 198.19.*): no other address is ever scraped.
      - source_labels: [__address__]
        regex: '198\.1[89]\.[0-9]{1,3}\.[0-9]{1,3}:[0-9]{1,5}'
        action: keep
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_label_modeldeploy_io_revision]
        target_label: revision
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_version]
        target_label: version
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
        target_label: instance_name
      - source_labels: [__meta_kubernetes_pod_node_name]
        target_label: node
YAML

log "starting prometheus ${PROMETHEUS_VERSION} on ${PROMETHEUS_URL} (scrape interval ${SCRAPE_INTERVAL})"
setsid "${PROMETHEUS_BIN}/prometheus" \
	--config.file "${CONFIG}" \
	--storage.tsdb.path "${CLUSTER_DIR}/prometheus" --storage.tsdb.retention.time 6h \
	--web.listen-address "127.0.0.1:${PROMETHEUS_PORT}" \
	--log.level warn \
	>>"${CLUSTER_DIR}/logs/prometheus.log" 2>&1 </dev/null &
echo $! >"$(pid_file prometheus)"
wait_ready prometheus 60 "${CLUSTER_DIR}/logs/prometheus.log" component_pid prometheus -- \
	curl -fsS --noproxy "*" --max-time 2 "${PROMETHEUS_URL}/-/ready"
log "prometheus ready: ${PROMETHEUS_URL}"
