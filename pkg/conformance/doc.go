// Package conformance proves joingate against OpenIM's own code: its tests
// drive joingate exactly as IMServer's group service does, with
// open-im-server v3.8.3's webhook client (pkg/common/webhook), request and
// response structs (pkg/callbackstruct), and read every verdict as OpenIM
// reads it (a nil error: the join proceeds; an errs.CodeError: refused,
// and that is what the user is shown).
//
// It is a module of its own so that OpenIM's dependency tree stays out of
// joingate's go.mod; `make test` runs it.
package conformance
