package nat

import (
	"errors"
	"fmt"
	"net"
)

// Sentinel errors returned (wrapped) by this package. Test for them with
// errors.Is.
var (
	// ErrNoServers means a Config or command named no STUN server. There is
	// deliberately no default server: nothing is contacted unless asked.
	ErrNoServers = errors.New("nat: no STUN server configured")

	// ErrBadServer means a server address could not be parsed or resolved.
	ErrBadServer = errors.New("nat: bad STUN server address")

	// ErrNoResponse means no STUN server answered within the timeout
	// (after retransmissions). The classic type is then Blocked.
	ErrNoResponse = errors.New("nat: no response from STUN server")

	// ErrNoQuorum means too few servers agreed on the mapped address.
	ErrNoQuorum = errors.New("nat: STUN servers do not agree on the mapped address")

	// ErrInvalidOption means a Config or ServerConfig field is invalid
	// (Config.Validate, Classify, ExternalAddress, ListenServer).
	ErrInvalidOption = errors.New("nat: invalid option")

	// ErrBadConfig is ErrInvalidOption.
	//
	// Deprecated: use ErrInvalidOption.
	ErrBadConfig = ErrInvalidOption

	// ErrClosed is returned by a second Server.Close. It wraps
	// net.ErrClosed.
	ErrClosed = fmt.Errorf("nat: closed: %w", net.ErrClosed)
)
