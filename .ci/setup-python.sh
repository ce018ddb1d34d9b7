# Sourced by .ci/run: Debian's Python pieces the tests need, when missing:
# venv, pip, setuptools and wheel to build the SDK's platform wheel
# (scripts/python-wheels.sh; the Python SDK's tests run from it), and
# FastAPI, uvicorn and httpx for the Python reference agent
# (reference-agents/sales-research-py). Needs root (CI runs as root).
if ! /usr/bin/python3 -c 'import setuptools, wheel, venv, ensurepip, pip, fastapi, uvicorn, httpx' 2>/dev/null; then
  echo "== installing Debian's python3 packages for the Python SDK and reference agent"
  if [ -z "${ARX_APT_UPDATED:-}" ]; then
    apt-get update
    export ARX_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-venv python3-pip python3-setuptools python3-wheel \
    python3-fastapi python3-uvicorn python3-httpx
fi
/usr/bin/python3 -c 'import sys, fastapi, uvicorn, httpx, setuptools, wheel; print("python", sys.version.split()[0], "fastapi", fastapi.__version__, "uvicorn", uvicorn.__version__, "httpx", httpx.__version__)'
