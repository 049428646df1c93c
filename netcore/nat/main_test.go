package nat

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/netlab"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	netlab.RunHelpers(map[string]netlab.Helper{
		"stun-server": helperServer,
		"classify":    helperClassify,
	})
	goleak.VerifyTestMain(m)
}

// helperServer runs a Server until SIGTERM; it prints "READY" once
// listening. Used inside lab namespaces.
func helperServer(args []string) int {
	fs := flag.NewFlagSet("stun-server", flag.ContinueOnError)
	listen := fs.String("listen", "", "primary address ip:port")
	altIP := fs.String("alt-ip", "", "alternate IP")
	altPort := fs.Uint("alt-port", 0, "alternate port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := ServerConfig{AltPort: uint16(*altPort)}
	var err error
	if cfg.Listen, err = netip.ParseAddrPort(*listen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if *altIP != "" {
		if cfg.AltIP, err = netip.ParseAddr(*altIP); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := ListenServer(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("READY", s.Addrs())
	<-ctx.Done()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// helperOutput is what helperClassify prints.
type helperOutput struct {
	Result *Result `json:"result"`
	Error  string  `json:"error,omitempty"`
}

// helperClassify runs Classify and prints a helperOutput as JSON.
func helperClassify(args []string) int {
	fs := flag.NewFlagSet("classify", flag.ContinueOnError)
	servers := fs.String("stun", "", "comma-separated servers")
	timeout := fs.Duration("timeout", 0, "probe timeout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Classify(ctx, Config{Servers: strings.Split(*servers, ","), Timeout: *timeout})
	out := helperOutput{Result: res}
	if err != nil {
		out.Error = err.Error()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
