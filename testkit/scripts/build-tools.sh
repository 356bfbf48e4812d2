#!/usr/bin/env bash
# Builds the local control plane's binaries from pinned Go modules and caches them outside the repository.
# `build-tools.sh prometheus` (or MODELDEPLOY_WITH_PROMETHEUS=1) builds Prometheus as well (5-13 minutes cold).
# `build-tools.sh argocd` (or MODELDEPLOY_WITH_ARGOCD=1) builds Argo CD as well (6+ minutes).
# `build-tools.sh gateway` (or MODELDEPLOY_WITH_GATEWAY=1) builds Contour (2-5 minutes with warm Go caches, more cold)
# and fetches the CRDs the gateway installs (Gateway API, Contour's own, Istio's) into the cache; `gateway-crds`
# fetches only the CRDs (a download, no build).
# Only missing binaries are built. Each lands under a temporary name first and is moved into place when complete,
# so an interrupted build never leaves a binary that a later run would trust.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_BIN="${BIN_CACHE}/prometheus-${PROMETHEUS_VERSION}"
with_prometheus="${MODELDEPLOY_WITH_PROMETHEUS:-0}"
ARGOCD_BIN="${BIN_CACHE}/argocd-${ARGOCD_VERSION}"
with_argocd="${MODELDEPLOY_WITH_ARGOCD:-0}"
with_contour="${MODELDEPLOY_WITH_GATEWAY:-0}"
with_gateway_crds="${with_contour}"
for extra in "$@"; do
	case "${extra}" in
		prometheus) with_prometheus=1 ;;
		argocd) with_argocd=1 ;;
		gateway) with_contour=1; with_gateway_crds=1 ;;
		gateway-crds) with_gateway_crds=1 ;;
		*) die "usage: build-tools.sh [prometheus] [argocd] [gateway] [gateway-crds]" ;;
	esac
done

command -v go >/dev/null || die "Go is needed to build the control plane (go 1.26 or newer on PATH)"

export CGO_ENABLED=0
mkdir -p "${BIN_CACHE}" "${MODELDEPLOY_CACHE}/tmp"
# One build at a time per cache: a second caller waits, then finds the binaries in place.
exec 9>"${MODELDEPLOY_CACHE}/build.lock"
if ! flock -n 9; then
	log "another build is running in ${MODELDEPLOY_CACHE}; waiting for it"
	flock 9
fi
STAGING="$(mktemp -d "${MODELDEPLOY_CACHE}/tmp/build.XXXXXX")"
trap 'rm -rf "${STAGING}"' EXIT

# install_binaries DEST_DIR NAME...: move freshly built binaries from STAGING into DEST_DIR, one rename each.
install_binaries() {
	local dest="$1"; shift
	mkdir -p "${dest}"
	for name in "$@"; do
		[ -x "${STAGING}/${name}" ] || die "build produced no ${name}"
		mv -f "${STAGING}/${name}" "${dest}/${name}"
	done
}

# module_dir MODULE@VERSION: where the Go module cache holds that module's files, downloaded first when needed.
module_dir() {
	local dir
	dir="$(cd "${TOOLS_DIR}" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[ -n "${dir}" ] && [ -d "${dir}" ] || die "could not download the Go module $1"
	echo "${dir}"
}

# install_file DEST SOURCE...: the sources, each a YAML stream, joined into DEST (one rename, like the binaries).
install_file() {
	local dest="$1" part="${STAGING}/$(basename "$1")"
	shift
	: >"${part}"
	for source in "$@"; do
		[ -s "${source}" ] || die "${source} is missing or empty"
		printf -- '---\n' >>"${part}"
		cat "${source}" >>"${part}"
	done
	mkdir -p "$(dirname "${dest}")"
	mv -f "${part}" "${dest}"
}

# The CRDs of the gateway, from the modules of exactly the versions in versions.env. Gateway API: the experimental
# channel, because Contour watches TLSRoute, TCPRoute, BackendTLSPolicy and ReferenceGrant v1beta1 and exits when
# one is missing (docs/testing.md). Contour's own: it watches HTTPProxy, TLSCertificateDelegation and
# ExtensionService whatever else it serves. Istio's: the API only (VirtualService and the rest), no data plane.
fetch_gateway_crds() {
	local dir files=() name
	if [ ! -s "${GATEWAY_API_CRDS}" ]; then
		log "fetching the Gateway API ${GATEWAY_API_VERSION} CRDs (experimental channel)"
		dir="$(module_dir "sigs.k8s.io/gateway-api@${GATEWAY_API_VERSION}")/config/crd/experimental"
		# In the order of the channel's kustomization.
		for name in $(sed -n 's/^- \(.*\.yaml\)$/\1/p' "${dir}/kustomization.yaml"); do files+=("${dir}/${name}"); done
		[ ${#files[@]} -gt 0 ] || die "no CRD files listed in ${dir}/kustomization.yaml"
		install_file "${GATEWAY_API_CRDS}" "${files[@]}"
	fi
	if [ ! -s "${CONTOUR_CRDS}" ]; then
		log "fetching Contour ${CONTOUR_VERSION}'s CRDs"
		install_file "${CONTOUR_CRDS}" "$(module_dir "github.com/projectcontour/contour@${CONTOUR_VERSION}")/examples/contour/01-crds.yaml"
	fi
	if [ ! -s "${ISTIO_CRDS}" ]; then
		log "fetching the Istio API ${ISTIO_API_VERSION} CRDs"
		install_file "${ISTIO_CRDS}" "$(module_dir "istio.io/api@${ISTIO_API_VERSION}")/kubernetes/customresourcedefinitions.gen.yaml"
	fi
}

missing() { # missing DIR NAME...: succeeds when any of the binaries is absent
	local dir="$1"; shift
	for name in "$@"; do [ -x "${dir}/${name}" ] || return 0; done
	return 1
}

KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
todo=()
missing "${KUBERNETES_BIN}" "${KUBE_COMMANDS[@]}" && todo+=("kubernetes ${KUBERNETES_VERSION}")
missing "${ETCD_BIN}" etcd && todo+=("etcd ${ETCD_VERSION}")
missing "${KWOK_BIN}" kwok && todo+=("kwok ${KWOK_VERSION}")
missing "${HELM_BIN}" helm && todo+=("helm ${HELM_VERSION}")
if [ "${with_prometheus}" = 1 ] && missing "${PROMETHEUS_BIN}" prometheus; then
	todo+=("prometheus ${PROMETHEUS_VERSION}")
fi
if [ "${with_argocd}" = 1 ] && missing "${ARGOCD_BIN}" argocd; then
	todo+=("argocd ${ARGOCD_VERSION}")
fi
if [ "${with_contour}" = 1 ] && missing "${CONTOUR_BIN}" contour; then
	todo+=("contour ${CONTOUR_VERSION}")
fi
# The CRD files are no build: fetched (a module download each) before anything is built, so that a failed or
# interrupted build still leaves them in place for the tests that need only the APIs.
if [ "${with_gateway_crds}" = 1 ]; then
	fetch_gateway_crds
fi
if [ ${#todo[@]} -eq 0 ]; then
	log "control-plane binaries are cached in ${BIN_CACHE}"
	exit 0
fi

log "building: ${todo[*]}"
log "a cold build (empty Go caches) takes about 20 minutes on 2 cores; later runs reuse ${BIN_CACHE}"
started=$(date +%s)
step() { log "[$(( $(date +%s) - started ))s] $*"; }

FLAGS=(-trimpath)
if missing "${ETCD_BIN}" etcd; then
	step "building etcd ${ETCD_VERSION}"
	(cd "${TOOLS_DIR}/etcd" && go build "${FLAGS[@]}" -ldflags "-s -w" -o "${STAGING}/etcd" go.etcd.io/etcd/server/v3)
	install_binaries "${ETCD_BIN}" etcd
fi

if missing "${KUBERNETES_BIN}" "${KUBE_COMMANDS[@]}"; then
	minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
	stamp=""
	# Without the stamp the server reports v0.0.0, which clients and feature gates misread.
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		stamp+=" -X ${pkg}.gitVersion=${KUBERNETES_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
		stamp+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
	done
	names=()
	for name in "${KUBE_COMMANDS[@]}"; do
		[ -x "${KUBERNETES_BIN}/${name}" ] || names+=("${name}")
	done
	# One `go build` for all of them: while one binary links (mostly one core), the other core compiles or links the
	# next; built one by one, every link left a core idle.
	step "building ${names[*]} ${KUBERNETES_VERSION} (about 12 minutes cold)"
	(cd "${TOOLS_DIR}/kubernetes" && go build "${FLAGS[@]}" -ldflags "-s -w ${stamp}" -o "${STAGING}/" "${names[@]/#/k8s.io/kubernetes/cmd/}")
	install_binaries "${KUBERNETES_BIN}" "${names[@]}"
fi

if missing "${KWOK_BIN}" kwok; then
	step "building kwok ${KWOK_VERSION}"
	GOBIN="${STAGING}" go install "${FLAGS[@]}" -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
	install_binaries "${KWOK_BIN}" kwok
fi

if missing "${HELM_BIN}" helm; then
	step "building helm ${HELM_VERSION}"
	GOBIN="${STAGING}" go install "${FLAGS[@]}" -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
	install_binaries "${HELM_BIN}" helm
fi
if [ "${with_prometheus}" = 1 ] && missing "${PROMETHEUS_BIN}" prometheus; then
	step "building prometheus ${PROMETHEUS_VERSION} (5-7 minutes cold on 2 cores, up to 13 when they are busy)"
	(cd "${TOOLS_DIR}/prometheus" && go build "${FLAGS[@]}" -ldflags "-s -w" -o "${STAGING}/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
	install_binaries "${PROMETHEUS_BIN}" prometheus
fi
if [ "${with_argocd}" = 1 ] && missing "${ARGOCD_BIN}" argocd; then
	# One binary; ARGOCD_BINARY_NAME (or the name it is called by) picks the component.
	step "building argocd ${ARGOCD_VERSION} (6+ minutes, more with cold Go caches)"
	# Without the stamp it reports version 99.99.99.
	stamp="-X github.com/argoproj/argo-cd/v2/common.version=${ARGOCD_VERSION#v} -X github.com/argoproj/argo-cd/v2/common.gitTag=${ARGOCD_VERSION}"
	(cd "${TOOLS_DIR}/argocd" && go build "${FLAGS[@]}" -ldflags "-s -w ${stamp}" -o "${STAGING}/argocd" github.com/argoproj/argo-cd/v2/cmd)
	install_binaries "${ARGOCD_BIN}" argocd
fi
if [ "${with_contour}" = 1 ] && missing "${CONTOUR_BIN}" contour; then
	step "building contour ${CONTOUR_VERSION} (2-5 minutes with warm Go caches, more cold)"
	# Without the stamp `contour version` says "unknown".
	stamp="-X github.com/projectcontour/contour/internal/build.Version=${CONTOUR_VERSION}"
	(cd "${TOOLS_DIR}/contour" && go build "${FLAGS[@]}" -ldflags "-s -w ${stamp}" -o "${STAGING}/contour" github.com/projectcontour/contour/cmd/contour)
	install_binaries "${CONTOUR_BIN}" contour
fi
step "done; binaries in ${BIN_CACHE}"
