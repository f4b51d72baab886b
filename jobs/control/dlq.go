package control

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DLQEntry is a dead-lettered message with the last answer it got
// (docs/qstash-protocol.md §7).
type DLQEntry struct {
	// DLQID identifies the entry (not the message): retry and delete take it.
	DLQID string
	// Message is the message as published: Job, Args, Body, MaxRetries, …
	Message
	// ResponseStatus, ResponseHeader and ResponseBody are the destination's
	// last answer (status 0: it did not answer).
	ResponseStatus int
	ResponseHeader http.Header
	ResponseBody   []byte
	// Error is QStash's text for the last attempt, when it gives one.
	Error string
	// Attempts is how many deliveries were tried, from the event log. DLQEntry
	// fills it; DLQ listings leave it 0, as does a log that no longer holds
	// the message's events.
	Attempts int
}

type dlqWire struct {
	messageWire
	DLQID              string      `json:"dlqId"`
	ResponseStatus     int         `json:"responseStatus"`
	ResponseHeader     http.Header `json:"responseHeader"`
	ResponseBody       string      `json:"responseBody"`
	ResponseBodyBase64 string      `json:"responseBodyBase64"`
	Error              string      `json:"error"`
}

func (w dlqWire) entry() DLQEntry {
	return DLQEntry{
		DLQID: w.DLQID, Message: w.message(), ResponseStatus: w.ResponseStatus, ResponseHeader: w.ResponseHeader,
		ResponseBody: body(w.ResponseBody, w.ResponseBodyBase64), Error: w.Error,
	}
}

// DLQFilter selects DLQ entries: every set field must match (AND); within
// IDs any matches (OR). The zero filter selects nothing for the bulk calls
// (RetryDLQWhere, DeleteDLQWhere) unless All is set, and everything for DLQ.
type DLQFilter struct {
	// IDs are DLQ ids (DLQEntry.DLQID).
	IDs       []string
	MessageID string
	// Job selects one job's destination; it needs Config.WorkerPublicURL.
	Job            string
	URL            string
	Queue          string
	ScheduleID     string
	Label          string
	ResponseStatus int
	// From and To bound when the message was created (inclusive).
	From, To time.Time
	// All must be set for a bulk call with no other filter: it acts on
	// every entry.
	All bool
	// LatestFirst lists newest entries first (DLQ only).
	LatestFirst bool
}

func (f DLQFilter) empty() bool {
	return len(f.IDs) == 0 && f.MessageID == "" && f.Job == "" && f.URL == "" && f.Queue == "" &&
		f.ScheduleID == "" && f.Label == "" && f.ResponseStatus == 0 && f.From.IsZero() && f.To.IsZero()
}

func (c *Client) dlqQuery(f DLQFilter) (url.Values, error) {
	q := url.Values{}
	dest, err := c.jobURL(f.Job)
	if err != nil {
		return nil, err
	}
	if dest != "" && f.URL != "" && dest != f.URL {
		return nil, invalid("the Job and URL filters disagree")
	}
	for _, id := range f.IDs {
		if err := needID("dlq id", id); err != nil {
			return nil, err
		}
	}
	if len(f.IDs) > 0 {
		q.Set("dlqIds", strings.Join(f.IDs, ","))
	}
	setQ(q, "messageId", f.MessageID)
	setQ(q, "url", dest)
	setQ(q, "url", f.URL)
	setQ(q, "queueName", f.Queue)
	setQ(q, "scheduleId", f.ScheduleID)
	setQ(q, "label", f.Label)
	if f.ResponseStatus != 0 {
		q.Set("responseStatus", strconv.Itoa(f.ResponseStatus))
	}
	setQ(q, "fromDate", millis(f.From))
	setQ(q, "toDate", millis(f.To))
	return q, nil
}

// DLQPage is one page of DLQ entries.
type DLQPage struct {
	Entries []DLQEntry
	// Cursor fetches the next page (Page.Cursor); "" at the end.
	Cursor string
}

// DLQ lists dead-lettered messages matching f, one page at a time (QStash
// pages at most 100): pass the returned Cursor in p until it is "".
func (c *Client) DLQ(ctx context.Context, f DLQFilter, p Page) (DLQPage, error) {
	q, err := c.dlqQuery(f)
	if err != nil {
		return DLQPage{}, err
	}
	if err := p.apply(q); err != nil {
		return DLQPage{}, err
	}
	if f.LatestFirst {
		q.Set("order", "latestFirst")
	}
	var w struct {
		Messages []dlqWire `json:"messages"`
		Cursor   string    `json:"cursor"`
	}
	if _, err := c.do(ctx, call{op: "dlq list", method: http.MethodGet, path: "/v2/dlq", query: q, out: &w}); err != nil {
		return DLQPage{}, err
	}
	out := DLQPage{Entries: make([]DLQEntry, len(w.Messages)), Cursor: w.Cursor}
	for i, m := range w.Messages {
		out.Entries[i] = m.entry()
	}
	return out, nil
}

// DLQEntry returns one DLQ entry, with its Attempts counted from the event
// log. Errors match ErrNotFound when the entry is gone (retried, deleted or
// expired).
func (c *Client) DLQEntry(ctx context.Context, dlqID string) (DLQEntry, error) {
	if err := needID("dlq id", dlqID); err != nil {
		return DLQEntry{}, err
	}
	var w dlqWire
	if _, err := c.do(ctx, call{op: "dlq get", method: http.MethodGet, path: "/v2/dlq/" + url.PathEscape(dlqID), out: &w}); err != nil {
		return DLQEntry{}, err
	}
	e := w.entry()
	n, err := c.attempts(ctx, e.ID)
	if err != nil {
		return e, err
	}
	e.Attempts = n
	return e, nil
}

// RetryDLQ republishes the given entries as new messages (same body and
// configuration) and removes them from the DLQ; it returns the new message
// ids in order. Nothing is retried when an id is empty. With one id an
// unknown entry is an error matching ErrNotFound.
func (c *Client) RetryDLQ(ctx context.Context, dlqIDs ...string) ([]string, error) {
	if len(dlqIDs) == 0 {
		return nil, nil
	}
	for _, id := range dlqIDs {
		if err := needID("dlq id", id); err != nil {
			return nil, err
		}
	}
	if len(dlqIDs) == 1 {
		var w struct {
			MessageID string `json:"messageId"`
		}
		_, err := c.do(ctx, call{op: "dlq retry", method: http.MethodPost, path: "/v2/dlq/retry/" + url.PathEscape(dlqIDs[0]), out: &w})
		if err != nil {
			return nil, err
		}
		return []string{w.MessageID}, nil
	}
	ids, _, err := c.retryPage(ctx, url.Values{"dlqIds": {strings.Join(dlqIDs, ",")}})
	return ids, err
}

func (c *Client) retryPage(ctx context.Context, q url.Values) ([]string, string, error) {
	var w struct {
		Cursor    string `json:"cursor"`
		Responses []struct {
			MessageID string `json:"messageId"`
		} `json:"responses"`
	}
	if _, err := c.do(ctx, call{op: "dlq retry", method: http.MethodPost, path: "/v2/dlq/retry", query: q, out: &w}); err != nil {
		return nil, "", err
	}
	ids := make([]string, len(w.Responses))
	for i, r := range w.Responses {
		ids[i] = r.MessageID
	}
	return ids, w.Cursor, nil
}

// maxBulkRounds bounds the cursor loop of a bulk call (100 entries a round).
const maxBulkRounds = 10_000

// RetryDLQWhere retries every entry matching f (see RetryDLQ), following
// QStash's cursor until the selection is done, and returns the new message
// ids. An empty filter is refused unless f.All is set. On an error the ids
// of the rounds already done are returned with it.
func (c *Client) RetryDLQWhere(ctx context.Context, f DLQFilter) ([]string, error) {
	q, err := c.bulkQuery(f)
	if err != nil {
		return nil, err
	}
	var all []string
	for range maxBulkRounds {
		ids, cursor, err := c.retryPage(ctx, q)
		all = append(all, ids...)
		if err != nil || cursor == "" {
			return all, err
		}
		q.Set("cursor", cursor)
	}
	return all, nil
}

func (c *Client) bulkQuery(f DLQFilter) (url.Values, error) {
	if f.empty() && !f.All {
		return nil, invalid("a bulk DLQ call needs a filter, or All to act on every entry")
	}
	q, err := c.dlqQuery(f)
	if err != nil {
		return nil, err
	}
	q.Set("count", "100")
	return q, nil
}

// DeleteDLQ removes the given entries and returns how many were removed.
// With one id an unknown entry is an error matching ErrNotFound; with
// several, unknown ones are not counted.
func (c *Client) DeleteDLQ(ctx context.Context, dlqIDs ...string) (int, error) {
	if len(dlqIDs) == 0 {
		return 0, nil
	}
	for _, id := range dlqIDs {
		if err := needID("dlq id", id); err != nil {
			return 0, err
		}
	}
	if len(dlqIDs) == 1 {
		if _, err := c.do(ctx, call{op: "dlq delete", method: http.MethodDelete, path: "/v2/dlq/" + url.PathEscape(dlqIDs[0])}); err != nil {
			return 0, err
		}
		return 1, nil
	}
	n, _, err := c.deletePage(ctx, url.Values{"dlqIds": {strings.Join(dlqIDs, ",")}})
	return n, err
}

func (c *Client) deletePage(ctx context.Context, q url.Values) (int, string, error) {
	var w struct {
		Deleted int    `json:"deleted"`
		Cursor  string `json:"cursor"`
	}
	if _, err := c.do(ctx, call{op: "dlq delete", method: http.MethodDelete, path: "/v2/dlq", query: q, out: &w}); err != nil {
		return 0, "", err
	}
	return w.Deleted, w.Cursor, nil
}

// DeleteDLQWhere removes every entry matching f, following QStash's cursor,
// and returns how many were removed. An empty filter is refused unless
// f.All is set.
func (c *Client) DeleteDLQWhere(ctx context.Context, f DLQFilter) (int, error) {
	q, err := c.bulkQuery(f)
	if err != nil {
		return 0, err
	}
	total := 0
	for range maxBulkRounds {
		n, cursor, err := c.deletePage(ctx, q)
		total += n
		if err != nil || cursor == "" {
			return total, err
		}
		q.Set("cursor", cursor)
	}
	return total, nil
}
