package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/peerbus/peerbus/bus"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the configuration table of README.md (go generate ./cmd/peerbus)")

const (
	readmePath     = "../../README.md"
	tableBegin     = "<!-- configuration table: generated from bus.Settings, peer.Settings and the client commands' flags by \"go generate ./cmd/peerbus\"; do not edit -->\n"
	tableEnd       = "<!-- end of configuration table -->\n"
	tableHeader    = "| env | flag | default | meaning |\n|---|---|---|---|\n"
	clientEnvUsage = `\s*\(\$(PEERBUS_[A-Z_]+)\)$`
)

// TestREADMEConfiguration checks that the configuration table of
// README.md is the one nodeSettings and the client commands' flags give;
// with -update-readme it rewrites the table.
func TestREADMEConfiguration(t *testing.T) {
	data, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	i, j := strings.Index(readme, tableBegin), strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no configuration table between\n%s and\n%s", tableBegin, tableEnd)
	}
	want := configurationTable(t)
	got := readme[i+len(tableBegin) : j]
	if got == want {
		return
	}
	if *updateREADME {
		readme = readme[:i+len(tableBegin)] + want + readme[j:]
		if err := os.WriteFile(readmePath, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
	for k := range max(len(gl), len(wl)) {
		var g, w string
		if k < len(gl) {
			g = gl[k]
		}
		if k < len(wl) {
			w = wl[k]
		}
		if g != w {
			t.Errorf("README.md configuration table, line %d:\n got %s\nwant %s", k+1, g, w)
		}
	}
	t.Error(`the configuration table of README.md is out of date: run "go generate ./cmd/peerbus"`)
}

// configurationTable renders the README's table: a row per node setting
// (the client commands' flag of the same variable in the same row), then
// a row per variable only the client commands read.
func configurationTable(t *testing.T) string {
	client, order := clientFlags(t)
	var b strings.Builder
	b.WriteString("\n" + tableHeader)
	row := func(cells ...string) {
		for _, c := range cells {
			if strings.Contains(c, "|") {
				t.Errorf("table cell %q holds a '|'", c)
			}
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	for _, s := range nodeSettings() {
		env, flags, meaning := "—", "`--"+s.flag+"`", s.usage
		if s.env != "" {
			env = "`" + s.env + "`"
		}
		if cf, ok := client[s.env]; ok {
			if cf.Name == s.flag {
				flags += " (node and clients)"
			} else {
				flags += " (node), `--" + cf.Name + "` (clients)"
			}
			meaning += "; clients: " + clientUsage(cf)
			delete(client, s.env)
		}
		row(env, flags, settingDefault(s), meaning)
	}
	for _, env := range order {
		cf, ok := client[env]
		if !ok {
			continue
		}
		def := "none"
		if cf.DefValue != "" {
			def = "`" + cf.DefValue + "`"
		}
		row("`"+env+"`", "`--"+cf.Name+"` (clients)", def, clientUsage(cf))
	}
	b.WriteString("\n")
	return b.String()
}

// settingDefault is the default column of a node setting.
func settingDefault(s nodeSetting) string {
	switch {
	case s.defDoc != "":
		return s.defDoc
	case s.def != "":
		return "`" + s.def + "`"
	case s.typ == bus.TypeBool:
		return "false"
	}
	return "none"
}

// clientFlags returns the flags the client commands share (addServerFlag)
// by the variable their help names, and the variables in flag order. The
// flags are made afresh without $PEERBUS_SERVER, so that --server shows
// its own default.
func clientFlags(t *testing.T) (map[string]*pflag.Flag, []string) {
	t.Setenv(envServer, "")
	cmd := &cobra.Command{Use: "client"}
	cmd.Flags().SortFlags = false
	var server string
	addServerFlag(cmd, &server)
	cliCreds = credFlags{}
	re := regexp.MustCompile(clientEnvUsage)
	byEnv := map[string]*pflag.Flag{}
	var order []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		m := re.FindStringSubmatch(f.Usage)
		if m == nil {
			t.Errorf("client flag --%s names no variable in its help %q", f.Name, f.Usage)
			return
		}
		if _, dup := byEnv[m[1]]; dup {
			t.Errorf("two client flags read %s", m[1])
		}
		byEnv[m[1]] = f
		order = append(order, m[1])
	})
	return byEnv, order
}

// clientUsage is a client flag's help without the variable.
func clientUsage(f *pflag.Flag) string {
	return regexp.MustCompile(clientEnvUsage).ReplaceAllString(f.Usage, "")
}
