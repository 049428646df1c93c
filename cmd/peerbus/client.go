package main

// Shared helpers of the client commands (call, peers, emit, watch): the
// --server flag, the connection to a node with clear errors, the
// client-only peer, and JSON argument handling.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
)

const (
	// envServer is the environment variable holding the default --server.
	envServer = "PEERBUS_SERVER"
	// defaultServer is the node client commands reach when neither
	// --server nor $PEERBUS_SERVER is given.
	defaultServer = "nats://127.0.0.1:4222"
	// connectTimeout bounds the connection attempt of a client command,
	// so that an unreachable node fails fast.
	connectTimeout = 3 * time.Second
	// maxStdinJSON bounds JSON arguments read from stdin.
	maxStdinJSON = 64 << 20
)

// serverDefault returns $PEERBUS_SERVER, else defaultServer.
func serverDefault() string {
	if s := strings.TrimSpace(os.Getenv(envServer)); s != "" {
		return s
	}
	return defaultServer
}

// addServerFlag adds --server (-s) to cmd, stored in dst, and the
// credential flags (stored in cliCreds).
func addServerFlag(cmd *cobra.Command, dst *string) {
	fs := cmd.Flags()
	fs.StringVarP(dst, "server", "s", serverDefault(),
		"URL of the node to talk to ($"+envServer+")")
	c := &cliCreds
	fs.StringVar(&c.token, "token", "", "token the node requires ($"+bus.EnvAuthToken+")")
	fs.StringVar(&c.user, "user", "", "user the node requires, with --password ($"+bus.EnvUser+")")
	fs.StringVar(&c.password, "password", "", "password of --user ($"+bus.EnvPassword+")")
	fs.StringVar(&c.nkey, "nkey", "", "nkey seed (SU...) or a `FILE` holding it ($"+bus.EnvNKeySeed+")")
	fs.StringVar(&c.identity, "identity", "", "nkey seed `FILE` of the client's identity, made by \"peerbus keygen\" ($"+peer.EnvIdentity+")")
	fs.StringVar(&c.creds, "creds", "", "JWT credentials `FILE` ($"+bus.EnvCreds+")")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM `FILE` of the CA that signed the node's certificate ($"+bus.EnvTLSCA+")")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate `FILE`, for nodes that verify clients ($"+envClientTLSCert+")")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM key `FILE` of --tls-cert ($"+envClientTLSKey+")")
}

// Environment variables of the client certificate (the node's own
// PEERBUS_TLS_CERT and PEERBUS_TLS_KEY are its server certificate).
const (
	envClientTLSCert = "PEERBUS_CLIENT_TLS_CERT"
	envClientTLSKey  = "PEERBUS_CLIENT_TLS_KEY"
)

// credFlags are the credentials of the client commands. An empty flag
// falls back to its environment variable when the connection is made, so
// that secrets never show as flag defaults in --help.
type credFlags struct {
	token, user, password, nkey, creds, tlsCA, tlsCert, tlsKey, identity string
}

// loadIdentity returns the identity of --identity or $PEERBUS_IDENTITY,
// or nil when neither is given.
func (c credFlags) loadIdentity(lookup func(string) string) (*identity.Identity, error) {
	path := c.identity
	if path == "" {
		path = strings.TrimSpace(lookup(peer.EnvIdentity))
	}
	if path == "" {
		return nil, nil
	}
	return identity.Load(path)
}

// cliCreds holds the credential flags of the command being run.
var cliCreds credFlags

// options returns the NATS options presenting the credentials.
func (c credFlags) options(lookup func(string) string) ([]nats.Option, error) {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return strings.TrimSpace(lookup(env))
	}
	o := bus.Options{
		Token:     pick(c.token, bus.EnvAuthToken),
		User:      pick(c.user, bus.EnvUser),
		Password:  pick(c.password, bus.EnvPassword),
		NKeySeed:  pick(c.nkey, bus.EnvNKeySeed),
		CredsFile: pick(c.creds, bus.EnvCreds),
		TLSCA:     pick(c.tlsCA, bus.EnvTLSCA),
		TLSCert:   pick(c.tlsCert, envClientTLSCert),
		TLSKey:    pick(c.tlsKey, envClientTLSKey),
	}
	id, err := c.loadIdentity(lookup)
	if err != nil {
		return nil, err
	}
	o.Identity = id
	return o.ConnectOptions()
}

// signalContext returns a context canceled by SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx == nil {
		ctx = context.Background()
	}
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// recordingDialer dials TCP with a timeout and remembers the last dial
// error, so that a failed connection can say why (nats.go only reports
// "no servers available").
type recordingDialer struct {
	d       net.Dialer
	mu      sync.Mutex
	lastErr error
}

// Dial implements nats.CustomDialer.
func (r *recordingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	r.mu.Lock()
	r.lastErr = err
	r.mu.Unlock()
	return c, err
}

func (r *recordingDialer) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// normalizeServer checks a --server value and returns it with a scheme.
// A comma separated list of URLs is accepted, as by NATS clients.
func normalizeServer(server string) (string, error) {
	server = strings.TrimSpace(server)
	if server == "" {
		return "", errors.New("empty --server URL")
	}
	parts := strings.Split(server, ",")
	for i, s := range parts {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("invalid --server URL %q (want nats://host:port)", parts[i])
		}
		parts[i] = s
	}
	return strings.Join(parts, ","), nil
}

// dialServer connects to the node at server. It makes one attempt,
// bounded by connectTimeout, and reports an unreachable node clearly.
// Extra options (reconnect behaviour, handlers) come last.
func dialServer(server string, extra ...nats.Option) (*nats.Conn, error) {
	u, err := normalizeServer(server)
	if err != nil {
		return nil, err
	}
	creds, err := cliCreds.options(os.Getenv)
	if err != nil {
		return nil, err
	}
	rd := &recordingDialer{d: net.Dialer{Timeout: connectTimeout}}
	opts := append(append([]nats.Option{
		nats.Name("peerbus-cli"),
		nats.Timeout(connectTimeout),
		nats.SetCustomDialer(rd),
		nats.NoReconnect(),
	}, creds...), extra...)
	nc, err := nats.Connect(u, opts...)
	if err != nil {
		why := err
		if derr := rd.err(); derr != nil {
			why = derr
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return nil, fmt.Errorf("node at %s refused the credentials: %v\n"+
				"(give --token, --user/--password, --identity, --nkey or --creds, or $%s, $%s/$%s)",
				redactURL(u), err, bus.EnvAuthToken, bus.EnvUser, bus.EnvPassword)
		}
		if strings.Contains(err.Error(), "tls") || strings.Contains(err.Error(), "x509") {
			return nil, fmt.Errorf("TLS with node at %s failed: %v\n(give the node's CA with --tls-ca, and a client certificate with --tls-cert/--tls-key if it verifies clients)",
				redactURL(u), err)
		}
		return nil, fmt.Errorf("cannot reach node at %s: %v\n"+
			"(is a node running there? start one with \"peerbus node\", or choose another with --server or $%s)",
			redactURL(u), why, envServer)
	}
	return nc, nil
}

// redactURL hides passwords in URLs shown to the user.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// clientOptions are the options of the client-only peer of the CLI: it
// is never announced, and takes its group and name from the environment
// (PEERBUS_GROUP, PEERBUS_PEER_NAME) but never a fixed id, which belongs
// to a node's peer.
func clientOptions(extra ...peer.Option) []peer.Option {
	return append([]peer.Option{
		peer.FromEnv(),
		func(o *peer.Options) error { o.ID = ""; return nil },
		peer.AsClient(),
	}, extra...)
}

// client is a connection to a node with a client-only peer on it, and
// the peer's access to the event log.
type client struct {
	nc     *nats.Conn
	p      *peer.Peer
	lg     *eventlog.Log
	server string
}

// openClient connects to server and starts a client-only peer.
func openClient(server string, popts []peer.Option, nopts ...nats.Option) (*client, error) {
	nc, err := dialServer(server, nopts...)
	if err != nil {
		return nil, err
	}
	id, err := cliCreds.loadIdentity(os.Getenv)
	if err != nil {
		nc.Close()
		return nil, err
	}
	p, err := peer.New(nc, clientOptions(append([]peer.Option{peer.WithIdentity(id)}, popts...)...)...)
	if err != nil {
		nc.Close()
		return nil, err
	}
	lg, err := eventlog.New(p)
	if err != nil {
		_ = p.Close()
		nc.Close()
		return nil, err
	}
	return &client{nc: nc, p: p, lg: lg, server: redactURL(nc.ConnectedUrlRedacted())}, nil
}

// Close closes the peer (and so its event log) and the connection.
func (c *client) Close() {
	_ = c.p.Close()
	c.nc.Close()
}

// readJSONArg returns the JSON argument at args[i]: "null" when absent,
// stdin when it is "-". It checks that the text is valid JSON.
func readJSONArg(args []string, i int, stdin io.Reader) (json.RawMessage, error) {
	if i >= len(args) {
		return json.RawMessage("null"), nil
	}
	data := []byte(args[i])
	from := "argument"
	if args[i] == "-" {
		from = "stdin"
		b, err := io.ReadAll(io.LimitReader(stdin, maxStdinJSON+1))
		if err != nil {
			return nil, fmt.Errorf("read JSON from stdin: %w", err)
		}
		if len(b) > maxStdinJSON {
			return nil, fmt.Errorf("JSON on stdin is larger than %d bytes", maxStdinJSON)
		}
		data = b
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, fmt.Errorf("empty JSON %s (give a JSON value, e.g. '{\"a\":1}' or null)", from)
	}
	if err := checkJSON(data); err != nil {
		return nil, fmt.Errorf("invalid JSON %s: %v\n(quote JSON for the shell, e.g. '{\"a\":5,\"b\":10}')", from, err)
	}
	return json.RawMessage(data), nil
}

// checkJSON validates data and says where it is wrong.
func checkJSON(data []byte) error {
	var raw json.RawMessage
	err := json.Unmarshal(data, &raw)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%v at byte %d of %q", se, se.Offset, abbrev(string(data), 80))
	}
	return err
}

// abbrev shortens s to at most n bytes for messages.
func abbrev(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// jsonLine encodes v as one line of JSON (newline included), without
// the HTML escaping of encoding/json, so that "<", ">" and "&" stay
// readable.
func jsonLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
