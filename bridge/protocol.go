package bridge

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Subjects and tags of the bridge protocol (docs/PROTOCOL.md, "Bridge").
const (
	// OpenTagPrefix starts the tag every exposing peer serves per service:
	// "bridge.open.<name>" (a peer tagged call, so subjects
	// peerbus.call.<peer>.bridge.open.<name> and
	// peerbus.any.bridge.open.<name>).
	OpenTagPrefix = "bridge.open."
	// SessionSubjectPrefix starts a session's subjects:
	// peerbus.bridge.<dialer>.<exposer>.<session>.ctl (control requests
	// to the exposer), .e (relay frames to the exposer) and .d (relay
	// frames to the dialer), <dialer> and <exposer> being the two
	// parties' peer ids, so that a policy lets only them use the session.
	SessionSubjectPrefix = "peerbus.bridge."
	// protoVersion is the version of the open and control messages: 2
	// since raw TCP paths are TLS, 3 since raw UDP paths are DTLS (the
	// offer carries no session key any more), 4 since session subjects
	// name both parties, 5 since a select names its strategy (the
	// dialer runs the strategies at once).
	protoVersion = 5
)

// OpenTag returns the tag under which a service name is opened.
func OpenTag(name string) string { return OpenTagPrefix + name }

// sessionBase returns the stem of a session's subjects,
// peerbus.bridge.<dialer>.<exposer>.<session>; both ids are subject
// tokens (checked where they are received: offer.Peer, answer.Peer).
func sessionBase(dialer, exposer, session string) string {
	return SessionSubjectPrefix + dialer + "." + exposer + "." + session
}

func ctlSubject(base string) string { return base + ".ctl" }

// ctlReplySubject is the reply subject of a control request: a session
// subject, so that only the exposer may answer it.
func ctlReplySubject(base, token string) string { return base + ".cr." + token }
func toExposer(base string) string              { return base + ".e" }
func toDialer(base string) string               { return base + ".d" }

// offer is the dialer's open request.
type offer struct {
	V       int    `json:"v"`
	Session string `json:"session"`
	Name    string `json:"name"`
	Proto   string `json:"proto"`
	Nonce   []byte `json:"nonce"`
	// Noise is the dialer's first relay handshake message (relaysec.go).
	Noise []byte `json:"noise"`
	// FP is the SHA-256 fingerprint of the dialer's session certificate.
	FP          []byte      `json:"fp"`
	Peer        string      `json:"peer,omitempty"`
	Strategies  []Strategy  `json:"strategies"`
	TCP         []Candidate `json:"tcp,omitempty"`
	UDP         []Candidate `json:"udp,omitempty"`
	NAT         *NATInfo    `json:"nat,omitempty"`
	KeepAliveMS int64       `json:"keepalive_ms"`
	SetupMS     int64       `json:"setup_ms"`
	// Host is the dialer's host proof (see host.go), so that an exposer
	// on the same host uses loopback candidates.
	Host []byte `json:"host,omitempty"`
}

// answer is the exposer's reply to an offer.
type answer struct {
	V     int         `json:"v"`
	Peer  string      `json:"peer"`
	Proto string      `json:"proto"`
	Nonce []byte      `json:"nonce,omitempty"`
	FP    []byte      `json:"fp,omitempty"`    // the exposer's certificate fingerprint
	Noise []byte      `json:"noise,omitempty"` // the exposer's relay handshake reply
	TCP   []Candidate `json:"tcp,omitempty"`
	UDP   []Candidate `json:"udp,omitempty"`
	NAT   *NATInfo    `json:"nat,omitempty"`
	Host  []byte      `json:"host,omitempty"`
	// Code is empty on success, else one of the code* constants, with
	// Error the text.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// Answer codes.
const (
	codeWrongProto  = "wrong_protocol"
	codeUnavailable = "unavailable"
	codeBadRequest  = "bad_request"
	codeClosed      = "closed"
	codeLimit       = "limit"
)

// Control operations (ctlRequest.Op).
const (
	opReverse  = "reverse"
	opPunchUDP = "punch-udp"
	opPunchTCP = "punch-tcp"
	opRelay    = "relay"
	opClose    = "close"
)

// ctlRequest is a control request from the dialer to the exposer.
type ctlRequest struct {
	Op        string `json:"op"`
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
}

// ctlReply answers a control request.
type ctlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// ValidateName checks a service name: one or more dot-separated tokens
// of letters, digits, '-' and '_', at most 128 bytes.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > 128 || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: service name %q (want letters, digits, '-', '_' and '.', at most 128 bytes)", ErrBadTarget, name)
	}
	return nil
}

// ParseTarget splits a target "tcp://host:port" or "udp://host:port"
// into protocol and address.
func ParseTarget(target string) (proto, addr string, err error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "tcp" && u.Scheme != "udp") || u.Host == "" || u.Path != "" || u.User != nil {
		return "", "", fmt.Errorf("%w: %q (want tcp://host:port or udp://host:port)", ErrBadTarget, target)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" || strings.TrimSpace(host) == "" {
		return "", "", fmt.Errorf("%w: %q needs a host and a port", ErrBadTarget, target)
	}
	return u.Scheme, u.Host, nil
}
