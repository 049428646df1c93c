//go:build !linux

package netcore

// msgTrunc is the recvmsg flag for a datagram larger than the buffer; it
// is not reported on this platform, where the 64 KiB read buffer still
// holds any datagram.
const msgTrunc = 0
