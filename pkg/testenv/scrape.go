package testenv

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
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
	resp, err := scrapeClient.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET http://%s/metrics: %d %v", admin, resp.StatusCode, err)
	}
	return string(body)
}

// TextValue returns the value of one series, written as in the text
// format (`name{label="value",...}`, labels in name order), and 0 when
// absent. With series ending in "{" it sums every series of the metric;
// ending in "," (`name{call="decide",`), those whose first labels match.
func TextValue(t testing.TB, text, series string) float64 {
	t.Helper()
	sum := false
	if strings.HasSuffix(series, "{") || strings.HasSuffix(series, ",") {
		sum = true
	} else {
		series += " "
	}
	var total float64
	for line := range strings.SplitSeq(text, "\n") {
		if !strings.HasPrefix(line, series) {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		if !sum {
			return v
		}
		total += v
	}
	return total
}
