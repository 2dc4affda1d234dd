package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openimsdk/tools/log"

	"github.com/joingate/joingate/pkg/launch"
	"github.com/joingate/joingate/pkg/testenv"
)

// The harness runs joingate as an operator does, from binaries built from
// this repository (with joingate's own go.mod, not this module's), and
// points OpenIM's webhook client at it.

// builds holds joingate and nats-server, built from joingate's module.
var builds = &testenv.Builds{Module: "../..", Main: "./cmd/joingate"}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "joingate-conformance")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// OpenIM's logger (every webhook call logs through it) writes to
	// ./logs by default: keep it out of the source tree.
	if err := log.InitLoggerFromConfig("conformance", "conformance", "", "", log.LevelWarn, false, false,
		filepath.Join(dir, "openim-logs")+"/", 1, 24, "test", false); err != nil {
		fmt.Fprintln(os.Stderr, "OpenIM logger:", err)
		os.Exit(1)
	}
	code := m.Run()
	builds.Remove()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binaries builds joingate and nats-server once per run and returns their
// paths.
func binaries(t *testing.T) (joingate, natsServer string) { return builds.Get(t) }

// deployment is a running joingate: the webhook base URL to configure in
// IMServer (OpenIM's default shape, /callbackExample), and the admin
// listeners.
type deployment struct {
	base        string
	gatewayAdm  string
	workerAdms  []string
	nats        *testenv.Process // distributed only
	workers     []*testenv.Process
	redis       *testenv.Redis
	adminToken  string
	joingateBin string
}

const adminToken = "conformance-token"

// writeConfig writes a joingate configuration file for the test.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "joingate.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAll runs `joingate all` (embedded NATS, gateway and worker in one
// process) with Redis.
func startAll(t *testing.T, config string) *deployment {
	t.Helper()
	bin, _ := binaries(t)
	rdb := testenv.StartRedis(t)
	listen, admin := testenv.Loopback(t), testenv.Loopback(t)
	p := testenv.StartProcess(t, t.TempDir(), "all", nil, bin, "all", "--config", config,
		"--redis", rdb.URL, "--listen", listen, "--admin-listen", admin)
	testenv.WaitHTTP(t, p, "http://"+admin+"/readyz", 15*time.Second)
	return &deployment{base: "http://" + listen + "/callbackExample", gatewayAdm: admin, workerAdms: []string{admin},
		redis: rdb, adminToken: adminToken, joingateBin: bin}
}

// startDistributed runs the distributed set as separate processes: a
// nats-server, one gateway and two workers sharing one Redis.
func startDistributed(t *testing.T, config string) *deployment {
	t.Helper()
	bin, natsBin := binaries(t)
	rdb := testenv.StartRedis(t)
	set := testenv.StartSet(t, launch.SetOptions{Joingate: bin, NATSServer: natsBin, Config: config, RedisURL: rdb.URL, Workers: 2})
	return &deployment{base: "http://" + set.GatewayAddr + "/callbackExample", gatewayAdm: set.GatewayAdmin, workerAdms: set.WorkerAdmins,
		nats: set.NATS, workers: set.Workers, redis: rdb, adminToken: adminToken, joingateBin: bin}
}

// ctl runs `joingate ctl` against the first worker's admin API, as an
// operator would.
func (d *deployment) ctl(t *testing.T, args ...string) string {
	t.Helper()
	all := append([]string{"ctl", "--admin", "http://" + d.workerAdms[0], "--token", d.adminToken}, args...)
	out, err := exec.Command(d.joingateBin, all...).CombinedOutput()
	if err != nil {
		t.Fatalf("joingate %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	return string(out)
}

// metric returns the value of one series of the Prometheus text at admin
// (written as in the text format, labels in name order), 0 when absent.
func metric(t *testing.T, admin, series string) float64 {
	t.Helper()
	return testenv.TextValue(t, testenv.Scrape(t, admin), series)
}
