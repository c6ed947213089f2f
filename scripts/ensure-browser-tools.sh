#!/usr/bin/env bash
# Makes sure what the browser and client tests need is here: Debian's
# chromium (driven by playwright-core; Playwright's own browser download is
# not available), nginx (the reverse proxy of the curl test) and squid (the
# forward proxy of tests/clients/squid-proxy.sh), Node.js 20
# with npm, and the npm packages pinned in tests/browser/package-lock.json.
# Idempotent: installs only what is missing, and `npm ci` runs only when the
# lock file changed since the last install. Python packages live in venvs
# under target/, made by the scripts that use them.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/squid ] || missing+=(squid)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "browser tools: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "browser tools: Node.js 20 or later is needed (found $(node --version))" >&2
    exit 1
fi

cd "$repo_root/tests/browser"
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json .installed-lock 2>/dev/null; then
    echo "browser tools: npm ci in tests/browser"
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json node_modules/../.installed-lock
fi
echo "browser tools: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), nginx, squid, node $(node --version), npm packages ready"
