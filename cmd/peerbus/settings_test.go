package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/bus"
)

// TestNodeFlagsFromSettings checks that every setting is a flag of the
// node command, of its type and naming its variable, and that every
// flag naming a variable is a setting (or an event log flag).
func TestNodeFlagsFromSettings(t *testing.T) {
	cmd, _ := newNodeCmd()
	fs := cmd.Flags()
	types := map[string]string{bus.TypeString: "string", bus.TypeBool: "bool", bus.TypeInt: "int",
		bus.TypeDuration: "duration", bus.TypeList: "stringSlice"}
	settings := map[string]bool{}
	for _, s := range nodeSettings() {
		settings[s.flag] = true
		f := fs.Lookup(s.flag)
		if f == nil {
			t.Errorf("no flag --%s", s.flag)
			continue
		}
		if f.Value.Type() != types[s.typ] {
			t.Errorf("--%s is a %s flag, want %s", s.flag, f.Value.Type(), types[s.typ])
		}
		if s.env != "" && !strings.HasSuffix(f.Usage, "[$"+s.env+"]") {
			t.Errorf("--%s: help %q does not name %s", s.flag, f.Usage, s.env)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.Contains(f.Usage, "[$PEERBUS_") && !settings[f.Name] && !strings.HasPrefix(f.Name, "log-") {
			t.Errorf("--%s names a variable but is not a setting", f.Name)
		}
	})
}
