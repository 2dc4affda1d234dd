package redisconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// Causes of a failed Redis call, as Cause names them: the label values of
// joingate_worker_store_errors_total. The first four are configuration
// that waiting will not mend (NeedsOperator).
const (
	CauseAuth        = "auth"         // wrong or missing password or user, or an ACL that forbids the scripts
	CauseDatabase    = "database"     // the URL's database index does not exist (or SELECT on a cluster)
	CauseUnknownHost = "unknown_host" // the host name does not exist (a DNS timeout is CauseTimeout)
	CauseTLS         = "tls"          // TLS handshake or certificate verification failed
	CauseRefused     = "refused"      // nothing listens there: Redis stopped
	CauseClosed      = "closed"       // the connection broke while in use
	CauseTimeout     = "timeout"      // no answer within the budget: Redis paused, busy or unreachable
	CauseOther       = "other"
)

// Causes lists every cause, for pre-created metric series.
var Causes = []string{CauseAuth, CauseDatabase, CauseUnknownHost, CauseTLS, CauseRefused, CauseClosed, CauseTimeout, CauseOther}

// Cause names the kind of failure err (from a go-redis call) is.
func Cause(err error) string {
	var (
		dns      *net.DNSError
		netErr   net.Error
		record   tls.RecordHeaderError
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		op       *net.OpError
	)
	msg := err.Error()
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "NOPERM"),
		strings.Contains(msg, "called without any password configured"):
		return CauseAuth
	case strings.Contains(msg, "DB index is out of range"), strings.Contains(msg, "invalid DB index"),
		strings.Contains(msg, "SELECT is not allowed in cluster mode"):
		return CauseDatabase
	case errors.As(err, &dns) && dns.IsNotFound:
		return CauseUnknownHost // a DNS timeout or failure falls through: an outage
	case errors.As(err, &record), errors.As(err, &verify), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &op) && op.Op == "remote error": // the server refused our certificate
		return CauseTLS
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		// ENOENT: the unix socket a stopped Redis removed.
		return CauseRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return CauseTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed):
		return CauseClosed
	}
	return CauseOther
}

// NeedsOperator reports whether cause is configuration that only an
// operator can mend, as opposed to an outage that ends by itself.
func NeedsOperator(cause string) bool {
	switch cause {
	case CauseAuth, CauseDatabase, CauseUnknownHost, CauseTLS:
		return true
	}
	return false
}
