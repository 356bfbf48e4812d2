#!/usr/bin/env bash
# Creates .venv/ with the operator, the runtime and the dev tools, exactly as uv.lock pins them.
# uv itself is installed from PyPI into the cache (keyed by version), with the Python 3.12 that find-python.sh finds;
# uv is told never to download an interpreter.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

UV_VERSION=0.13.9
python="$("${SCRIPTS_DIR}/find-python.sh")"
uv_home="${MODELDEPLOY_CACHE}/uv-${UV_VERSION}"
if [ ! -x "${uv_home}/bin/uv" ]; then
	log "installing uv ${UV_VERSION} into ${uv_home}"
	rm -rf "${uv_home}.partial"
	"${python}" -m venv "${uv_home}.partial"
	"${uv_home}.partial/bin/pip" install --quiet --disable-pip-version-check "uv==${UV_VERSION}"
	rm -rf "${uv_home}"
	mv "${uv_home}.partial" "${uv_home}"
	# The venv's scripts name their own path in the shebang; uv is a native binary and does not care.
fi
export UV_PYTHON_DOWNLOADS=never
cd "${REPO_ROOT}"
mode="${1:-sync}"
case "${mode}" in
	lock) exec "${uv_home}/bin/uv" lock --python "${python}" ;;
	sync) exec "${uv_home}/bin/uv" sync --frozen --python "${python}" ;;
	*) die "usage: install.sh [sync|lock]" ;;
esac
