//go:build unix

package main

import "syscall"

// raiseFileLimit lifts the open-file soft limit to the hard limit: open loop
// at high rates holds one connection per in-flight request.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
