// Package names holds the names on the bus that more than one package of
// peerbus must agree on: the rules of subject tokens (peer ids, groups,
// tags, event names), and the JetStream streams and key-value buckets
// peerbus manages (the event log, the projection snapshots).
//
// Package eventlog creates those streams; package bus manages their
// replicas on a cluster by these names.
package names

import (
	"errors"
	"fmt"
	"strings"
)

// Names of the JetStream streams and key-value buckets of peerbus.
const (
	// StreamPrefix starts the name of every stream peerbus creates.
	StreamPrefix = "PEERBUS_"
	// BucketStreamPrefix starts the stream name of every key-value
	// bucket peerbus creates (JetStream keeps a bucket B in stream KV_B).
	BucketStreamPrefix = "KV_" + StreamPrefix
	// LogStream is the stream of the event log.
	LogStream = StreamPrefix + "EVENTS"
	// ProjectionBucket is the key-value bucket of projection snapshots.
	ProjectionBucket = StreamPrefix + "PROJECTIONS"
)

// ManagedStream reports whether the stream called name is one of
// peerbus's streams or buckets (it starts with StreamPrefix or
// BucketStreamPrefix).
func ManagedStream(name string) bool {
	return strings.HasPrefix(name, StreamPrefix) || strings.HasPrefix(name, BucketStreamPrefix)
}

// Token checks a single subject token (a group, a peer id): non-empty,
// without '.', '*', '>' or whitespace.
func Token(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(s, ".*> \t\r\n") {
		return errors.New("must not contain '.', '*', '>' or whitespace")
	}
	return nil
}

// MaxTokensLen bounds a tag or an event name.
const MaxTokensLen = 1024

// Tokens checks one or more dot-separated tokens (a tag, an event
// name): non-empty tokens without whitespace, at most MaxTokensLen
// bytes. With wildcards, a token may be '*' and the last one '>'
// (a subscription pattern); otherwise '*' and '>' are refused.
func Tokens(s string, wildcards bool) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxTokensLen {
		return fmt.Errorf("longer than %d bytes", MaxTokensLen)
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		if t == "" {
			return errors.New("empty token")
		}
		if strings.ContainsAny(t, " \t\r\n\x00") {
			return fmt.Errorf("whitespace in token %q", t)
		}
		if wildcards && (t == "*" || (t == ">" && i == len(toks)-1)) {
			continue
		}
		if strings.ContainsAny(t, "*>") {
			return fmt.Errorf("wildcard in token %q", t)
		}
	}
	return nil
}
