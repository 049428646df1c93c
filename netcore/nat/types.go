package nat

import (
	"net/netip"
	"time"
)

// Behavior is an RFC 5780 mapping or filtering behaviour.
type Behavior string

// The RFC 5780 behaviours, for both mapping (section 4.3) and filtering
// (section 4.4).
const (
	// BehaviorUnknown means the test could not be run or was inconclusive,
	// for example because the server does not support RFC 5780.
	BehaviorUnknown Behavior = "unknown"
	// EndpointIndependent: the NAT reuses one mapping for every remote
	// endpoint (mapping), or lets any remote endpoint send to an existing
	// mapping (filtering). A host without NAT has endpoint-independent
	// mapping by definition.
	EndpointIndependent Behavior = "endpoint-independent"
	// AddressDependent: one mapping per remote IP address (mapping), or
	// only remote hosts the client has sent to may reply (filtering).
	AddressDependent Behavior = "address-dependent"
	// AddressAndPortDependent: one mapping per remote IP address and port
	// (mapping), or only the exact remote address and port the client has
	// sent to may reply (filtering).
	AddressAndPortDependent Behavior = "address-and-port-dependent"
)

// Classic is the RFC 3489 name of a NAT type, derived from the RFC 5780
// behaviours by ClassicName.
type Classic string

// The RFC 3489 NAT types.
const (
	// ClassicUnknown means the behaviours were not all determined.
	ClassicUnknown Classic = "unknown"
	// OpenInternet: no NAT and no filtering.
	OpenInternet Classic = "open-internet"
	// FullCone: endpoint-independent mapping and filtering.
	FullCone Classic = "full-cone"
	// RestrictedCone: endpoint-independent mapping, address-dependent
	// filtering.
	RestrictedCone Classic = "restricted-cone"
	// PortRestrictedCone: endpoint-independent mapping and
	// address-and-port-dependent filtering.
	PortRestrictedCone Classic = "port-restricted-cone"
	// Symmetric: mapping depends on the remote address (or address and
	// port).
	Symmetric Classic = "symmetric"
	// SymmetricUDPFirewall: no NAT, but unsolicited traffic is filtered.
	SymmetricUDPFirewall Classic = "symmetric-udp-firewall"
	// Blocked: no STUN server could be reached over UDP.
	Blocked Classic = "blocked"
)

// ClassicName derives the RFC 3489 type from the RFC 5780 behaviours.
// natted reports whether the mapped address differs from the local one.
func ClassicName(natted bool, mapping, filtering Behavior) Classic {
	if !natted {
		switch filtering {
		case EndpointIndependent:
			return OpenInternet
		case AddressDependent, AddressAndPortDependent:
			return SymmetricUDPFirewall
		}
		return ClassicUnknown
	}
	switch mapping {
	case AddressDependent, AddressAndPortDependent:
		return Symmetric
	case EndpointIndependent:
		switch filtering {
		case EndpointIndependent:
			return FullCone
		case AddressDependent:
			return RestrictedCone
		case AddressAndPortDependent:
			return PortRestrictedCone
		}
	}
	return ClassicUnknown
}

// PortAllocation is how a NAT picks external ports for new mappings, as
// seen across several fresh local sockets. Hole punching uses it to
// predict the port of the next mapping.
type PortAllocation string

// The port allocation behaviours.
const (
	// PortUnknown means too few samples were collected.
	PortUnknown PortAllocation = "unknown"
	// PortPreserving: the external port equals the local port.
	PortPreserving PortAllocation = "preserving"
	// PortSequential: each new mapping's port is the previous one plus a
	// small constant delta (Result.PortDelta).
	PortSequential PortAllocation = "sequential"
	// PortRandom: no usable pattern.
	PortRandom PortAllocation = "random"
)

// Test is the record of one STUN transaction made during detection.
type Test struct {
	// Name is the test: "binding" (test I against each server),
	// "mapping-2", "mapping-3", "filtering-1", "filtering-2",
	// "filtering-3" (RFC 5780 section 4) or "port-sample".
	Name string `json:"name"`
	// Server is the server as configured (host:port).
	Server string `json:"server"`
	// Local is the local socket address the request was sent from.
	Local netip.AddrPort `json:"local"`
	// Destination is where the request was sent.
	Destination netip.AddrPort `json:"destination"`
	// Change is the CHANGE-REQUEST asked for: "", "port" or "ip+port".
	Change string `json:"change,omitempty"`
	// Answered reports whether a response arrived before the timeout.
	Answered bool `json:"answered"`
	// Mapped is the XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) in the response.
	Mapped netip.AddrPort `json:"mapped"`
	// Source is the address the response came from.
	Source netip.AddrPort `json:"source"`
	// Other is the OTHER-ADDRESS in the response, if any.
	Other netip.AddrPort `json:"other"`
	// Attempts is how many times the request was sent.
	Attempts int `json:"attempts"`
	// RTT is the time from the first send to the response.
	RTT time.Duration `json:"-"`
	// RTTMillis is RTT in milliseconds, for JSON.
	RTTMillis float64 `json:"rtt_ms"`
	// Error describes why the test failed, if it did.
	Error string `json:"error,omitempty"`
}

// PortSample is one observed mapping: a local port and the external port
// the NAT gave it. Samples are listed in the order the mappings were made.
type PortSample struct {
	Local  uint16 `json:"local"`
	Mapped uint16 `json:"mapped"`
}

// Result is the outcome of Classify.
type Result struct {
	// MappedAddress is the external (server-reflexive) address of the
	// main probe socket, as agreed by the quorum (see Config.Quorum).
	MappedAddress netip.AddrPort `json:"mapped_address"`
	// LocalAddress is the main probe socket's local address.
	LocalAddress netip.AddrPort `json:"local_address"`
	// NAT reports whether a NAT was seen (mapped differs from local).
	NAT bool `json:"nat"`
	// Mapping is the RFC 5780 mapping behaviour.
	Mapping Behavior `json:"mapping"`
	// Filtering is the RFC 5780 filtering behaviour.
	Filtering Behavior `json:"filtering"`
	// Classic is the RFC 3489 name derived from NAT, Mapping and Filtering.
	Classic Classic `json:"classic"`
	// PortAllocation is the port allocation behaviour.
	PortAllocation PortAllocation `json:"port_allocation"`
	// PortDelta is the delta between consecutive mappings when
	// PortAllocation is sequential.
	PortDelta int `json:"port_delta,omitempty"`
	// PortSamples are the mappings PortAllocation was derived from.
	PortSamples []PortSample `json:"port_samples,omitempty"`
	// Servers is how many servers were asked; Answered how many answered;
	// Agreeing how many agreed on MappedAddress's IP; Quorum how many had
	// to.
	Servers  int `json:"servers"`
	Answered int `json:"answered"`
	Agreeing int `json:"agreeing"`
	Quorum   int `json:"quorum"`
	// Tests are the individual transactions, in the order they finished.
	Tests []Test `json:"tests"`
	// Duration is how long Classify took.
	Duration time.Duration `json:"-"`
	// DurationMillis is Duration in milliseconds, for JSON.
	DurationMillis float64 `json:"duration_ms"`
}

// External is the outcome of ExternalAddress.
type External struct {
	// Address is the mapped address: the first answer, in server order,
	// among the agreeing servers.
	Address netip.AddrPort `json:"address"`
	// Servers, Answered, Agreeing and Quorum are as in Result.
	Servers  int `json:"servers"`
	Answered int `json:"answered"`
	Agreeing int `json:"agreeing"`
	Quorum   int `json:"quorum"`
	// Tests are the binding transactions made.
	Tests []Test `json:"tests"`
	// Duration is how long ExternalAddress took.
	Duration time.Duration `json:"-"`
	// DurationMillis is Duration in milliseconds, for JSON.
	DurationMillis float64 `json:"duration_ms"`
}

func millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
