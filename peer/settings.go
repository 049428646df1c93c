package peer

import (
	"fmt"
	"strconv"

	"github.com/peerbus/peerbus/identity"
)

// Setting is one setting of a peer that the environment or a flag of the
// peerbus node command can give. Settings lists them all: the table
// behind ApplyEnv, the peer's flags of the node command and their rows
// in the configuration table of the README.
type Setting struct {
	// Env is the environment variable ApplyEnv reads.
	Env string
	// Flag is the name of the node command's flag, without dashes.
	Flag string
	// Type is the type of the value, "string", "int" or "bool"
	// (strconv.ParseBool).
	Type string
	// Default is the default value as text; "" when it is the zero value
	// or one worked out by New (see DefaultDoc).
	Default string
	// DefaultDoc describes a default that Default cannot give, in
	// Markdown; "" when Default says it all.
	DefaultDoc string
	// Usage says what the setting does, in one line of Markdown.
	Usage string
	// ApplyEmpty makes ApplyEnv apply the variable when it is set but
	// empty (PEERBUS_GROUP= means no group); other variables are applied
	// only when they are not empty.
	ApplyEmpty bool
	// Set parses value and applies it to o; o is left as it was when the
	// value cannot be used.
	Set func(o *Options, value string) error
}

// Settings returns the settings of a peer, in the order of the node
// command's flags. Each call returns a new slice.
func Settings() []Setting {
	return []Setting{
		{Env: EnvGroup, Flag: "group", Type: "string", Usage: "the peer's group", ApplyEmpty: true,
			Set: func(o *Options, v string) error { o.Group = v; return nil }},
		{Env: EnvHub, Flag: "hub", Type: "bool", Usage: "mark the peer as a hub",
			Set: func(o *Options, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("%w: %s=%q is not a boolean", ErrInvalidOption, EnvHub, v)
				}
				o.Hub = b
				return nil
			}},
		{Env: EnvPeerName, Flag: "peer-name", Type: "string", DefaultDoc: "`<hostname>-<pid>`",
			Usage: "the peer's friendly name",
			Set:   func(o *Options, v string) error { o.Name = v; return nil }},
		{Env: EnvIdentity, Flag: "identity", Type: "string",
			Usage: "nkey seed `FILE` of the peer's identity (made by `peerbus keygen`); the peer id is then the key's",
			Set: func(o *Options, v string) error {
				id, err := identity.Load(v)
				if err != nil {
					return fmt.Errorf("%w: %s: %v", ErrInvalidOption, EnvIdentity, err)
				}
				o.Identity = id
				return nil
			}},
		{Env: EnvTagConcurrency, Flag: "tag-concurrency", Type: "int", Default: strconv.Itoa(DefaultTagConcurrency),
			Usage: "calls of one tag run at once; more are answered busy",
			Set: func(o *Options, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n <= 0 {
					return fmt.Errorf("%w: %s=%q is not a positive integer", ErrInvalidOption, EnvTagConcurrency, v)
				}
				o.TagConcurrency = n
				return nil
			}},
		{Env: EnvPeerID, Flag: "peer-id", Type: "string", DefaultDoc: "a new random uuid",
			Usage: "fixed peer id",
			Set:   func(o *Options, v string) error { o.ID = v; return nil }},
	}
}
