#!/usr/bin/env bash
# Set up the appliance.
#
#   installer/install.sh --dev     a development checkout: .venv in the repository, the
#                                  package installed editable with its test tools. Needs no
#                                  root. Installs from wheelhouse/ with hash checking when it
#                                  holds the wheels, else from the configured package index.
#
# Safe to run again: an existing .venv is reused and brought up to date.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
lock="$here/requirements.lock"
wheelhouse="$root/wheelhouse"

usage() {
    echo "usage: installer/install.sh --dev" >&2
    exit 2
}

die() {
    echo "install: $*" >&2
    exit 1
}

python_bin() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python3.12; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    die "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"
}

install_dev() {
    local py venv
    py="$(python_bin)"
    venv="$root/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "install: creating $venv with $("$py" --version)"
        "$py" -m venv "$venv" || die "could not create $venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    if compgen -G "$wheelhouse/*.whl" >/dev/null; then
        echo "install: installing the locked dependencies from wheelhouse/ (hash-checked, no network)"
        PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --no-index --find-links "$wheelhouse" \
            --require-hashes --only-binary :all: -r "$lock"
        PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --no-index --find-links "$wheelhouse" \
            --no-build-isolation --no-deps -e "$root"
        if compgen -G "$wheelhouse/pytest-*.whl" >/dev/null; then
            PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --no-index --find-links "$wheelhouse" \
                -e "$root[test]"
        fi
    else
        echo "install: installing from the package index (wheelhouse/ holds no wheels)"
        "${pip[@]}" install --quiet -e "$root[test]"
    fi
    "$venv/bin/appliance" --version >/dev/null || die "the installed 'appliance' command does not run"
    echo "install: done; the CLI is $venv/bin/appliance"
}

case "${1:-}" in
    --dev) install_dev ;;
    -h|--help) sed -n '2,10p' "$0" ;;
    *) usage ;;
esac
