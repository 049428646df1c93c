package bus

import (
	"fmt"
	"strings"
	"time"
)

// routeWarnAfter is how long a node with routes to other nodes may be
// without any route connection before it warns that it is alone (a
// variable for tests).
var routeWarnAfter = 5 * time.Second

// noteRouteError keeps the server's last log line about a route error,
// for the warning of watchRoutes.
func (n *Node) noteRouteError(format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	l := strings.ToLower(msg)
	if !strings.Contains(l, "route") && !strings.Contains(l, "authentication error") {
		return
	}
	n.fatalMu.Lock()
	n.routeErr = msg
	n.fatalMu.Unlock()
}

func (n *Node) lastRouteError() string {
	n.fatalMu.Lock()
	defer n.fatalMu.Unlock()
	return n.routeErr
}

// watchRoutes warns once when a node whose routes name other nodes has
// no route connection after warnAfter (wrong cluster credentials, the
// other nodes down or unreachable), and says so again when a route
// connects.
func (n *Node) watchRoutes(warnAfter time.Duration) {
	defer n.bg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(warnAfter)
	warned := false
	for {
		select {
		case <-n.bgStop:
			return
		case <-t.C:
		}
		if r := n.srv.NumRoutes(); r > 0 {
			if warned {
				n.log.Info("routes connected: the node is no longer alone", "routes", r)
			}
			return
		}
		if !warned && time.Now().After(deadline) {
			warned = true
			last := n.lastRouteError()
			if last == "" {
				last = "none logged: are the other nodes running and reachable?"
			}
			n.log.Warn(fmt.Sprintf("no route to another node has connected after %v: the node is alone "+
				"(check that the other nodes run, the route addresses and the cluster credentials)", warnAfter),
				"last_route_error", last)
		}
	}
}
