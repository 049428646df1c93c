//go:build !unix

package main

import "os/exec"

// setProcessGroup keeps the default cancellation (kill the shell only)
// where process groups are not available.
func setProcessGroup(*exec.Cmd) {}
