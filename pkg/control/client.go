package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls a worker's operator API.
type Client struct {
	// Base is the admin listener's URL, e.g. http://127.0.0.1:9090.
	Base  string
	Token string
	HTTP  *http.Client
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Base, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("admin URL %q: %w", c.Base, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("answer is not what the API sends (is %s a joingate worker's admin address?): %w", c.Base, err)
	}
	return nil
}

// ListMembers returns the members of a dynamic list.
func (c *Client) ListMembers(ctx context.Context, list string) (ListResponse, error) {
	var out ListResponse
	return out, c.do(ctx, http.MethodGet, "/api/v1/lists/"+url.PathEscape(list), nil, &out)
}

// ListAdd puts id on a dynamic list and returns the list.
func (c *Client) ListAdd(ctx context.Context, list, id string) (ListResponse, error) {
	var out ListResponse
	return out, c.do(ctx, http.MethodPut, "/api/v1/lists/"+url.PathEscape(list)+"/"+url.PathEscape(id), nil, &out)
}

// ListRemove takes id off a dynamic list and returns the list.
func (c *Client) ListRemove(ctx context.Context, list, id string) (ListResponse, error) {
	var out ListResponse
	return out, c.do(ctx, http.MethodDelete, "/api/v1/lists/"+url.PathEscape(list)+"/"+url.PathEscape(id), nil, &out)
}

func quotaPath(command, rule string, ids []string) string {
	q := url.Values{"id": ids}
	if command != "" {
		q.Set("command", command)
	}
	return "/api/v1/quota/" + url.PathEscape(rule) + "?" + q.Encode()
}

// Quota shows the quota of a rule of command's policy (a section name such
// as invite_to_group; empty: join_group) for the IDs that key it.
func (c *Client) Quota(ctx context.Context, command, rule string, ids []string) (QuotaResponse, error) {
	var out QuotaResponse
	return out, c.do(ctx, http.MethodGet, quotaPath(command, rule, ids), nil, &out)
}

// ResetQuota gives a rule's key its full burst again.
func (c *Client) ResetQuota(ctx context.Context, command, rule string, ids []string) (QuotaResponse, error) {
	var out QuotaResponse
	return out, c.do(ctx, http.MethodDelete, quotaPath(command, rule, ids), nil, &out)
}

// Explain asks how a callback body would be decided now, consuming nothing.
func (c *Client) Explain(ctx context.Context, body []byte) (ExplainResponse, error) {
	var out ExplainResponse
	return out, c.do(ctx, http.MethodPost, "/api/v1/explain", body, &out)
}
