package testenv

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/promtext"
)

var scrapeClient = &http.Client{Timeout: 5 * time.Second}

// WaitNATS waits until a NATS server accepts connections on addr: it
// greets every client with an INFO line.
func WaitNATS(t testing.TB, p *Process, addr string) {
	t.Helper()
	var lastErr error
	ok := Eventually(10*time.Second, func() bool {
		if p.Exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			lastErr = err
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "INFO ") {
			lastErr = fmt.Errorf("greeting %q: %v", line, err)
			return false
		}
		return true
	})
	if p.Exited() {
		t.Fatalf("nats-server exited: %s", p.Cmd.ProcessState)
	}
	if !ok {
		t.Fatalf("nats-server not accepting connections on %s within 10s: %v", addr, lastErr)
	}
}

// Scrape fetches the Prometheus text of an admin listener.
func Scrape(t testing.TB, admin string) string {
	t.Helper()
	text, err := promtext.Get(scrapeClient, "http://"+admin+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TextValue returns the value of one series, written as in the text
// format (`name{label="value",...}`, labels in name order), and 0 when
// absent. With series ending in "{" it sums every series of the metric;
// ending in "," (`name{call="decide",`), those whose first labels match
// (promtext.Value).
func TextValue(t testing.TB, text, series string) float64 {
	t.Helper()
	v, _, err := promtext.Value(text, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
