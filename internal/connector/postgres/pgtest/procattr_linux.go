package pgtest

import "syscall"

// procAttr runs a PostgreSQL program as cred (nil: this user) and has the
// kernel stop it with SIGQUIT, PostgreSQL's immediate shutdown, if the
// test process dies without stopping it.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
}
