package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
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
	certFile, keyFile, pool := selfSigned(t)
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

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "joingate test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
