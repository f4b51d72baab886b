package qstashdev_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestJSSDK runs testdata/jssdk/check.mjs: the official @upstash/qstash
// client publishes to us (also in its dev mode, which probes GET /v2/keys),
// drives the management API (flow control, URL groups, queues, DLQ), and
// its Receiver.verify accepts what we deliver.
func TestJSSDK(t *testing.T) {
	t.Parallel()
	srv := qstashdevtest.Start(t, qstashdev.Config{})
	runNode(t, srv, "check.mjs")
}

// TestJSSDKPaging runs testdata/jssdk/paging.mjs: the SDK's
// dlq.listMessages({dlqIds}) lists only those entries, and its logs()
// followed from a Date.now() cursor returns every event once.
func TestJSSDKPaging(t *testing.T) {
	t.Parallel()
	srv := qstashdevtest.Start(t, qstashdev.Config{})
	runNode(t, srv, "paging.mjs")
}

// TestWorkflowSDK runs testdata/jssdk/workflow.mjs: the official
// @upstash/workflow SDK's serve() runs a workflow with steps, a sleep and a
// step that fails twice (QStash retries it) against us, the SDK's Client
// cancels a second run during its sleep, and a third run's step fails for
// good, so its failure callback runs serve()'s failureFunction. Delays are
// scaled so the 60 s sleep takes 60 ms.
func TestWorkflowSDK(t *testing.T) {
	t.Parallel()
	srv := qstashdevtest.Start(t, qstashdev.Config{TimeScale: 0.001, DelayScale: 0.001})
	runNode(t, srv, "workflow.mjs")
	if st := srv.AwaitIdle(t, 10*time.Second); st.Dead != 1 {
		t.Errorf("after the workflows: %+v, want the third run's step dead", st)
	}
}

// runNode runs script in testdata/jssdk against srv and checks it printed
// {"ok":true. Without node or the installed node_modules it skips, except
// under CI=true, where it fails. Prepare with:
// npm ci --prefix qstashdev/testdata/jssdk
func runNode(t *testing.T, srv *qstashdevtest.Server, script string) {
	t.Helper()
	dir := filepath.Join("testdata", "jssdk")
	ci := os.Getenv("CI") == "true"
	node, err := exec.LookPath("node")
	if err != nil {
		if ci {
			t.Fatal("node not found in PATH (CI=true requires it for the JS SDK test)")
		}
		t.Skip("node not found in PATH; install Node.js >= 18 to run the JS SDK test")
	}
	for _, pkg := range []string{"qstash", "workflow"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@upstash", pkg, "package.json")); err != nil {
			if ci {
				t.Fatalf("%s/node_modules missing (CI=true): run `npm ci --prefix qstashdev/testdata/jssdk`", dir)
			}
			t.Skipf("%s/node_modules missing; run `npm ci --prefix qstashdev/testdata/jssdk` to enable the JS SDK test", dir)
		}
	}
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		// The script must see our server only, not a developer's QStash.
		if !strings.HasPrefix(kv, "QSTASH_") && !strings.HasPrefix(kv, "NODE_ENV=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cur, next := srv.SigningKeys()
	cmd.Env = append(cmd.Env,
		"QSTASH_URL="+srv.URL, "QSTASH_TOKEN="+qstashdev.DevToken, "QSTASH_DEV_PORT="+port,
		"QSTASH_CURRENT_SIGNING_KEY="+cur, "QSTASH_NEXT_SIGNING_KEY="+next, "NODE_ENV=test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, out)
	}
	if !strings.Contains(string(out), `{"ok":true`) {
		t.Fatalf("unexpected output:\n%s", out)
	}
	t.Logf("%s", out)
}
