# Names shared by argocd-up.sh, argocd-down.sh and the GitOps tests. Source it after lib.sh.

ARGOCD_BIN="${BIN_CACHE}/argocd-${ARGOCD_VERSION}"
ARGOCD_NAMESPACE=argocd
# Work directory of the local Argo CD: the git repository, the components' temporary files, argocd.env.
ARGOCD_DIR="${CLUSTER_DIR}/argocd"
ARGOCD_GIT_REPO="${ARGOCD_DIR}/git/models.git"
ARGOCD_GIT_URL="file://${ARGOCD_GIT_REPO}"
# Written by argocd-up.sh: the ports it chose, for clients (tests, benchmarks) to read.
ARGOCD_ENV="${ARGOCD_DIR}/argocd.env"
# Each runs as a process of its own, its PID in .cluster/pids/<name>.pid (so cluster-down.sh stops it too).
ARGOCD_COMPONENTS=(argocd-application-controller argocd-repo-server argocd-redis)

# argocd_pid NAME: the recorded PID when that process is alive and is still the program we started.
argocd_pid() {
	local name="$1" file pid marker
	file="$(pid_file "${name}")"
	[ -f "${file}" ] || return 1
	pid="$(cat "${file}")"
	[ -n "${pid}" ] && [ -r "/proc/${pid}/cmdline" ] || return 1
	# Redis rewrites its command line to "<program> <address>"; each Argo CD component runs through a symlink named
	# after it (argocd-up.sh).
	case "${name}" in
		argocd-redis) marker="redis-server " ;;
		*) marker="/${name} " ;;
	esac
	tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "${marker}" || return 1
	echo "${pid}"
}
