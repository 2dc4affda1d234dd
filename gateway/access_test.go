package gateway_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/ratelimit"
	"github.com/joingate/joingate/pkg/testenv"
)

func TestBasicAuth(t *testing.T) {
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
	e := startGateway(t, ns, func(o *gateway.Options) { o.BasicUser, o.BasicPassword = "imserver", "s3cret" })
	u := strings.TrimPrefix(e.url, "http://")

	// IMServer puts user-info of the webhook URL into an Authorization header.
	if code, a := post(t, "http://imserver:s3cret@"+u+joinPath, joinBody("u", "g")); code != 200 || a != allow {
		t.Fatalf("right credentials: %d %+v", code, a)
	}
	for _, url := range []string{e.url + joinPath, "http://imserver:wrong@" + u + joinPath, "http://other:s3cret@" + u + joinPath} {
		if code, a := post(t, url, joinBody("u", "g")); code != 401 || a.ActionCode != 1 {
			t.Fatalf("%s: %d %+v, want 401 with actionCode 1", url, code, a)
		}
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_requests_total", "callbackBeforeJoinGroupCommand", "decided")
	testenv.WantValue(t, e.reg, 3, "joingate_gateway_requests_total", "none", "rejected")
}

func TestAllowCIDRs(t *testing.T) {
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
	closed := startGateway(t, ns, func(o *gateway.Options) {
		o.AllowNets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	if code, a := post(t, closed.url+joinPath, joinBody("u", "g")); code != 403 || a.ActionCode != 1 {
		t.Fatalf("client outside allow_cidrs: %d %+v, want 403", code, a)
	}
	open := startGateway(t, ns, func(o *gateway.Options) {
		o.AllowNets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32")}
	})
	if code, a := post(t, open.url+joinPath, joinBody("u", "g")); code != 200 || a != allow {
		t.Fatalf("client inside allow_cidrs: %d %+v", code, a)
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := testenv.SelfSigned(t)
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
	e := startGateway(t, ns, func(o *gateway.Options) { o.TLSCertFile, o.TLSKeyFile = certFile, keyFile })
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := strings.Replace(e.url, "http://", "https://", 1) + joinPath
	resp, err := client.Post(url, "application/json; charset=utf-8", strings.NewReader(joinBody("u", "g")))
	if err != nil {
		t.Fatalf("HTTPS callback: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if a := mustAnswer(t, resp.Header.Get("Content-Type"), body); resp.StatusCode != 200 || a != allow {
		t.Fatalf("HTTPS callback: %d %+v", resp.StatusCode, a)
	}
	// Plain HTTP to a TLS edge is not served.
	if _, err := http.Post(e.url+joinPath, "application/json", strings.NewReader(joinBody("u", "g"))); err == nil {
		t.Fatal("plain HTTP answered by a TLS edge")
	}
}

// Over gateway.max_conns on a TLS edge, the fallback answer (503, JSON)
// comes through TLS like any answer.
func TestTLSConnectionLimit(t *testing.T) {
	certFile, keyFile, pool := testenv.SelfSigned(t)
	ns := testenv.NATS(t)
	startWorker(t, ns, ratelimit.NewMemory(), policyConfig())
	e := startGateway(t, ns, func(o *gateway.Options) {
		o.TLSCertFile, o.TLSKeyFile = certFile, keyFile
		o.MaxConns = 1
	})
	addr := strings.TrimPrefix(e.url, "http://")
	held, err := net.Dial("tcp", addr) // takes the one slot
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post("https://"+addr+joinPath, "application/json; charset=utf-8", strings.NewReader(joinBody("u", "g")))
	if err != nil {
		t.Fatalf("HTTPS callback over max_conns: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if a := mustAnswer(t, resp.Header.Get("Content-Type"), body); resp.StatusCode != 503 || a != allow {
		t.Fatalf("HTTPS callback over max_conns: %d %+v", resp.StatusCode, a)
	}
	testenv.WantValue(t, e.reg, 1, "joingate_gateway_connections_refused_total")
}
