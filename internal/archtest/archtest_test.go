package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/peerbus/peerbus"

// drawnGraph reads the fenced block after the "Import graph" heading of
// docs/ARCHITECTURE.md: lines "from -> to, to, ..." (a package with no
// imports of the module has "from -> (none)").
func drawnGraph(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	state := 0 // 0 before the heading, 1 before the block, 2 in it
	for sc.Scan() {
		l := sc.Text()
		switch {
		case state == 0 && strings.HasPrefix(l, "#") && strings.Contains(l, "Import graph"):
			state = 1
		case state == 1 && strings.HasPrefix(l, "```"):
			state = 2
		case state == 2 && strings.HasPrefix(l, "```"):
			return g
		case state == 2 && strings.TrimSpace(l) != "":
			from, to, ok := strings.Cut(l, "->")
			if !ok {
				t.Fatalf("%s: import graph line %q has no ->", path, l)
			}
			from = strings.TrimSpace(from)
			list := []string{}
			for _, x := range strings.Split(to, ",") {
				if x = strings.TrimSpace(x); x != "" && x != "(none)" {
					list = append(list, x)
				}
			}
			slices.Sort(list)
			g[from] = list
		}
	}
	t.Fatalf("%s: no fenced block after an \"Import graph\" heading", path)
	return nil
}

// realGraph lists the module's packages (tests excluded) and their
// imports of other packages of the module, from go list.
func realGraph(t *testing.T, root string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	g := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
			Name       string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if name == "internal/archtest" {
			continue
		}
		list := []string{}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/") {
				list = append(list, strings.TrimPrefix(imp, module+"/"))
			}
		}
		slices.Sort(list)
		g[name] = list
	}
	return g
}

func TestArchitectureDrawsTheImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	drawn := drawnGraph(t, filepath.Join(root, "docs", "ARCHITECTURE.md"))
	real := realGraph(t, root)
	var diffs []string
	for pkg, imps := range real {
		d, ok := drawn[pkg]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("package %s (-> %s) is not drawn", pkg, strings.Join(imps, ", ")))
			continue
		}
		for _, i := range imps {
			if !slices.Contains(d, i) {
				diffs = append(diffs, fmt.Sprintf("%s imports %s: no such arrow drawn", pkg, i))
			}
		}
		for _, i := range d {
			if !slices.Contains(imps, i) {
				diffs = append(diffs, fmt.Sprintf("arrow %s -> %s is drawn, but %s does not import %s", pkg, i, pkg, i))
			}
		}
	}
	for pkg := range drawn {
		if _, ok := real[pkg]; !ok {
			diffs = append(diffs, fmt.Sprintf("drawn package %s does not exist", pkg))
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 0 {
		t.Errorf("docs/ARCHITECTURE.md and the code disagree:\n%s", strings.Join(diffs, "\n"))
	}
}
