package natsconn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/joingate/joingate/pkg/testenv"
)

var quiet = slog.New(slog.DiscardHandler)

func TestEmbeddedInProcess(t *testing.T) {
	ns, err := Embedded("", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	a, err := Connect("", ns, "a", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Connect("", ns, "b", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Subscribe("echo", func(m *nats.Msg) { m.Respond(m.Data) })
	b.Flush()
	m, err := a.Request("echo", []byte("hi"), 5*time.Second)
	if err != nil || string(m.Data) != "hi" {
		t.Fatalf("request through the embedded server: %v %v", m, err)
	}
	if err := Drain(a, 5*time.Second); err != nil || !a.IsClosed() {
		t.Fatalf("Drain: %v, closed %v", err, a.IsClosed())
	}
}

func TestEmbeddedListens(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ns, err := Embedded(addr, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := Connect("nats://"+addr, nil, "outside", Security{}, quiet)
	if err != nil {
		t.Fatalf("a worker in another process could not join: %v", err)
	}
	nc.Close()
}

// Publishing while disconnected fails at once rather than buffering.
func TestNoBufferingWhileDisconnected(t *testing.T) {
	ns := testenv.NATS(t)
	nc, err := Connect(ns.ClientURL(), nil, "t", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ns.Shutdown()
	if !testenv.Eventually(5*time.Second, func() bool { return !nc.IsConnected() }) {
		t.Fatal("still connected after the server stopped")
	}
	if err := nc.Publish("x", []byte("y")); err == nil {
		t.Fatal("publish while disconnected was buffered")
	}
	if err := Drain(nc, time.Second); !nc.IsClosed() {
		t.Fatalf("Drain while reconnecting left the connection open: %v", err)
	}
}

// A server that refuses the credentials is an error at once, which does
// not show the password.
func TestConnectRefused(t *testing.T) {
	ns := testenv.NATSWith(t, server.Options{Username: "u", Password: "right"})
	_, err := Connect(fmt.Sprintf("nats://u:hunter2@%s", ns.Addr()), nil, "t", Security{}, quiet)
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	if !strings.Contains(err.Error(), "Authorization Violation") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %q: want the server's refusal, without the password", err)
	}
}

// With no server there yet, Connect returns a connection that connects
// once one comes, and says so in the log, without the password.
func TestConnectBeforeServer(t *testing.T) {
	var logs testenv.Logs
	log := slog.New(slog.NewTextHandler(&logs, nil))
	port := testenv.FreePort(t)
	nc, err := Connect(fmt.Sprintf("nats://u:hunter2@127.0.0.1:%d", port), nil, "t", Security{}, log)
	if err != nil {
		t.Fatalf("Connect with no server yet: %v", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected with no server")
	}
	if err := nc.Publish("x", []byte("y")); err == nil {
		t.Fatal("publish before the first connect was buffered")
	}
	testenv.NATSWith(t, server.Options{Port: port, Username: "u", Password: "hunter2"})
	if !testenv.Eventually(10*time.Second, nc.IsConnected) {
		t.Fatal("not connected after the server came")
	}
	if !testenv.Eventually(5*time.Second, func() bool { return strings.Contains(logs.String(), "nats connected") }) {
		t.Fatalf("no log line for the connect:\n%s", logs.String())
	}
	if out := logs.String(); !strings.Contains(out, "nats unreachable") || strings.Contains(out, "hunter2") {
		t.Fatalf("log:\n%s\nwant the unreachable server said, without the password", out)
	}
}

func TestDeadlineHeader(t *testing.T) {
	m := nats.NewMsg("s")
	if _, ok := Deadline(m); ok {
		t.Fatal("deadline read from a message without one")
	}
	want := time.Unix(1_700_000_000, 123456789)
	SetDeadline(m, want)
	if got, ok := Deadline(m); !ok || !got.Equal(want) {
		t.Fatalf("Deadline = %v %v, want %v", got, ok, want)
	}
	m.Header.Set(HeaderDeadline, "soon")
	if _, ok := Deadline(m); ok {
		t.Fatal("unreadable deadline accepted")
	}
}

// A framed request gives back what was framed, and a frame that promises
// more than it holds is refused.
func TestFramed(t *testing.T) {
	want := time.Unix(1_700_000_000, 123456789)
	body := []byte(`{"callbackCommand":"callbackBeforeJoinGroupCommand"}`)
	for _, opID := range [][]byte{nil, []byte("op-1"), bytes.Repeat([]byte("x"), 300)} {
		data := AppendFramed([]byte("kept"), want, opID, body)[len("kept"):]
		dl, id, b, err := ParseFramed(data)
		if err != nil || !dl.Equal(want) || !bytes.Equal(id, opID) || !bytes.Equal(b, body) {
			t.Fatalf("opID %d bytes: %v %q %q %v", len(opID), dl, id, b, err)
		}
		for n := range len(data) - len(body) { // cut inside the frame
			if _, _, _, err := ParseFramed(data[:n]); err == nil {
				t.Fatalf("a frame cut to %d of its %d bytes accepted", n, len(data)-len(body))
			}
		}
	}
	if _, _, _, err := ParseFramed(AppendFramed(nil, time.Unix(0, 0), nil, body)); err == nil {
		t.Fatal("a deadline of 0 accepted")
	}
}

// ParseFramed never panics, and what it accepts is the data's own: its
// first 8 bytes the deadline, the operation ID and the body its end.
func FuzzParseFramed(f *testing.F) {
	f.Add(AppendFramed(nil, time.Unix(1_700_000_000, 0), []byte("op"), []byte("{}")))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		dl, id, body, err := ParseFramed(data)
		if err != nil {
			return
		}
		again := AppendFramed(nil, dl, id, body)
		if !bytes.Equal(again[:8], data[:8]) || !bytes.HasSuffix(data, again[len(again)-len(id)-len(body):]) {
			t.Fatalf("%x parsed to %v %q %q", data, dl, id, body)
		}
	})
}

// A tagged request gives back its tag and what was framed; its reply
// gives back the tag and the answer; either cut too short is refused.
func TestTagged(t *testing.T) {
	want := time.Unix(1_700_000_000, 123456789)
	body := []byte(`{"callbackCommand":"callbackBeforeJoinGroupCommand"}`)
	const tag = 0x0102030405060708
	data := AppendTagged([]byte("kept"), tag, want, []byte("op-1"), body)[len("kept"):]
	got, dl, id, b, err := ParseTagged(data)
	if err != nil || got != tag || !dl.Equal(want) || string(id) != "op-1" || !bytes.Equal(b, body) {
		t.Fatalf("%x: %x %v %q %q %v", data, got, dl, id, b, err)
	}
	for n := range len(data) - len(body) {
		if _, _, _, _, err := ParseTagged(data[:n]); err == nil {
			t.Fatalf("a tagged request cut to %d of its %d bytes of frame accepted", n, len(data)-len(body))
		}
	}
	reply := AppendReply([]byte("kept"), tag, []byte(`{"actionCode":0}`))[len("kept"):]
	if got, answer, ok := ParseReply(reply); !ok || got != tag || string(answer) != `{"actionCode":0}` {
		t.Fatalf("%x: %x %q %v", reply, got, answer, ok)
	}
	for n := range 8 {
		if _, _, ok := ParseReply(reply[:n]); ok {
			t.Fatalf("a reply of %d bytes accepted", n)
		}
	}
}

// ParseTagged never panics; the tag it gives is the data's first 8 bytes
// even when the frame behind them is refused (the worker answers a bad
// frame behind its tag); and what it accepts is the data's own, as
// AppendTagged would write it.
func FuzzParseTagged(f *testing.F) {
	f.Add(AppendTagged(nil, 7, time.Unix(1_700_000_000, 0), []byte("op"), []byte("{}")))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		tag, dl, id, body, err := ParseTagged(data)
		if len(data) >= 8 && tag != binary.BigEndian.Uint64(data) {
			t.Fatalf("%x parsed to tag %x", data, tag)
		}
		if err != nil {
			return
		}
		if again := AppendTagged(nil, tag, dl, id, body); !bytes.Equal(again[:16], data[:16]) ||
			!bytes.HasSuffix(data, again[len(again)-len(id)-len(body):]) || len(again) > len(data) {
			t.Fatalf("%x parsed to %x %v %q %q", data, tag, dl, id, body)
		}
	})
}

func TestNkeyAuth(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	os.WriteFile(seedFile, seed, 0o600)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	if _, err := Connect(ns.ClientURL(), nil, "t", Security{}, quiet); err == nil {
		t.Fatal("connected without the nkey")
	}
	nc, err := Connect(ns.ClientURL(), nil, "t", Security{NkeySeedFile: seedFile}, quiet)
	if err != nil {
		t.Fatalf("nkey login: %v", err)
	}
	nc.Close()
}

func TestTLS(t *testing.T) {
	certFile, keyFile, _ := testenv.SelfSigned(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TLSConfig: tc, TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	url := strings.Replace(ns.ClientURL(), "nats://", "tls://", 1)
	if _, err := Connect(url, nil, "t", Security{}, quiet); err == nil {
		t.Fatal("connected without trusting the server's certificate")
	}
	nc, err := Connect(url, nil, "t", Security{CAFile: certFile}, quiet)
	if err != nil {
		t.Fatalf("TLS with the CA file: %v", err)
	}
	nc.Close()

	// A server that wants a client certificate refuses a client without
	// one: an error at start, not a connection that retries for ever.
	vc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: certFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	vs := testenv.NATSWith(t, server.Options{TLSConfig: vc, TLS: true, TLSVerify: true})
	vurl := strings.Replace(vs.ClientURL(), "nats://", "tls://", 1)
	if nc, err := Connect(vurl, nil, "t", Security{CAFile: certFile}, quiet); err == nil {
		nc.Close()
		t.Fatal("Connect without the client certificate a server requires returned a connection")
	}
	nc, err = Connect(vurl, nil, "t", Security{CAFile: certFile, CertFile: certFile, KeyFile: keyFile}, quiet)
	if err != nil {
		t.Fatalf("TLS with a client certificate: %v", err)
	}
	nc.Close()
}

// deploy/nats/nats.conf gives each role what it needs and no more: the
// gateway asks and gets replies, the worker answers, and neither can do
// the other's job.
func TestExampleServerPermissions(t *testing.T) {
	opts, err := server.ProcessConfigFile("../../deploy/nats/nats.conf")
	if err != nil {
		t.Fatalf("deploy/nats/nats.conf: %v", err)
	}
	opts.Port, opts.HTTPPort = 0, 0 // a random port, no monitoring
	ns := testenv.NATSWith(t, *opts)
	url := func(user, pass string) string {
		return strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+":"+pass+"@", 1)
	}
	violations := func(nc *nats.Conn) chan error {
		ch := make(chan error, 10)
		nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { ch <- err })
		return ch
	}
	gw, err := Connect(url("joingate-gateway", "change-me-gateway"), nil, "gw", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	wk, err := Connect(url("joingate-worker", "change-me-worker"), nil, "wk", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer wk.Close()
	gwErrs, wkErrs := violations(gw), violations(wk)
	if _, err := wk.QueueSubscribe("joingate.>", "joingate-workers", func(m *nats.Msg) { m.Respond([]byte("{}")) }); err != nil {
		t.Fatal(err)
	}
	wk.Flush()
	if m, err := gw.Request("joingate.callbackBeforeJoinGroupCommand", []byte("{}"), 2*time.Second); err != nil || string(m.Data) != "{}" {
		t.Fatalf("gateway request through the worker: %v %v", m, err)
	}
	// Workers broadcast to one another (the memory of refusals' clear).
	wk2, err := Connect(url("joingate-worker", "change-me-worker"), nil, "wk2", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer wk2.Close()
	heard, err := wk2.SubscribeSync("joingate_invalidate")
	if err != nil {
		t.Fatal(err)
	}
	wk2.Flush()
	if err := wk.Publish("joingate_invalidate", nil); err != nil {
		t.Fatal(err)
	}
	wk.Flush()
	if _, err := heard.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("a worker's broadcast did not reach another worker: %v", err)
	}
	// The worker may not publish requests, the gateway may not take them
	// nor broadcast.
	wk.Publish("joingate.callbackBeforeJoinGroupCommand", []byte("x"))
	wk.Flush()
	gw.Subscribe("joingate.>", func(*nats.Msg) {})
	gw.Flush()
	gw2, err := Connect(url("joingate-gateway", "change-me-gateway"), nil, "gw2", Security{}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Close()
	gw2Errs := violations(gw2)
	gw2.Publish("joingate_invalidate", nil)
	gw2.Flush()
	for name, ch := range map[string]chan error{"worker publishing a request": wkErrs, "gateway subscribing to requests": gwErrs,
		"gateway broadcasting": gw2Errs} {
		select {
		case err := <-ch:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Fatalf("%s: %v, want a permissions violation", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was allowed", name)
		}
	}
}
