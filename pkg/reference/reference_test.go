package reference

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/joingate/joingate/gateway"
	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/testenv"
)

func TestReferenceAnswers(t *testing.T) {
	opts := DefaultOptions()
	opts.NewServer = gateway.NewDefaultHTTPServer
	opts.Listen = "127.0.0.1:0"
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, srv.Run)

	join := callback.IMServerJoinGroup("g1", "u1", "hi")
	f := func(method, path, body string, wantStatus int, wantBody string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+srv.Addr()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus || !json.Valid(got) || !strings.Contains(string(got), wantBody) {
			t.Fatalf("%s %s: %d %s, want %d and a JSON body containing %q", method, path, resp.StatusCode, got, wantStatus, wantBody)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Fatalf("%s %s: Content-Type %q", method, path, ct)
		}
	}
	f("POST", "/callbackExample/callbackBeforeJoinGroupCommand", join, 200, callback.AllowJSON)
	f("POST", "//callbackBeforeJoinGroupCommand?key=x", join, 200, callback.AllowJSON)
	f("POST", "/callbackExample/callbackBeforeJoinGroupCommand", `{"groupID":"g"}`, 400, "applyID is missing")
	f("POST", "/callbackExample/somethingElse", join, 404, `"actionCode":1`)
	f("GET", "/callbackExample/callbackBeforeJoinGroupCommand", "", 405, `"actionCode":1`)
}
