package bus_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
)

// TestSettings checks the settings table: one row per variable and per
// flag, a known type, defaults that are DefaultOptions' own, and values
// of the wrong syntax refused with ErrInvalidOption and no change.
func TestSettings(t *testing.T) {
	envs := map[string]bool{}
	flags := map[string]bool{}
	for _, s := range bus.Settings() {
		if s.Flag == "" || flags[s.Flag] {
			t.Errorf("flag %q empty or given twice", s.Flag)
		}
		flags[s.Flag] = true
		if s.Env != "" {
			if envs[s.Env] {
				t.Errorf("%s given twice", s.Env)
			}
			envs[s.Env] = true
		}
		if s.Usage == "" || s.Set == nil {
			t.Errorf("--%s: no usage or no Set", s.Flag)
		}
		switch s.Type {
		case bus.TypeString, bus.TypeBool, bus.TypeInt, bus.TypeDuration, bus.TypeList:
		default:
			t.Errorf("--%s: type %q", s.Flag, s.Type)
		}
		if s.Default != "" {
			o := bus.DefaultOptions()
			if err := s.Set(&o, s.Default); err != nil {
				t.Errorf("--%s: default %q: %v", s.Flag, s.Default, err)
			}
			if fmt.Sprintf("%+v", o) != fmt.Sprintf("%+v", bus.DefaultOptions()) {
				t.Errorf("--%s: default %q is not DefaultOptions' value", s.Flag, s.Default)
			}
		}
		if s.Type == bus.TypeBool || s.Type == bus.TypeInt || s.Type == bus.TypeDuration {
			o := bus.DefaultOptions()
			if err := s.Set(&o, "x"); !errors.Is(err, bus.ErrInvalidOption) {
				t.Errorf("--%s x: %v, want ErrInvalidOption", s.Flag, err)
			}
			if fmt.Sprintf("%+v", o) != fmt.Sprintf("%+v", bus.DefaultOptions()) {
				t.Errorf("--%s x changed the options", s.Flag)
			}
		}
	}
	for _, env := range []string{
		bus.EnvName, bus.EnvListen, bus.EnvCluster, bus.EnvClusterName, bus.EnvRoutes, bus.EnvDataDir,
		bus.EnvNATSURL, bus.EnvNoJetStream, bus.EnvDiscover, bus.EnvDiscoveryGroup, bus.EnvDiscoveryIface,
		bus.EnvDiscoveryWindow, bus.EnvLeaf, bus.EnvJSDomain, bus.EnvLogReplicas, bus.EnvLogSync, bus.EnvAuthToken, bus.EnvUser,
		bus.EnvPassword, bus.EnvNKeysFile, bus.EnvNKeySeed, bus.EnvCreds, bus.EnvTLSCert, bus.EnvTLSKey,
		bus.EnvTLSCA, bus.EnvTLSVerify, bus.EnvClusterUser, bus.EnvClusterPassword, bus.EnvClusterTLSCert,
		bus.EnvClusterTLSKey, bus.EnvClusterTLSCA,
	} {
		if !envs[env] {
			t.Errorf("%s is not in Settings", env)
		}
	}
}

// TestOptionsValidate checks that every Option refuses a value it
// cannot use with ErrInvalidOption, and leaves the options alone.
func TestOptionsValidate(t *testing.T) {
	for name, opt := range map[string]bus.Option{
		"name":              bus.WithName("a.b"),
		"listen":            bus.WithListen("nonsense"),
		"cluster":           bus.WithCluster("127.0.0.1:70000"),
		"cluster name":      bus.WithClusterName("a b"),
		"routes":            bus.WithRoutes("a:1", "://"),
		"external URL":      bus.WithExternalURL("nats://"),
		"max payload":       bus.WithMaxPayload(-1),
		"ready timeout":     bus.WithReadyTimeout(-time.Second),
		"discovery group":   bus.WithDiscoveryGroup("10.0.0.1:1", ""),
		"discovery window":  bus.WithDiscoveryWindow(-time.Second, 0),
		"discovery beacons": bus.WithDiscoveryWindow(0, -time.Second),
		"leaf":              bus.WithLeaf("http://hub:7422"),
		"js domain":         bus.WithJetStreamDomain("a.b"),
		"log replicas":      bus.WithLogReplicas(-2),
		"log sync":          bus.WithLogSync(-time.Second),
		"user":              bus.WithUser("u", ""),
		"nkeys":             bus.WithNKeys("UNOPE"),
		"tls key":           bus.WithTLS("c.pem", "", "", false),
		"tls verify":        bus.WithTLS("c.pem", "k.pem", "", true),
		"cluster auth":      bus.WithClusterAuth("", "p"),
		"cluster tls":       bus.WithClusterTLS("c.pem", "", ""),
	} {
		o := bus.DefaultOptions()
		if err := opt(&o); !errors.Is(err, bus.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
		if fmt.Sprintf("%+v", o) != fmt.Sprintf("%+v", bus.DefaultOptions()) {
			t.Errorf("%s: a refused option changed the options", name)
		}
	}
	// Zero values keep the defaults and are accepted.
	o := bus.DefaultOptions()
	for _, opt := range []bus.Option{bus.WithName(""), bus.WithListen(""), bus.WithCluster(""), bus.WithClusterName(""),
		bus.WithExternalURL(""), bus.WithReadyTimeout(0), bus.WithDiscoveryGroup("", ""), bus.WithDiscoveryWindow(0, 0),
		bus.WithJetStreamDomain(""), bus.WithUser("", ""), bus.WithTLS("", "", "", false), bus.WithClusterAuth("", ""),
		bus.WithClusterTLS("", "", "")} {
		if err := opt(&o); err != nil {
			t.Errorf("zero value refused: %v", err)
		}
	}
	if _, err := bus.New(bus.WithOptions(o)); err != nil {
		t.Errorf("New with zero values: %v", err)
	}
}
