package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent asks the kernel to send SIGTERM to the child if this
// process dies without stopping it (killed, or a closed stdout's SIGPIPE),
// so that no server outlives the benchmark on a shared machine.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
