package main

// The settings of "peerbus node": the rows of bus.Settings and
// peer.Settings become the command's flags, and the flags set on the
// command line are applied with the rows' Set over the environment. The
// configuration table of README.md is generated from the same rows
// (readme_test.go), so flags, variables and the table cannot drift apart.

//go:generate go test -run TestREADMEConfiguration -update-readme .

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

// nodeSetting is a row of bus.Settings or peer.Settings.
type nodeSetting struct {
	env, flag, typ, def, defDoc, usage string
	set                                func(bo *bus.Options, po *peer.Options, v string) error
}

// nodeSettings returns the rows of bus.Settings, then those of
// peer.Settings.
func nodeSettings() []nodeSetting {
	var out []nodeSetting
	for _, s := range bus.Settings() {
		set := s.Set
		out = append(out, nodeSetting{env: s.Env, flag: s.Flag, typ: s.Type, def: s.Default, defDoc: s.DefaultDoc, usage: s.Usage,
			set: func(bo *bus.Options, _ *peer.Options, v string) error { return set(bo, v) }})
	}
	for _, s := range peer.Settings() {
		set := s.Set
		out = append(out, nodeSetting{env: s.Env, flag: s.Flag, typ: s.Type, def: s.Default, defDoc: s.DefaultDoc, usage: s.Usage,
			set: func(_ *bus.Options, po *peer.Options, v string) error { return set(po, v) }})
	}
	return out
}

// help is the flag's help: the usage, the default when the flag's own
// default does not show it, and the variable.
func (s nodeSetting) help() string {
	h := s.usage
	if s.defDoc != "" && !s.flagShowsDefault() {
		h += " (default " + strings.ReplaceAll(s.defDoc, "`", "") + ")"
	}
	if s.env != "" {
		h += " [$" + s.env + "]"
	}
	return h
}

// flagShowsDefault reports whether the flag's help shows its default
// value (pflag shows those that are not the zero value).
func (s nodeSetting) flagShowsDefault() bool {
	switch s.typ {
	case bus.TypeBool:
		return s.def == "true"
	case bus.TypeInt:
		return s.def != "" && s.def != "0"
	case bus.TypeDuration:
		return s.def != "" && s.def != "0s"
	}
	return s.def != ""
}

// addSettingFlags defines a flag on fs for each setting, of the
// setting's type and with its default.
func addSettingFlags(fs *pflag.FlagSet, settings []nodeSetting) {
	for _, s := range settings {
		switch s.typ {
		case bus.TypeString:
			fs.String(s.flag, s.def, s.help())
		case bus.TypeBool:
			fs.Bool(s.flag, s.def == "true", s.help())
		case bus.TypeInt:
			n := 0
			if s.def != "" {
				n = mustParse(s, strconv.Atoi)
			}
			fs.Int(s.flag, n, s.help())
		case bus.TypeDuration:
			var d time.Duration
			if s.def != "" {
				d = mustParse(s, time.ParseDuration)
			}
			fs.Duration(s.flag, d, s.help())
		case bus.TypeList:
			fs.StringSlice(s.flag, nil, s.help())
		default:
			panic(fmt.Sprintf("setting --%s: unknown type %q", s.flag, s.typ))
		}
	}
}

// mustParse parses the default of a setting, which the table gets right.
func mustParse[T any](s nodeSetting, parse func(string) (T, error)) T {
	v, err := parse(s.def)
	if err != nil {
		panic(fmt.Sprintf("setting --%s: default %q: %v", s.flag, s.def, err))
	}
	return v
}

// applySettingFlags applies the flags of settings set on fs to bo and
// po, in the order of the settings.
func applySettingFlags(fs *pflag.FlagSet, settings []nodeSetting, bo *bus.Options, po *peer.Options) error {
	for _, s := range settings {
		if !fs.Changed(s.flag) {
			continue
		}
		v := fs.Lookup(s.flag).Value.String()
		if s.typ == bus.TypeList {
			// The flag's items, each of which may be a list again:
			// Set splits them (see bus.SplitList).
			items, err := fs.GetStringSlice(s.flag)
			if err != nil {
				return err
			}
			v = strings.Join(items, ",")
		}
		if err := s.set(bo, po, v); err != nil {
			return fmt.Errorf("--%s: %w", s.flag, err)
		}
	}
	return nil
}
