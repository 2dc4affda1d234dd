// Package promtext reads values out of the Prometheus text format that
// joingate's /metrics serves: the one reader of the tests, the load
// generator and the bench suite.
package promtext

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Value returns the value of one series of text, written as in the text
// format (`name{label="value",...}`, labels in name order), and whether
// text has it. With series ending in "{" it sums every series of the
// metric; ending in "," (`name{call="decide",`), those whose first labels
// match. A sample's timestamp, if any, is ignored.
func Value(text, series string) (v float64, found bool, err error) {
	sum := strings.HasSuffix(series, "{") || strings.HasSuffix(series, ",")
	unlabelled := "" // the metric's series without labels, when summing all
	if strings.HasSuffix(series, "{") {
		unlabelled = strings.TrimSuffix(series, "{") + " "
	}
	if !sum {
		series += " "
	}
	var total float64
	for line := range strings.SplitSeq(text, "\n") {
		var rest string
		switch {
		case strings.HasPrefix(line, series):
			rest = line[len(series):]
			if sum {
				i := strings.LastIndexByte(rest, '}')
				if i < 0 {
					return 0, false, fmt.Errorf("bad sample %q", line)
				}
				rest = rest[i+1:]
			}
		case unlabelled != "" && strings.HasPrefix(line, unlabelled):
			rest = line[len(unlabelled):]
		default:
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false, fmt.Errorf("bad sample %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false, fmt.Errorf("bad sample %q: %w", line, err)
		}
		if !sum {
			return v, true, nil
		}
		total += v
		found = true
	}
	return total, found, nil
}

// Get fetches the text at url, which must answer 200.
func Get(client *http.Client, url string) (string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("metrics %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("metrics %s: HTTP %s", url, resp.Status)
	}
	return string(body), nil
}

// Bucket is one cumulative bucket of a histogram: Count observations at
// most LE (+Inf for the last).
type Bucket struct{ LE, Count float64 }

// Histogram returns the buckets of an unlabelled histogram, in the order
// of text (ascending le, as Prometheus writes them), and its sum and
// count.
func Histogram(text, name string) (buckets []Bucket, sum, count float64, err error) {
	prefix := name + `_bucket{le="`
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		le, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, 0, 0, fmt.Errorf("bad bucket %q", line)
		}
		var b Bucket
		if b.LE, err = strconv.ParseFloat(le, 64); err != nil {
			return nil, 0, 0, fmt.Errorf("bad bucket %q: %w", line, err)
		}
		if b.Count, err = strconv.ParseFloat(strings.Fields(value)[0], 64); err != nil {
			return nil, 0, 0, fmt.Errorf("bad bucket %q: %w", line, err)
		}
		buckets = append(buckets, b)
	}
	if sum, _, err = Value(text, name+"_sum"); err != nil {
		return nil, 0, 0, err
	}
	if count, _, err = Value(text, name+"_count"); err != nil {
		return nil, 0, 0, err
	}
	return buckets, sum, count, nil
}
