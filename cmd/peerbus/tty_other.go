//go:build !linux

package main

// isTerminal reports whether w is a terminal: never known here, so top
// prints plain lines.
func isTerminal(any) bool { return false }
