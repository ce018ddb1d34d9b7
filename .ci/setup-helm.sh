# Sourced by .ci/run (and by hand: `source .ci/setup-helm.sh`): helm, built
# from the Go module proxy once (cached), for the chart's tests (deploy/):
# helm lint --strict and helm template with each values file in
# deploy/helm/arx/ci. Also systemd-analyze (Debian's systemd package) for the
# unit's tests. Exports ARX_TEST_HELM.

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_helm_version=v4.3.2
arx_helm_dir="$ARX_CI_CACHE/helm-$arx_helm_version"
source "$(dirname "${BASH_SOURCE[0]}")/go-install.sh"
arx_go_install "$arx_helm_dir" helm "helm.sh/helm/v4/cmd/helm@$arx_helm_version" || { return 1 2>/dev/null || exit 1; }
export ARX_TEST_HELM="$arx_helm_dir/helm"
echo "== $("$ARX_TEST_HELM" version --short)"
if ! command -v systemd-analyze >/dev/null; then
  echo "== installing systemd (systemd-analyze checks deploy/systemd/arx.service)"
  if [ -z "${ARX_APT_UPDATED:-}" ]; then
    apt-get update
    export ARX_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y systemd
fi
