#!/usr/bin/env bash
# Validates openapi.yaml against the OpenAPI 3.1 specification with
# openapi-spec-validator (PyPI), and refuses duplicate YAML keys, which YAML
# loaders otherwise accept silently (the later key wins).
#
# The validator lives in a virtualenv under target/py-tools, created and
# filled on first use only; later runs reuse it and need no network.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/python-venv.sh
source "$repo_root/scripts/lib/python-venv.sh"
spec="${1:-$repo_root/openapi.yaml}"
venv="$repo_root/target/py-tools"
# 0.7 is the first series that validates OpenAPI 3.1 documents.
requirement='openapi-spec-validator>=0.7,<0.8'

ensure_venv "$venv" "$requirement"

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
if ! "$venv/bin/openapi-spec-validator" --schema 3.1 "$spec" >"$log" 2>&1; then
    awk 'NR <= 12 { print substr($0, 1, 300) }' "$log" >&2
    echo "check-openapi: $spec is not a valid OpenAPI 3.1 document (full report: $log)" >&2
    exit 1
fi
cat "$log"
