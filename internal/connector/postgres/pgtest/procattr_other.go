//go:build unix && !linux

package pgtest

import "syscall"

// procAttr runs a PostgreSQL program as cred (nil: this user). There is no
// parent-death signal here: a test process killed outright leaves its
// server running until the next reboot or a kill by hand.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
