# Sourced by the test scripts: a virtualenv under target/ holding pinned
# PyPI packages, made on first use only, so later runs need no network.

# ensure_venv DIR REQUIREMENT...
# Creates the virtualenv DIR when it is missing and installs the
# requirements into it, unless DIR/.requirements says they already are.
ensure_venv() {
    local venv=$1
    shift
    local stamp="$venv/.requirements"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$*" ]]; then
        return 0
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$(dirname "$venv")"
        # Debian's python3 without python3-venv has no ensurepip: fall back to
        # a virtualenv without pip and let the outer pip install into it.
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            python3 -m venv --without-pip "$venv"
        fi
    fi
    if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q "$@"
    else
        python3 -m pip --python "$venv/bin/python" install -q "$@"
    fi
    printf '%s' "$*" >"$stamp"
}
