package qstashdev_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/qstashdev"
	"github.com/digis/jobworker/qstashdev/qstashdevtest"
)

// TestDataDirRestart checks, in process, what a restart with
// Config.DataDir keeps besides messages (cmd/qstash-dev's
// TestDataDirSurvivesKill covers SIGKILL with real processes): a message's
// attempt count and next retry, rotated signing keys, URL-group default
// headers, a Workflow run's history; and that a torn last journal line (a
// write cut by a kill) is ignored.
func TestDataDirRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var cur atomic.Pointer[qstashdevtest.Server]
	var fail atomic.Bool
	fail.Store(true)
	rcv := newReceiver(t, func() (string, string) { return cur.Load().SigningKeys() }, func(d delivery) reply {
		if d.path == "/retry" && fail.Load() {
			return reply{status: 503}
		}
		return reply{}
	})
	a := qstashdevtest.Start(t, qstashdev.Config{DataDir: dir, TimeScale: 0.1})
	cur.Store(a)
	api := func(s *qstashdevtest.Server, method, path, body string, h map[string]string) (int, []byte) {
		e := &env{srv: s}
		return e.api(t, method, path, strings.NewReader(body), h)
	}
	_, b := api(a, "POST", "/v2/publish/"+rcv.URL("/retry"), "r", nil)
	var pr struct{ MessageID string }
	json.Unmarshal(b, &pr)
	rcv.next(t, 5*time.Second) // the first attempt fails; the retry is due 1.2 s later
	testwait.For(t, 10*time.Second, "the retry recorded", func() bool {
		_, b := api(a, "GET", "/v2/events?state=RETRY&messageId="+pr.MessageID, "", nil)
		return strings.Contains(string(b), pr.MessageID)
	})
	api(a, "POST", "/v2/keys/rotate", "", nil)
	api(a, "POST", "/v2/topics/g/endpoints", `{"endpoints":[{"url":"`+rcv.URL("/g")+`"}]}`, nil)
	api(a, "PATCH", "/v2/topics/g", `{"headers":{"Upstash-Forward-X-Default":"kept"}}`, nil)
	api(a, "POST", "/v2/publish/"+rcv.URL("/wf"), "initial", map[string]string{
		"Upstash-Workflow-RunId": "wfr_restart", "Upstash-Workflow-Init": "true", "Upstash-Delay": "1h"})
	keyA, _ := a.SigningKeys()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "qstashdev.journal"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"op":"msg","msg":{"id":"msg_torn","ur`)
	f.Close()

	fail.Store(false)
	b2 := qstashdevtest.Start(t, qstashdev.Config{DataDir: dir, TimeScale: 0.1})
	cur.Store(b2)
	if k, _ := b2.SigningKeys(); k != keyA {
		t.Errorf("signing key after restart %q, want the rotated %q", k, keyA)
	}
	if st := b2.Stats(); st.Pending != 2 {
		t.Errorf("after restart: %+v, want the retry and the workflow message pending", st)
	}
	d := rcv.next(t, 10*time.Second)
	if d.path != "/retry" || d.retried() != 1 {
		t.Errorf("after restart got %s retried=%d, want /retry retried=1", d.path, d.retried())
	}
	if status, body := api(b2, "GET", "/v2/workflows/runs/wfr_restart", "", nil); status != http.StatusOK || !strings.Contains(string(body), `"callType":"step"`) {
		t.Errorf("workflow run after restart: %d %s", status, body)
	}
	api(b2, "POST", "/v2/publish/g", "to group", nil)
	if d := rcv.next(t, 5*time.Second); d.header.Get("X-Default") != "kept" {
		t.Errorf("group default header lost: %v", d.header)
	}
}

// TestDataDirAnswerAfterJournal checks that a publish is answered only
// once its record is in the journal file: with the background writer
// paused, every answered publish is already in the file.
func TestDataDirAnswerAfterJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := qstashdevtest.Start(t, qstashdev.Config{DataDir: dir})
	resume := qstashdev.PauseJournalWriter(srv.Server)
	defer resume()
	e := &env{srv: srv}
	for range 10 {
		if status, body := e.api(t, "POST", "/v2/publish/http://127.0.0.1:1/x", strings.NewReader("x"), map[string]string{"Upstash-Delay": "1h"}); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "qstashdev.journal"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `{"op":"msg"`); n != 10 {
		t.Errorf("%d message records in the journal after 10 answered publishes, want 10", n)
	}
}
