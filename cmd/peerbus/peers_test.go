package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/peer"
)

func TestWrapTags(t *testing.T) {
	for _, tc := range []struct {
		tags  []string
		width int
		want  []string
	}{
		{nil, 10, []string{"-"}},
		{[]string{"info", "ping"}, 48, []string{"info,ping"}},
		{[]string{"aaaa", "bbbb", "cccc"}, 10, []string{"aaaa,bbbb,", "cccc"}},
		{[]string{"a-very-long-tag-name", "b"}, 10, []string{"a-very-long-tag-name,", "b"}},
	} {
		if got := wrapTags(tc.tags, tc.width); !slices.Equal(got, tc.want) {
			t.Errorf("wrapTags(%q, %d) = %q, want %q", tc.tags, tc.width, got, tc.want)
		}
	}
}

// TestPeerTableShowsEveryTag checks that a long tag list is shown whole,
// wrapped, with no count and no ellipsis.
func TestPeerTableShowsEveryTag(t *testing.T) {
	var tags []string
	for _, c := range "abcdefghijklmnop" {
		tags = append(tags, "tag-"+strings.Repeat(string(c), 6))
	}
	var b strings.Builder
	infos := []peer.Info{{ID: "id-1", Name: "one", Tags: tags, Started: time.Now()}, {ID: "id-2", Name: "two", Tags: []string{"info", "ping"}, Started: time.Now()}}
	if err := writePeerTable(&b, infos, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Contains(out, "…") || strings.Contains(out, "16 ") {
		t.Errorf("table shortens or counts the tags:\n%s", out)
	}
	var shown []string
	lines := strings.Split(strings.TrimSpace(out), "\n")
	col := strings.Index(lines[0], "TAGS")
	for _, l := range lines[1:] {
		f := strings.Fields(l[col:])
		if len(f) > 0 {
			for _, tag := range strings.Split(f[0], ",") {
				if tag != "" {
					shown = append(shown, tag)
				}
			}
		}
	}
	if want := append(slices.Clone(tags), "info", "ping"); !slices.Equal(shown, want) {
		t.Errorf("tags shown %q, want %q\n%s", shown, want, out)
	}
	if len(lines) < 4 {
		t.Errorf("a long tag list is not wrapped:\n%s", out)
	}
}
