package qstashdev_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/digis/jobworker/qstashdev"
	qstash "github.com/upstash/qstash-go"
)

// TestDLQListByIDs: GET /v2/dlq?dlqIds=… lists those entries only, as the
// JS SDK's dlq.listMessages({dlqIds}) expects.
func TestDLQListByIDs(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, func(delivery) reply {
		return reply{status: 489, header: map[string]string{"Upstash-NonRetryable-Error": "true"}}
	})
	for range 3 {
		if _, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/x"), Body: "b", Retries: qstash.RetryCount(0)}); err != nil {
			t.Fatal(err)
		}
	}
	list := func(query string) []string {
		status, body := e.api(t, "GET", "/v2/dlq?"+query, nil, nil)
		var page struct {
			Messages []struct {
				DLQID string `json:"dlqId"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(body, &page); err != nil || status != http.StatusOK {
			t.Fatalf("dlq %s: %d %s", query, status, body)
		}
		var ids []string
		for _, m := range page.Messages {
			ids = append(ids, m.DLQID)
		}
		return ids
	}
	var all []string
	e.waitFor(t, func() bool { all = list(""); return len(all) == 3 })
	for _, tt := range []struct {
		given string
		want  []string
	}{
		{given: "dlqIds=" + all[1], want: all[1:2]},
		{given: "dlqIds=" + all[0] + "," + all[2], want: []string{all[0], all[2]}},
		{given: "dlqIds=" + all[0] + "&dlqIds=" + all[1], want: all[:2]},
		{given: "dlqIds=1-999", want: nil},
	} {
		if got := list(tt.given); len(got) != len(tt.want) || (len(got) > 0 && (got[0] != tt.want[0] || got[len(got)-1] != tt.want[len(tt.want)-1])) {
			t.Errorf("dlq?%s = %v, want %v", tt.given, got, tt.want)
		}
	}
}

// TestEventsTimeCursor pages the event log the way the JS SDK's logs()
// documents it: start from the current unix time in milliseconds and follow
// the cursor until there is none. Every event arrives once.
func TestEventsTimeCursor(t *testing.T) {
	t.Parallel()
	e := setup(t, qstashdev.Config{}, func(delivery) reply { return reply{} })
	const n = 12
	for range n {
		if _, err := e.client.Publish(qstash.PublishOptions{Url: e.rcv.URL("/x"), Body: "b"}); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(t, func() bool { return e.countEvents(t, "state=DELIVERED") == n })
	total := e.countEvents(t, "")
	type event struct {
		Time      int64  `json:"time"`
		MessageID string `json:"messageId"`
		State     string `json:"state"`
	}
	seen := map[event]bool{}
	cursor := strconv.FormatInt(time.Now().UnixMilli(), 10)
	for pages := 0; cursor != ""; pages++ {
		if pages > total {
			t.Fatal("the cursor does not advance")
		}
		status, body := e.api(t, "GET", "/v2/events?count=5&cursor="+cursor, nil, nil)
		var page struct {
			Events []event `json:"events"`
			Cursor string  `json:"cursor"`
		}
		if err := json.Unmarshal(body, &page); err != nil || status != http.StatusOK {
			t.Fatalf("events cursor %s: %d %s", cursor, status, body)
		}
		for _, ev := range page.Events {
			if seen[ev] {
				t.Errorf("event %+v listed twice", ev)
			}
			seen[ev] = true
		}
		cursor = page.Cursor
	}
	if len(seen) != total {
		t.Errorf("paged through %d events, the log holds %d", len(seen), total)
	}
}
