package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/joingate/joingate/pkg/callback"
	"github.com/joingate/joingate/pkg/control"
	"github.com/joingate/joingate/pkg/policy"
)

const ctlUsage = `usage: joingate ctl [--admin URL] [--token TOKEN] [--json] <command>

Talks to a worker's (or 'all' process's) admin API; the token is the
worker's admin_token (also read from JOINGATE_ADMIN_TOKEN).

commands:
  quota show  <rule> [ID...]      a rule's quota: user or group ID, both (user
  quota reset <rule> [ID...]        first) for applicant_group and member_group,
                                    none for global; --command names the policy
  deny  add|remove applicant|group <ID>
  deny  list applicant|group
  allow add|remove applicant <ID>
  allow list applicant            (join_group's lists)
  list  add|remove <LIST> <ID>    any dynamic list, such as
  list  show <LIST>                 invite_to_group.deny_invitees (see README)
  explain [FILE]                  how a callback body (FILE or stdin) would be
                                  decided now, without consuming quota
`

// runCtl is `joingate ctl`. Exit codes: 0 done, 1 the API call failed, 2
// bad command line.
func runCtl(args, environ []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("joingate ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage, "\nflags:\n"); fs.PrintDefaults() }
	admin := fs.String("admin", "http://127.0.0.1:9090", "admin listener of a worker or joingate all process")
	token := fs.String("token", envValue(environ, "JOINGATE_ADMIN_TOKEN"), "admin_token of that process")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the API")
	command := fs.String("command", "join_group", "the policy whose rule quota shows or resets: join_group, invite_to_group or member_join")
	// Flags may come before or after the command's words ("ctl deny list
	// applicant --json"); after "--" everything is a word (an ID that
	// starts with "-").
	var words []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return exitUsage
		}
		left := fs.Args()
		if n := len(rest) - len(left); len(left) == 0 || n > 0 && rest[n-1] == "--" {
			words = append(words, left...)
			break
		}
		words, rest = append(words, left[0]), left[1:]
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "joingate ctl: "+format+"\n\n%s", append(a, ctlUsage)...)
		return exitUsage
	}
	if len(words) == 0 {
		return usage("no command")
	}
	c := &control.Client{Base: *admin, Token: *token, HTTP: &http.Client{Timeout: *timeout}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var (
		out any
		err error
	)
	switch cmd, rest := words[0], words[1:]; cmd {
	case "quota":
		if len(rest) < 2 || (rest[0] != "show" && rest[0] != "reset") {
			return usage("want: quota show|reset <rule> [ID...]")
		}
		if rest[0] == "show" {
			out, err = c.Quota(ctx, *command, rest[1], rest[2:])
		} else {
			out, err = c.ResetQuota(ctx, *command, rest[1], rest[2:])
		}
	case "list":
		switch {
		case len(rest) == 3 && rest[0] == "add" && rest[2] != "":
			out, err = c.ListAdd(ctx, rest[1], rest[2])
		case len(rest) == 3 && rest[0] == "remove" && rest[2] != "":
			out, err = c.ListRemove(ctx, rest[1], rest[2])
		case len(rest) == 2 && rest[0] == "show":
			out, err = c.ListMembers(ctx, rest[1])
		default:
			return usage("want: list add|remove <LIST> <ID>, or list show <LIST> (lists: %s)", strings.Join(policy.Lists, ", "))
		}
	case "deny", "allow":
		list, id, op, bad := listArgs(cmd, rest)
		if bad != "" {
			return usage("%s", bad)
		}
		switch op {
		case "add":
			out, err = c.ListAdd(ctx, list, id)
		case "remove":
			out, err = c.ListRemove(ctx, list, id)
		default:
			out, err = c.ListMembers(ctx, list)
		}
	case "explain":
		if len(rest) > 1 {
			return usage("want: explain [FILE]")
		}
		var body []byte
		if len(rest) == 1 && rest[0] != "-" {
			body, err = os.ReadFile(rest[0])
		} else {
			body, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		}
		if err != nil {
			fmt.Fprintf(stderr, "joingate ctl: cannot read the callback body: %v\n", err)
			return 1
		}
		out, err = c.Explain(ctx, body)
	default:
		return usage("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(stderr, "joingate ctl: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return 0
	}
	printCtl(stdout, out)
	return 0
}

// listArgs reads "add|remove|list applicant|group [ID]" for deny and allow.
func listArgs(cmd string, rest []string) (list, id, op, bad string) {
	want := fmt.Sprintf("want: %s add|remove applicant|group <ID>, or %s list applicant|group", cmd, cmd)
	if cmd == "allow" {
		want = "want: allow add|remove applicant <ID>, or allow list applicant"
	}
	if len(rest) < 2 {
		return "", "", "", want
	}
	op, kind := rest[0], rest[1]
	switch {
	case cmd == "allow" && kind == "applicant":
		list = policy.ListAllowApplicants
	case cmd == "deny" && kind == "applicant":
		list = policy.ListDenyApplicants
	case cmd == "deny" && kind == "group":
		list = policy.ListDenyGroups
	default:
		return "", "", "", want
	}
	switch {
	case (op == "add" || op == "remove") && len(rest) == 3 && rest[2] != "":
		return list, rest[2], op, ""
	case op == "list" && len(rest) == 2:
		return list, "", op, ""
	}
	return "", "", "", want
}

func printCtl(w io.Writer, out any) {
	switch v := out.(type) {
	case control.ListResponse:
		fmt.Fprintf(w, "%s: %d\n", v.List, len(v.Members))
		for _, m := range v.Members {
			fmt.Fprintln(w, m)
		}
	case control.QuotaResponse:
		if v.Reset {
			fmt.Fprintf(w, "rule %s, key %s: reset, %d of %d available\n", v.Rule, v.Key, v.Remaining, v.Burst)
			return
		}
		fmt.Fprintf(w, "rule %s (%d per %s, burst %d), key %s\n", v.Rule, v.Limit, v.Period, v.Burst, v.Key)
		if v.Allowed {
			fmt.Fprintf(w, "  %d request(s) available now\n", v.Remaining)
		} else {
			fmt.Fprintf(w, "  exhausted: the next request is admitted in %.1fs\n", v.RetryAfter)
		}
	case control.ExplainResponse:
		if v.Command == callback.JoinGroupCommand || v.Command == "" {
			groupType := strconv.Itoa(int(v.Callback.GroupType))
			if v.Callback.GroupType == callback.GroupTypeUnknown {
				groupType = "not a number"
			}
			fmt.Fprintf(w, "callback: applicant %q, group %q (group type %s)\n", v.Callback.ApplyID, v.Callback.GroupID, groupType)
		} else {
			fmt.Fprintf(w, "callback: %s, group %q, users %q\n", v.Command, v.Callback.GroupID, v.Callback.Users)
		}
		fmt.Fprintf(w, "decision: %s (%s", v.Decision, v.Reason)
		if v.Rule != "" {
			fmt.Fprintf(w, ", rule %s", v.Rule)
		}
		fmt.Fprintln(w, ")")
		if v.Error != "" {
			fmt.Fprintf(w, "store error: %s\n", v.Error)
		}
		for _, r := range v.Rules {
			verdict := fmt.Sprintf("admits %d, %d left after", r.Cost, r.Remaining)
			switch {
			case r.Never:
				verdict = fmt.Sprintf("refuses %d: more than the burst at once, never admitted", r.Cost)
			case !r.Allowed:
				verdict = fmt.Sprintf("refuses %d, retry in %.1fs", r.Cost, r.RetryAfter)
			}
			name := r.Name
			if r.For != "" {
				name += " for " + r.For
			}
			fmt.Fprintf(w, "  rule %-24s %s\n", name, verdict)
		}
		if v.MuteUntil != "" {
			fmt.Fprintf(w, "probation: members muted until %s\n", v.MuteUntil)
		}
		fmt.Fprintf(w, "answer: %s\n", compactJSON(v.Answer))
	}
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return string(raw)
	}
	return b.String()
}

func envValue(environ []string, name string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
