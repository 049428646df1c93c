// Package netcore is peerbus's networking layer below the bus: it finds
// the machine's interfaces and routes, and moves messages over TCP and UDP,
// IPv4 and IPv6, through one API called a pipe.
//
// # Interfaces and routes
//
// Interfaces lists the interfaces with their addresses (link-local ones
// marked). DefaultRoute finds, per family, the interface, source address
// and gateway of the default route, from the kernel routing tables on
// Linux, or else from the address the kernel picks for a UDP socket
// connected to a documentation address (which sends nothing). A Route is a
// plain value (family, interface, local address) that says where to bind:
// LoopbackRoute, AnyRoute, RouteFor and RoutesFor make others. Resolve and
// Route.Resolve turn host names into addresses of one family, bounded by a
// context.
//
// # Pipes
//
// A Pipe is a message-oriented connection:
//
//   - Dial (or DialAddr) opens a client pipe, optionally from a chosen
//     route or local address (WithRoute, WithLocalAddr), with TLS for TCP
//     (WithTLS; certificates are verified unless the configuration says
//     otherwise).
//   - Listen opens a server pipe on a route and port. Accept returns the
//     pipe of the next client: a TCP connection, or for UDP a remote
//     address not seen before.
//
// Every received message is a Message: a UDP datagram (read into a 64 KiB
// buffer, so never truncated), or a TCP frame cut from the stream by the
// pipe's Framing: Raw (chunks as read, the default), LengthPrefixed (4-byte
// big-endian length, bounded size) or Lines. A message is delivered to the
// pipe's handlers (AddHandler) and to every Subscription whose regular
// expression and optional source address (From) match it; a client's
// message reaches its server's handlers and subscriptions too. Each
// subscription has a bounded queue with a chosen Overflow policy, read
// with Recv, which times out with ErrTimeout. A message nobody took is
// counted (Stats.Unmatched) and kept in a small backlog that later
// subscriptions claim, so nothing is silently lost.
//
// Send sends to the peer; SendTo sends to any address from a UDP server
// or to one client of a TCP server. A datagram too large for UDP, or a
// frame larger than the framing allows, fails with *MessageTooLargeError.
//
// Handlers run on the goroutine that read the message, one per TCP
// connection and one per UDP socket. On a server, Recv takes messages from
// that goroutine. A client pipe without handlers lends reading to its Recv
// calls while they keep coming: once its reader goroutine has delivered a
// message to a waiting Recv, the following Recv calls read the socket
// themselves, saving a goroutine hand-off per message in request/response
// traffic, and after a millisecond the reader goroutine takes reading back,
// so a pipe nobody reads still notices its peer closing. WithDirectRecv makes
// a client pipe read only inside Recv.
//
// # Servers under bad input
//
// A TCP client that sends an oversized or truncated frame, fails its TLS
// handshake or stays idle too long (WithIdleTimeout) is dropped and counted
// in Stats.BadInput; the server keeps serving the others. WithMaxConns
// bounds the clients a server holds, so a flood cannot exhaust memory, and
// a length-prefixed frame's memory grows only as its bytes arrive.
//
// # Daemon
//
// A Daemon listens on many ports, both protocols and both families at
// once (ListenAll), hands every message to one handler, and closes
// everything with one Close.
//
// # Closing
//
// Close on a pipe or daemon closes its sockets, closes a server's clients,
// and waits for the goroutines it started; a second Close returns an error
// matching net.ErrClosed. Close may be called from a handler.
package netcore
