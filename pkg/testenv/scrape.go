package testenv

import (
	"net/http"
	"testing"
	"time"

	"github.com/joingate/joingate/pkg/promtext"
)

var scrapeClient = &http.Client{Timeout: 5 * time.Second}

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
