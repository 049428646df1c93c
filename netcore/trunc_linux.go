package netcore

import "syscall"

// msgTrunc is the recvmsg flag for a datagram larger than the buffer.
const msgTrunc = syscall.MSG_TRUNC
