# Sourced by .ci/run (and by hand: `source .ci/setup-oidc.sh`): a real
# OpenID Connect provider for the single sign-on tests (internal/console),
# built from the Go module proxy once (cached): the example provider of
# github.com/zitadel/oidc (an OpenID Certified library), users from a file.
# dex, the provider the issue names, is served by the module proxy here only
# at v2.13.0 (2018), which no longer builds. Exports ARX_TEST_OIDC_PROVIDER.

ARX_CI_CACHE="${ARX_CI_CACHE:-$HOME/.cache/arx-ci}"
arx_oidc_version=v3.52.0
arx_oidc_dir="$ARX_CI_CACHE/oidc-provider-$arx_oidc_version"
source "$(dirname "${BASH_SOURCE[0]}")/go-install.sh"
arx_go_install "$arx_oidc_dir" server "github.com/zitadel/oidc/v3/example/server@$arx_oidc_version" || { return 1 2>/dev/null || exit 1; }
export ARX_TEST_OIDC_PROVIDER="$arx_oidc_dir/server"
echo "== OpenID provider: zitadel/oidc example server $arx_oidc_version"
