#!/usr/bin/env bash
# Starts a real Kubernetes control plane as local processes on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok with 3 fake nodes. Idempotent: a healthy cluster is left as it is.
# State, kubeconfig and logs live in .cluster/ (git-ignored); `cluster-down.sh` stops exactly what this started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

started=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - started) / 1000000 )) ms"; }

all_running() {
	for name in "${COMPONENTS[@]}"; do component_pid "${name}" >/dev/null || return 1; done
}
# Health is judged by kwok's nodes: the node agent's nodes (type=node-agent) are NotReady while it is stopped.
if all_running && apiserver_ready && admin_kubectl wait --for=condition=Ready node -l type=kwok --timeout=2s >/dev/null 2>&1; then
	log "cluster already running and healthy (${APISERVER_URL}); kubeconfig: ${CLUSTER_DIR}/kubeconfig"
	if [ "${MODELDEPLOY_NODE_AGENT:-0}" = 1 ]; then "${SCRIPTS_DIR}/nodeagent-up.sh"; fi
	exit 0
fi
if [ -d "${CLUSTER_DIR}/pids" ]; then
	log "found a partial or unhealthy cluster; stopping it first"
	"${SCRIPTS_DIR}/cluster-down.sh"
fi

for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	[ -x "${KUBERNETES_BIN}/${name}" ] || die "${name} ${KUBERNETES_VERSION} is not built; run 'make tools' (testkit/scripts/build-tools.sh)"
done
[ -x "${ETCD_BIN}/etcd" ] || die "etcd is not built; run 'make tools'"
[ -x "${KWOK_BIN}/kwok" ] || die "kwok is not built; run 'make tools'"

for port in "${ETCD_CLIENT_PORT}" "${ETCD_PEER_PORT}" "${APISERVER_PORT}"; do
	if ss -Hltn "sport = :${port}" | grep -q .; then
		die "port ${port} on this machine is already in use by another program; set MODELDEPLOY_*_PORT (see testkit/scripts/lib.sh)"
	fi
done

mkdir -p "${CLUSTER_DIR}"/{pki,pids,logs,etcd,config}
PKI="${CLUSTER_DIR}/pki"
LOGS="${CLUSTER_DIR}/logs"
: >"${LOGS}/cluster-up.log"

# --- certificates -------------------------------------------------------------------------------------------------
make_cert() { # make_cert NAME SUBJECT [SAN]: a key and a certificate signed by the cluster CA
	local name="$1" subject="$2" san="${3:-}"
	openssl genrsa -out "${PKI}/${name}.key" 2048 2>/dev/null
	openssl req -new -key "${PKI}/${name}.key" -subj "${subject}" -out "${PKI}/${name}.csr" 2>/dev/null
	local ext="${PKI}/${name}.ext"
	if [ -n "${san}" ]; then
		printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "${san}" >"${ext}"
	else
		printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >"${ext}"
	fi
	openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" -CAcreateserial \
		-days 365 -extfile "${ext}" -out "${PKI}/${name}.crt" 2>/dev/null
}
if [ ! -f "${PKI}/admin.crt" ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "${PKI}/ca.key" -out "${PKI}/ca.crt" -days 365 \
		-subj "/CN=modeldeploy-local-ca" 2>/dev/null
	make_cert apiserver "/CN=kube-apiserver" \
		"IP:127.0.0.1,IP:${SERVICE_KUBERNETES_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	make_cert admin "/O=system:masters/CN=modeldeploy-admin"
	openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
	openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
fi

KUBECONFIG_FILE="${CLUSTER_DIR}/kubeconfig"
cat >"${KUBECONFIG_FILE}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: ${APISERVER_URL}
    certificate-authority: ${PKI}/ca.crt
users:
- name: admin
  user:
    client-certificate: ${PKI}/admin.crt
    client-key: ${PKI}/admin.key
contexts:
- name: modeldeploy-local
  context: {cluster: modeldeploy-local, user: admin}
current-context: modeldeploy-local
EOF

# --- pod network --------------------------------------------------------------------------------------------------
# The route to the pod range must be our veth before kwok hands out a single pod IP.
if ! ip netns list 2>/dev/null | grep -qw "${POD_NETNS}"; then
	ip netns add "${POD_NETNS}" || die "cannot create network namespace ${POD_NETNS} (needs root): pod IPs must be routed into it"
fi
if ! ip link show "${POD_VETH_HOST}" >/dev/null 2>&1; then
	ip link add "${POD_VETH_HOST}" type veth peer name "${POD_VETH_NS}" netns "${POD_NETNS}"
	ip addr add "${POD_HOST_ADDR}" dev "${POD_VETH_HOST}"
	ip link set "${POD_VETH_HOST}" up
	ip -n "${POD_NETNS}" addr add "${POD_NS_ADDR}" dev "${POD_VETH_NS}"
	ip -n "${POD_NETNS}" link set "${POD_VETH_NS}" up
	ip -n "${POD_NETNS}" link set lo up
fi
ip route get 198.18.0.9 | grep -q "dev ${POD_VETH_HOST}" || die "the pod range ${POD_RANGE} is not routed through ${POD_VETH_HOST}; refusing to start"

# --- processes ----------------------------------------------------------------------------------------------------
start() { # start NAME BINARY ARGS...: run detached, log to .cluster/logs/NAME.log, record the PID
	local name="$1" binary="$2"; shift 2
	setsid "${binary}" "$@" >"${LOGS}/${name}.log" 2>&1 </dev/null &
	echo $! >"$(pid_file "${name}")"
}
wait_for() { # wait_for WHAT SECONDS COMMAND...: poll until the command succeeds
	local what="$1" seconds="$2"; shift 2
	local deadline=$(( $(date +%s) + seconds ))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "${deadline}" ]; then
			log "timed out after ${seconds}s waiting for ${what}; logs in ${LOGS}/"
			tail -n 20 "${LOGS}"/*.log >&2 || true
			exit 1
		fi
		sleep 0.2
	done
}

log "starting etcd ${ETCD_VERSION}"
# No fsync: this cluster is disposable, and fsync dominates etcd's latency on shared disks.
start etcd "${ETCD_BIN}/etcd" \
	--name default --data-dir "${CLUSTER_DIR}/etcd" \
	--listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
	--listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
	--initial-cluster "default=http://127.0.0.1:${ETCD_PEER_PORT}" \
	--unsafe-no-fsync --quota-backend-bytes 8589934592 --log-level warn

# Every write is recorded (metadata only) so that tests and benchmarks can count what a client wrote.
cat >"${CLUSTER_DIR}/config/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
EOF
rm -f "${LOGS}/audit.log"

log "starting kube-apiserver ${KUBERNETES_VERSION}"
# OwnerReferencesPermissionEnforcement (on top of the default admission plugins), as OpenShift and hardened clusters
# run it: an owner reference with blockOwnerDeletion needs the right to update the owner's finalizers, so the tests
# prove the operator's RBAC is enough to create every child.
start kube-apiserver "${KUBERNETES_BIN}/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:${ETCD_CLIENT_PORT}" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${APISERVER_PORT}" \
	--tls-cert-file "${PKI}/apiserver.crt" --tls-private-key-file "${PKI}/apiserver.key" \
	--client-ca-file "${PKI}/ca.crt" \
	--service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--authorization-mode RBAC \
	--enable-admission-plugins OwnerReferencesPermissionEnforcement \
	--service-cluster-ip-range "${SERVICE_CIDR}" \
	--endpoint-reconciler-type none \
	--allow-privileged=true \
	--profiling=false \
	--audit-policy-file "${CLUSTER_DIR}/config/audit-policy.yaml" \
	--audit-log-path "${LOGS}/audit.log" --audit-log-format json --audit-log-maxsize 500 --audit-log-maxbackup 1 \
	--max-requests-inflight 1000 --max-mutating-requests-inflight 500

wait_for "kube-apiserver /readyz" 60 apiserver_ready

log "starting kube-controller-manager, kube-scheduler"
start kube-controller-manager "${KUBERNETES_BIN}/kube-controller-manager" \
	--kubeconfig "${KUBECONFIG_FILE}" \
	--authentication-kubeconfig "${KUBECONFIG_FILE}" --authorization-kubeconfig "${KUBECONFIG_FILE}" \
	--bind-address 127.0.0.1 --secure-port 0 \
	--controllers '*' --leader-elect=false \
	--service-account-private-key-file "${PKI}/sa.key" --root-ca-file "${PKI}/ca.crt" \
	--use-service-account-credentials=false \
	--kube-api-qps 300 --kube-api-burst 600 \
	--concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 --concurrent-service-endpoint-syncs 20 \
	--concurrent-gc-syncs 40 --concurrent-namespace-syncs 10 \
	--profiling=false

cat >"${CLUSTER_DIR}/config/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: ${KUBECONFIG_FILE}
  qps: 300
  burst: 600
leaderElection:
  leaderElect: false
EOF
start kube-scheduler "${KUBERNETES_BIN}/kube-scheduler" \
	--config "${CLUSTER_DIR}/config/scheduler.yaml" \
	--authentication-kubeconfig "${KUBECONFIG_FILE}" --authorization-kubeconfig "${KUBECONFIG_FILE}" \
	--bind-address 127.0.0.1 --secure-port 0 --profiling=false

log "starting kwok ${KWOK_VERSION} with ${#FAKE_NODES[@]} fake nodes"
start kwok "${KWOK_BIN}/kwok" \
	--kubeconfig "${KUBECONFIG_FILE}" \
	--manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
	--node-lease-duration-seconds 40 \
	--cidr "${KWOK_POD_CIDR}" --node-ip "${POD_NS_ADDR%/*}" \
	--config "${KWOK_STAGES}"

for node in "${FAKE_NODES[@]}"; do
	cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: ${node}
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    kubernetes.io/hostname: ${node}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
---
EOF
done | admin_kubectl apply --server-side -f - >>"${LOGS}/cluster-up.log"

wait_for "the default namespace's ServiceAccount" 60 admin_kubectl get serviceaccount default -n default -o name
wait_for "${#FAKE_NODES[@]} Ready nodes" 60 admin_kubectl wait --for=condition=Ready node -l type=kwok --timeout=5s
# MODELDEPLOY_NODE_AGENT=1: also the node agent, whose nodes run pods as real processes
# (testkit/modeldeploy_testkit/nodeagent/README.md).
if [ "${MODELDEPLOY_NODE_AGENT:-0}" = 1 ]; then "${SCRIPTS_DIR}/nodeagent-up.sh"; fi
log "cluster ready in $(elapsed): ${APISERVER_URL}"
log "  export KUBECONFIG=${KUBECONFIG_FILE}"
log "  logs: ${LOGS}/"
