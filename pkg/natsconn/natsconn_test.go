package natsconn

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/joingate/joingate/pkg/testenv"
)

var quiet = slog.New(slog.DiscardHandler)

func TestEmbeddedInProcess(t *testing.T) {
	ns, err := Embedded("", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	a, err := Connect("", ns, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Connect("", ns, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Subscribe("echo", func(m *nats.Msg) { m.Respond(m.Data) })
	b.Flush()
	m, err := a.Request("echo", []byte("hi"), time.Second)
	if err != nil || string(m.Data) != "hi" {
		t.Fatalf("request through the embedded server: %v %v", m, err)
	}
	if err := Drain(a, time.Second); err != nil || !a.IsClosed() {
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
	nc, err := Connect("nats://"+addr, nil, "outside", quiet)
	if err != nil {
		t.Fatalf("a worker in another process could not join: %v", err)
	}
	nc.Close()
}

// Publishing while disconnected fails at once rather than buffering.
func TestNoBufferingWhileDisconnected(t *testing.T) {
	ns := testenv.NATS(t)
	nc, err := Connect(ns.ClientURL(), nil, "t", quiet)
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

func TestConnectErrorHidesSecrets(t *testing.T) {
	_, err := Connect("nats://user:hunter2@127.0.0.1:1", nil, "t", quiet)
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the password: %v", err)
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
