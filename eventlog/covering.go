package eventlog

import (
	"slices"
	"strings"
)

// A reader with an identity may create consumers of the log only in the
// filtered form, with one filter subject within its read grants (see
// policy.User.Permissions): the form of a consumer with several filter
// subjects names none, so the server cannot check them against the
// grants. A read from several groups or peers by such a reader therefore
// asks the server for the one subject that covers them,
// peerbus.evt.*.*.<pattern> (which its grants for pattern allow), and
// keeps the events of the groups and peers asked for. The server still
// decides what the reader may read; the filter only drops events of
// other groups and peers that the reader did not ask for.

// readFilter returns the server-side filter subjects of a read of
// pattern from the groups and peers of cfg (subjects, from
// FilterSubjects), and keep, the test of a delivered event's subject
// (nil: every event the server delivers is asked for).
func (l *Log) readFilter(pattern string, subjects []string, cfg readConfig) (server []string, keep func(subject string) bool) {
	if len(subjects) <= 1 || l.p.Options().Identity == nil {
		return subjects, nil
	}
	groups := set(cfg.groups, func(g string) string {
		if g == "" {
			return noGroup
		}
		return g
	})
	peers := set(cfg.peers, func(id string) string { return id })
	return []string{subjEvt + "*.*." + pattern}, func(subject string) bool {
		rest, ok := strings.CutPrefix(subject, subjEvt)
		if !ok {
			return false
		}
		g, rest, _ := strings.Cut(rest, ".")
		id, _, _ := strings.Cut(rest, ".")
		return (groups == nil || groups[g]) && (peers == nil || peers[id])
	}
}

// set returns the set of f of the values of list, nil for an empty one.
func set(list []string, f func(string) string) map[string]bool {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[f(v)] = true
	}
	return m
}

// countSubjects returns the filter subjects whose counts a Count adds
// up: one each for a reader with an identity (see readFilter), distinct
// from one another (FilterSubjects gives disjoint subjects for distinct
// groups and peers); nil when one consumer counts them all.
func (l *Log) countSubjects(subjects []string) []string {
	if len(subjects) <= 1 || l.p.Options().Identity == nil {
		return nil
	}
	out := slices.Clone(subjects)
	slices.Sort(out)
	return slices.Compact(out)
}
