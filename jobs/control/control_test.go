package control_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digis/jobworker/internal/testwait"
	"github.com/digis/jobworker/jobs"
	"github.com/digis/jobworker/jobs/control"
	"github.com/digis/jobworker/qstashdev"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		given control.Config
		want  string // the field named, "" for valid
	}{
		{name: "minimal", given: control.Config{Token: "t"}},
		{name: "no token", given: control.Config{}, want: "Config.Token"},
		{name: "bad qstash url", given: control.Config{Token: "t", QStashURL: "ftp://x"}, want: "Config.QStashURL"},
		{name: "worker url with query", given: control.Config{Token: "t", WorkerPublicURL: "https://w?x=1"}, want: "Config.WorkerPublicURL"},
		{name: "app with a dot", given: control.Config{Token: "t", App: "a.b"}, want: "Config.App"},
		{name: "negative timeout", given: control.Config{Token: "t", Timeout: -time.Second}, want: "Config.Timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.given.Validate()
			var ce *control.ConfigError
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tt.want != "" && (!errors.As(err, &ce) || ce.Field != tt.want || !errors.Is(err, control.ErrInvalidConfig)):
				t.Fatalf("Validate = %v, want a ConfigError for %s", err, tt.want)
			}
		})
	}
}

func TestMessageGetAndCancel(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	id := e.enqueue(t, ping{N: 7}, jobs.WithDelay(time.Hour), jobs.WithRetries(2), jobs.WithQueue("q1"))
	m, err := e.ctl.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.Job != "test.ping" || string(m.Args) != `{"n":7}` || m.MaxRetries != 2 || m.Queue != "q1" ||
		m.Method != http.MethodPost || !m.NotBefore.After(time.Now().Add(50*time.Minute)) {
		t.Errorf("Message = %+v", m)
	}
	args, err := control.ArgsOf[ping](m)
	if err != nil || args.N != 7 {
		t.Errorf("ArgsOf = %+v, %v", args, err)
	}
	if _, err := control.ArgsOf[other](m); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("ArgsOf the wrong type = %v", err)
	}
	if err := e.ctl.CancelMessage(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctl.Message(ctx, id); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("Message after cancel = %v, want ErrNotFound", err)
	}
	err = e.ctl.CancelMessage(ctx, id)
	var ae *control.APIError
	if !errors.Is(err, control.ErrNotFound) || !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Temporary() {
		t.Errorf("second cancel = %v, want a 404 APIError", err)
	}
	if err := e.ctl.CancelMessage(ctx, " "); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("cancel without id = %v", err)
	}
	// The cancellation is in the log.
	page, err := e.ctl.Events(ctx, control.EventFilter{MessageIDs: []string{id}, States: []control.State{control.StateCancelled}}, control.Page{})
	if err != nil || len(page.Events) != 1 || page.Events[0].Job != "test.ping" || page.Events[0].Queue != "q1" {
		t.Errorf("cancel events = %+v, %v", page, err)
	}
}

func TestEventsFiltersAndPaging(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		ids = append(ids, e.enqueue(t, ping{N: i}))
	}
	e.enqueue(t, other{})
	testwait.For(t, 10*time.Second, "six deliveries", func() bool { return e.ran("test.ping") == 5 && e.ran("test.other") == 1 })
	delivered := func() int {
		page, err := e.ctl.Events(ctx, control.EventFilter{Job: "test.ping", States: []control.State{control.StateDelivered}}, control.Page{})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Events)
	}
	testwait.For(t, 5*time.Second, "five DELIVERED events", func() bool { return delivered() == 5 })

	// Paging two at a time lists every event of the job once, newest first.
	seen := map[string]bool{}
	var all []control.Event
	p := control.Page{Count: 2}
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("the cursor does not advance")
		}
		page, err := e.ctl.Events(ctx, control.EventFilter{Job: "test.ping"}, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			k := ev.MessageID + "/" + string(ev.State) + "/" + ev.Time.String()
			if seen[k] || ev.Job != "test.ping" {
				t.Errorf("event %s listed twice or of another job", k)
			}
			seen[k] = true
			all = append(all, ev)
		}
		if page.Cursor == "" {
			break
		}
		p.Cursor = page.Cursor
	}
	// CREATED, ACTIVE, DELIVERED per message.
	if len(all) != 15 || !slices.IsSortedFunc(all, func(a, b control.Event) int { return b.Time.Compare(a.Time) }) {
		t.Errorf("paged %d events (want 15), newest first: %v", len(all), all)
	}
	page, err := e.ctl.Events(ctx, control.EventFilter{MessageIDs: ids[:2], States: []control.State{control.StateCreated}}, control.Page{})
	if err != nil || len(page.Events) != 2 {
		t.Errorf("by ids and state = %d events, %v", len(page.Events), err)
	}
	page, err = e.ctl.Events(ctx, control.EventFilter{Job: "test.ping", From: time.Now().Add(time.Hour)}, control.Page{})
	if err != nil || len(page.Events) != 0 {
		t.Errorf("from the future = %d events, %v", len(page.Events), err)
	}
}

func TestJobFilterNeedsWorkerURL(t *testing.T) {
	t.Parallel()
	c, err := control.New(control.Config{Token: "t", QStashURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Events(context.Background(), control.EventFilter{Job: "test.ping"}, control.Page{}); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("Events with a Job filter = %v", err)
	}
	if _, err := c.DLQ(context.Background(), control.DLQFilter{Job: "Bad Name"}, control.Page{}); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("DLQ with a bad Job filter = %v", err)
	}
	if _, err := c.PlanSchedules(context.Background(), nil); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("PlanSchedules without a worker URL = %v", err)
	}
}

func TestDLQ(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.answer("test.ping", jobs.StatusNonRetryable)
	e.answer("test.other", http.StatusInternalServerError)
	for i := range 4 {
		e.enqueue(t, ping{N: i}, jobs.WithRetries(3))
	}
	e.enqueue(t, other{}, jobs.WithRetries(1))
	entries := e.deadLetters(t, "test.ping", 4)
	e.deadLetters(t, "test.other", 1)

	// One entry, typed, with its attempts from the log.
	got, err := e.ctl.DLQEntry(ctx, entries[0].DLQID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Job != "test.ping" || string(got.Args) != string(entries[0].Args) || got.ResponseStatus != jobs.StatusNonRetryable ||
		string(got.ResponseBody) != "answer 489" || got.Attempts != 1 || got.MaxRetries != 3 {
		t.Errorf("DLQEntry = %+v", got)
	}
	o := e.deadLetters(t, "test.other", 1)[0]
	if o, err = e.ctl.DLQEntry(ctx, o.DLQID); err != nil || o.Attempts != 2 || o.ResponseStatus != 500 {
		t.Errorf("DLQEntry after retries = attempts %d status %d, %v", o.Attempts, o.ResponseStatus, err)
	}

	// Listing by ids, and by status.
	page, err := e.ctl.DLQ(ctx, control.DLQFilter{IDs: []string{entries[1].DLQID, entries[2].DLQID}}, control.Page{})
	if err != nil || len(page.Entries) != 2 || page.Entries[0].DLQID != entries[1].DLQID {
		t.Errorf("DLQ by ids = %+v, %v", page.Entries, err)
	}
	page, err = e.ctl.DLQ(ctx, control.DLQFilter{ResponseStatus: 500}, control.Page{})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Job != "test.other" {
		t.Errorf("DLQ by status = %+v, %v", page.Entries, err)
	}
	page, err = e.ctl.DLQ(ctx, control.DLQFilter{}, control.Page{Count: 2})
	if err != nil || len(page.Entries) != 2 || page.Cursor == "" {
		t.Errorf("DLQ page of 2 = %d entries cursor %q, %v", len(page.Entries), page.Cursor, err)
	}

	// Retry one: a new message that runs once.
	e.answer("test.ping", http.StatusOK)
	ids, err := e.ctl.RetryDLQ(ctx, entries[0].DLQID)
	if err != nil || len(ids) != 1 || ids[0] == "" {
		t.Fatalf("RetryDLQ = %v, %v", ids, err)
	}
	testwait.For(t, 10*time.Second, "the retried job ran", func() bool { return e.ran("test.ping") == 1 })
	if _, err := e.ctl.DLQEntry(ctx, entries[0].DLQID); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("retried entry still there: %v", err)
	}
	if _, err := e.ctl.RetryDLQ(ctx, entries[0].DLQID); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("second retry = %v, want ErrNotFound", err)
	}

	// Bulk calls refuse an empty filter.
	if _, err := e.ctl.DeleteDLQWhere(ctx, control.DLQFilter{}); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("DeleteDLQWhere{} = %v", err)
	}
	if _, err := e.ctl.RetryDLQWhere(ctx, control.DLQFilter{LatestFirst: true}); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("RetryDLQWhere{} = %v", err)
	}
	// Retry several by id, delete by id, delete by filter.
	if ids, err = e.ctl.RetryDLQ(ctx, entries[1].DLQID, entries[2].DLQID); err != nil || len(ids) != 2 {
		t.Fatalf("RetryDLQ of two = %v, %v", ids, err)
	}
	testwait.For(t, 10*time.Second, "the two retried jobs ran", func() bool { return e.ran("test.ping") == 3 })
	if n, err := e.ctl.DeleteDLQ(ctx, entries[3].DLQID); err != nil || n != 1 {
		t.Errorf("DeleteDLQ = %d, %v", n, err)
	}
	if _, err := e.ctl.DeleteDLQ(ctx, entries[3].DLQID); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("second DeleteDLQ = %v", err)
	}
	if n, err := e.ctl.DeleteDLQWhere(ctx, control.DLQFilter{Job: "test.other"}); err != nil || n != 1 {
		t.Errorf("DeleteDLQWhere job = %d, %v", n, err)
	}
	if page, err := e.ctl.DLQ(ctx, control.DLQFilter{}, control.Page{}); err != nil || len(page.Entries) != 0 {
		t.Errorf("DLQ at the end = %d entries, %v", len(page.Entries), err)
	}
	// Nothing ran twice.
	if n := e.ran("test.ping"); n != 3 {
		t.Errorf("test.ping ran %d times, want 3", n)
	}
}

func TestRetryDLQWhere(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.answer("test.ping", jobs.StatusNonRetryable)
	e.answer("test.other", jobs.StatusNonRetryable)
	for i := range 3 {
		e.enqueue(t, ping{N: i})
	}
	e.enqueue(t, other{})
	e.deadLetters(t, "test.ping", 3)
	e.deadLetters(t, "test.other", 1)
	e.answer("test.ping", http.StatusOK)
	e.answer("test.other", http.StatusOK)
	ids, err := e.ctl.RetryDLQWhere(ctx, control.DLQFilter{Job: "test.ping"})
	if err != nil || len(ids) != 3 {
		t.Fatalf("RetryDLQWhere = %v, %v", ids, err)
	}
	testwait.For(t, 10*time.Second, "three retried runs", func() bool { return e.ran("test.ping") == 3 })
	if e.ran("test.other") != 0 {
		t.Error("the filter retried another job")
	}
	if ids, err := e.ctl.RetryDLQWhere(ctx, control.DLQFilter{All: true}); err != nil || len(ids) != 1 {
		t.Errorf("RetryDLQWhere All = %v, %v", ids, err)
	}
}

func TestQueues(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	e.enqueue(t, ping{N: 1}, jobs.WithQueue("payouts"))
	testwait.For(t, 10*time.Second, "the queued job ran", func() bool { return e.ran("test.ping") == 1 })
	if err := e.ctl.PauseQueue(ctx, "payouts"); err != nil {
		t.Fatal(err)
	}
	q, err := e.ctl.Queue(ctx, "payouts")
	if err != nil || !q.Paused || q.Name != "payouts" || q.Parallelism != 1 {
		t.Errorf("Queue = %+v, %v", q, err)
	}
	id := e.enqueue(t, ping{N: 2}, jobs.WithQueue("payouts"))
	qs, err := e.ctl.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0].Lag != 1 {
		t.Errorf("Queues = %+v, %v", qs, err)
	}
	if _, err := e.ctl.Message(ctx, id); err != nil {
		t.Errorf("the message waits in the paused queue: %v", err)
	}
	if err := e.ctl.ResumeQueue(ctx, "payouts"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the job ran after resume", func() bool { return e.ran("test.ping") == 2 })
	if _, err := e.ctl.Queue(ctx, "nope"); !errors.Is(err, control.ErrNotFound) {
		t.Errorf("unknown queue = %v", err)
	}
	if err := e.ctl.PauseQueue(ctx, ""); !errors.Is(err, control.ErrInvalidArgument) {
		t.Errorf("pause without a name = %v", err)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bad := e.control(t, control.Config{Token: "wrong"})
	_, err := bad.Queues(context.Background())
	var ae *control.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || !errors.Is(err, control.ErrAPI) || ae.Temporary() {
		t.Errorf("wrong token = %v", err)
	}
	if ae != nil && (ae.Op != "queues list" || containsToken(err.Error())) {
		t.Errorf("error %q", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = e.ctl.Schedules(ctx)
	if !errors.Is(err, context.Canceled) || !errors.As(err, &ae) || ae.StatusCode != 0 || !ae.Temporary() {
		t.Errorf("cancelled call = %v", err)
	}
}

func containsToken(s string) bool {
	return strings.Contains(s, qstashdev.DevToken) || strings.Contains(s, "wrong")
}
