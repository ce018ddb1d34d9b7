// Package deploy holds what installs ARX, and the tests that check it: the
// Helm chart (helm/arx), the systemd unit (systemd/arx.service). The image is
// built by cmd/arx-image (internal/ociimage).
package deploy
