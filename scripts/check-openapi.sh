#!/usr/bin/env bash
# Validates openapi.yaml against the OpenAPI 3.1 specification with
# openapi-spec-validator (PyPI), and refuses duplicate YAML keys, which YAML
# loaders otherwise accept silently (the later key wins).
#
# The validator lives in a virtualenv under target/py-tools, created and
# filled on first use only; later runs reuse it and need no network.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
spec="${1:-$repo_root/openapi.yaml}"
venv="$repo_root/target/py-tools"
validator="$venv/bin/openapi-spec-validator"
# 0.7 is the first series that validates OpenAPI 3.1 documents.
requirement='openapi-spec-validator>=0.7,<0.8'

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

if [[ ! -x "$validator" ]]; then
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$repo_root/target"
        # Debian's python3 without python3-venv has no ensurepip: fall back to a
        # virtualenv without pip and let the outer pip install into it.
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            python3 -m venv --without-pip "$venv"
        fi
    fi
    if "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        "$venv/bin/python" -m pip install -q "$requirement"
    else
        python3 -m pip --python "$venv/bin/python" install -q "$requirement"
    fi
fi

[[ -f "$spec" ]] || { echo "check-openapi: $spec not found" >&2; exit 1; }

# PyYAML comes with openapi-spec-validator.
"$venv/bin/python" - "$spec" <<'PY'
import sys
import yaml

class StrictLoader(yaml.SafeLoader):
    pass

def construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)

StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        yaml.load(f, Loader=StrictLoader)
except yaml.YAMLError as e:
    sys.exit(f"check-openapi: {sys.argv[1]}: {e}")
PY

# On failure the validator prints whole schemas; keep the full report in a
# log and show only its first lines, shortened.
log="$repo_root/target/check-openapi.log"
if ! "$validator" --schema 3.1 "$spec" >"$log" 2>&1; then
    awk 'NR <= 12 { print substr($0, 1, 300) }' "$log" >&2
    echo "check-openapi: $spec is not a valid OpenAPI 3.1 document (full report: $log)" >&2
    exit 1
fi
cat "$log"
