#!/usr/bin/env bash
# Prints the path of a working Python 3.12 interpreter, or explains what to install.
# Order: MODELDEPLOY_PYTHON, python3.12 on PATH, pyenv's installed 3.12 versions, common install locations.
set -euo pipefail

works() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }

candidates=()
[ -n "${MODELDEPLOY_PYTHON:-}" ] && candidates+=("${MODELDEPLOY_PYTHON}")
command -v python3.12 >/dev/null 2>&1 && candidates+=("$(command -v python3.12)")
pyenv_root="${PYENV_ROOT:-}"
[ -z "${pyenv_root}" ] && command -v pyenv >/dev/null 2>&1 && pyenv_root="$(pyenv root 2>/dev/null || true)"
[ -z "${pyenv_root}" ] && pyenv_root="${HOME}/.pyenv"
# Newest 3.12 patch release first.
for dir in $(ls -d "${pyenv_root}"/versions/3.12.* 2>/dev/null | sort -t. -k3 -n -r); do
	candidates+=("${dir}/bin/python3.12")
done
candidates+=(/usr/local/bin/python3.12 /usr/bin/python3.12 /opt/homebrew/bin/python3.12)

for candidate in "${candidates[@]}"; do
	if works "${candidate}"; then
		echo "${candidate}"
		exit 0
	fi
done
cat >&2 <<'MSG'
error: modeldeploy needs Python 3.12 and none was found.
  Looked at: $MODELDEPLOY_PYTHON, python3.12 on PATH, pyenv's versions/3.12.*, /usr/local/bin, /usr/bin.
  Install it, e.g. `apt-get install python3.12`, `brew install python@3.12` or `pyenv install 3.12`,
  or point MODELDEPLOY_PYTHON at an interpreter.
MSG
exit 1
