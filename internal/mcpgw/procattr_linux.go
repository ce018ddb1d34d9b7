package mcpgw

import (
	"os/exec"
	"syscall"
)

// dieWithParent asks the kernel to stop a subprocess upstream when arx mcp
// dies without stopping it (killed), so that no MCP server, with its
// credentials, outlives the gateway.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
