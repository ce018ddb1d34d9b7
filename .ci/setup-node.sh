# Sourced by .ci/run (and by hand: `source .ci/setup-node.sh`): installs the
# MCP project's reference server, @modelcontextprotocol/server-everything,
# from the npm registry into a cache directory (once per version), for the
# tests of arx mcp, and exports
#   ARX_TEST_MCP_EVERYTHING   its executable (a node script; node on PATH)
# Node.js and npm come from the machine (Debian's packages when missing).

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_mcp_version=2026.8.31
arx_mcp_prefix="$ARX_CI_CACHE/mcp"
arx_mcp_pkg="$arx_mcp_prefix/node_modules/@modelcontextprotocol/server-everything"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing Node.js and npm for the MCP server the arx mcp tests run"
  if [ -z "${ARX_APT_UPDATED:-}" ]; then
    apt-get update
    export ARX_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

arx_mcp_installed=""
if [ -f "$arx_mcp_pkg/package.json" ]; then
  arx_mcp_installed=$(node -p 'require(process.argv[1]).version' "$arx_mcp_pkg/package.json" 2>/dev/null || true)
fi
if [ "$arx_mcp_installed" != "$arx_mcp_version" ]; then
  echo "== installing @modelcontextprotocol/server-everything@$arx_mcp_version into $arx_mcp_prefix (once)"
  mkdir -p "$arx_mcp_prefix"
  npm install --prefix "$arx_mcp_prefix" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$arx_mcp_version" || { return 1 2>/dev/null || exit 1; }
fi

export ARX_TEST_MCP_EVERYTHING="$arx_mcp_prefix/node_modules/.bin/mcp-server-everything"
if [ ! -x "$ARX_TEST_MCP_EVERYTHING" ]; then
  echo "setup-node: $ARX_TEST_MCP_EVERYTHING is missing after npm install" >&2
  return 1 2>/dev/null || exit 1
fi
echo "== MCP server: @modelcontextprotocol/server-everything $arx_mcp_version (node $(node --version)) at $ARX_TEST_MCP_EVERYTHING"
