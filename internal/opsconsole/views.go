package opsconsole

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/digis/jobworker/internal/opsstats"
)

// Outcome groups: what the page charts. The raw outcomes are in the
// totals.
var (
	deliveryGroup = map[string]string{
		"done": "ok", "duplicate": "ok",
		"in_progress": "deferred", "unavailable": "deferred", "draining": "deferred",
	} // everything else failed
	limitGroup = map[string]string{
		"allowed": "allowed", "allowed-locally": "allowed",
		"denied": "denied", "blocked-locally": "denied",
	} // everything else degraded
	cacheGroup = map[string]string{
		"hit": "hit", "waited_hit": "hit", "stale_served": "stale",
		"miss_computed": "computed", "lock_timeout": "computed", "degraded": "degraded",
	} // everything else error
)

func group(m map[string]string, v, otherwise string) string {
	if g, ok := m[v]; ok {
		return g
	}
	return otherwise
}

// series is a per-minute line per group name.
type series map[string][]float64

func (s series) add(name string, i, n int, v float64) {
	if s[name] == nil {
		s[name] = make([]float64, n)
	}
	s[name][i] += v
}

type statsView struct {
	Minutes     []time.Time      `json:"minutes"`
	Instances   []int            `json:"instances"`
	Deliveries  delivView        `json:"deliveries"`
	Limits      []bucketView     `json:"limits"`
	Cache       []familyView     `json:"cache"`
	Idempotency map[string]int64 `json:"idempotency"`
	Outbox      outboxView       `json:"outbox"`
	Degraded    map[string]int64 `json:"degraded"`
}

type delivView struct {
	PerMinute series                      `json:"perMinute"` // ok, failed, deferred
	Totals    map[string]map[string]int64 `json:"totals"`    // job → outcome → n
	Dead      map[string]int64            `json:"dead"`      // job → n
	Total     int64                       `json:"total"`
	Failed    int64                       `json:"failed"`
}

type bucketView struct {
	Bucket    string           `json:"bucket"`
	Tier      string           `json:"tier"`
	Totals    map[string]int64 `json:"totals"` // allowed, denied, degraded
	PerMinute series           `json:"perMinute"`
}

type familyView struct {
	Family  string           `json:"family"`
	Totals  map[string]int64 `json:"totals"` // hit, stale, computed, degraded, error
	HitRate float64          `json:"hitRate"`
	// HitRates is the hit rate of each minute, -1 where nothing was read.
	HitRates []float64 `json:"hitRates"`
}

type outboxView struct {
	Pending   []float64 `json:"pending"`
	Failed    []float64 `json:"failed"`
	OldestAge []float64 `json:"oldestAge"`
	Published []float64 `json:"published"`
	Errors    []float64 `json:"errors"`
	Seen      bool      `json:"seen"` // some instance reports an outbox
}

func summarize(minutes []opsstats.Minute) statsView {
	n := len(minutes)
	v := statsView{
		Minutes: make([]time.Time, n), Instances: make([]int, n),
		Deliveries:  delivView{PerMinute: series{}, Totals: map[string]map[string]int64{}, Dead: map[string]int64{}},
		Idempotency: map[string]int64{}, Degraded: map[string]int64{},
		Outbox: outboxView{Pending: make([]float64, n), Failed: make([]float64, n), OldestAge: make([]float64, n),
			Published: make([]float64, n), Errors: make([]float64, n)},
	}
	for _, g := range []string{"ok", "failed", "deferred"} {
		v.Deliveries.PerMinute[g] = make([]float64, n)
	}
	buckets := map[[2]string]*bucketView{}
	families := map[string]*familyView{}
	famMinute := map[string]series{}
	for i, m := range minutes {
		v.Minutes[i], v.Instances[i] = m.Start, m.Instances
		for _, s := range m.Series {
			l := s.Labels
			c := int64(s.Value)
			switch s.Name {
			case "jobworker_deliveries_total":
				g := group(deliveryGroup, l["outcome"], "failed")
				v.Deliveries.PerMinute.add(g, i, n, s.Value)
				if v.Deliveries.Totals[l["job"]] == nil {
					v.Deliveries.Totals[l["job"]] = map[string]int64{}
				}
				v.Deliveries.Totals[l["job"]][l["outcome"]] += c
				v.Deliveries.Total += c
				if g == "failed" {
					v.Deliveries.Failed += c
				}
				if l["outcome"] == "unavailable" {
					v.Degraded["worker dedupe"] += c
				}
			case "jobworker_dead_jobs_total":
				v.Deliveries.Dead[l["job"]] += c
			case "jobworker_ratelimit_decisions_total":
				k := [2]string{l["bucket"], l["tier"]}
				b := buckets[k]
				if b == nil {
					b = &bucketView{Bucket: k[0], Tier: k[1], Totals: map[string]int64{}, PerMinute: series{}}
					buckets[k] = b
				}
				g := group(limitGroup, l["reason"], "degraded")
				b.Totals[g] += c
				b.PerMinute.add(g, i, n, s.Value)
				if g == "degraded" {
					v.Degraded["rate limits"] += c
				}
			case "jobworker_cache_requests_total":
				f := families[l["family"]]
				if f == nil {
					f = &familyView{Family: l["family"], Totals: map[string]int64{}}
					families[l["family"]] = f
					famMinute[l["family"]] = series{}
				}
				g := group(cacheGroup, l["outcome"], "error")
				f.Totals[g] += c
				famMinute[l["family"]].add(g, i, n, s.Value)
				famMinute[l["family"]].add("all", i, n, s.Value)
				if g == "degraded" {
					v.Degraded["cache"] += c
				}
			case "jobworker_idempotency_requests_total":
				v.Idempotency[l["outcome"]] += c
				if l["outcome"] == "unavailable" {
					v.Degraded["idempotency"] += c
				}
			case "jobworker_outbox_published_total":
				v.Outbox.Published[i] += s.Value
				v.Outbox.Seen = true
			case "jobworker_outbox_publish_errors_total":
				v.Outbox.Errors[i] += s.Value
				v.Outbox.Seen = true
			case "jobworker_outbox_pending":
				v.Outbox.Pending[i] = s.Value
				v.Outbox.Seen = true
			case "jobworker_outbox_failed":
				v.Outbox.Failed[i] = s.Value
			case "jobworker_outbox_oldest_pending_age_seconds":
				v.Outbox.OldestAge[i] = s.Value
			}
		}
	}
	for _, b := range buckets {
		v.Limits = append(v.Limits, *b)
	}
	sort.Slice(v.Limits, func(a, b int) bool {
		return v.Limits[a].Tier+"/"+v.Limits[a].Bucket < v.Limits[b].Tier+"/"+v.Limits[b].Bucket
	})
	for name, f := range families {
		all := f.Totals["hit"] + f.Totals["stale"] + f.Totals["computed"] + f.Totals["degraded"] + f.Totals["error"]
		if all > 0 {
			f.HitRate = float64(f.Totals["hit"]+f.Totals["stale"]) / float64(all)
		}
		pm := famMinute[name]
		f.HitRates = make([]float64, n)
		for i := range f.HitRates {
			f.HitRates[i] = -1
			if a := at(pm["all"], i); a > 0 {
				f.HitRates[i] = (at(pm["hit"], i) + at(pm["stale"], i)) / a
			}
		}
		v.Cache = append(v.Cache, *f)
	}
	sort.Slice(v.Cache, func(a, b int) bool { return v.Cache[a].Family < v.Cache[b].Family })
	if v.Limits == nil {
		v.Limits = []bucketView{}
	}
	if v.Cache == nil {
		v.Cache = []familyView{}
	}
	return v
}

func at(s []float64, i int) float64 {
	if s == nil {
		return 0
	}
	return s[i]
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, badRequest("%s must be a number from %d to %d", name, lo, hi)
	}
	return n, nil
}

func (c *console) stats(ctx context.Context, r *http.Request) (any, error) {
	mins, err := intParam(r, "minutes", 60, 1, opsstats.MaxMinutes)
	if err != nil {
		return nil, err
	}
	now := c.cfg.Now()
	minutes, err := c.cfg.Stats.Read(ctx, now.Add(-time.Duration(mins-1)*time.Minute), now)
	if err != nil {
		return nil, err
	}
	return summarize(minutes), nil
}

func (c *console) jobs() (Jobs, error) {
	if c.cfg.Jobs == nil {
		return nil, userError{http.StatusNotImplemented, "job control is not configured"}
	}
	return c.cfg.Jobs, nil
}

func (c *console) events(ctx context.Context, r *http.Request) (any, error) {
	j, err := c.jobs()
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	f := EventFilter{State: q.Get("state"), Job: q.Get("job"), MessageID: q.Get("messageId")}
	if f.Limit, err = intParam(r, "limit", 100, 1, 1000); err != nil {
		return nil, err
	}
	for _, s := range []string{f.State, f.Job, f.MessageID} {
		if s != "" && !validName(s) {
			return nil, badRequest("invalid filter")
		}
	}
	ev, err := j.Events(ctx, f)
	if ev == nil {
		ev = []Event{}
	}
	return ev, err
}

func (c *console) deadLetters(ctx context.Context, r *http.Request) (any, error) {
	j, err := c.jobs()
	if err != nil {
		return nil, err
	}
	limit, err := intParam(r, "limit", 100, 1, 1000)
	if err != nil {
		return nil, err
	}
	d, err := j.DeadLetters(ctx, limit)
	if d == nil {
		d = []DeadLetter{}
	}
	return d, err
}

func (c *console) schedules(ctx context.Context, _ *http.Request) (any, error) {
	j, err := c.jobs()
	if err != nil {
		return nil, err
	}
	s, err := j.Schedules(ctx)
	if s == nil {
		s = []Schedule{}
	}
	return s, err
}

func (c *console) queues(ctx context.Context, _ *http.Request) (any, error) {
	j, err := c.jobs()
	if err != nil {
		return nil, err
	}
	q, err := j.Queues(ctx)
	if q == nil {
		q = []Queue{}
	}
	return q, err
}

func (c *console) keys(ctx context.Context, r *http.Request) (any, error) {
	if c.cfg.Keys == nil {
		return nil, userError{http.StatusNotImplemented, "key sampling is not configured"}
	}
	limit, err := intParam(r, "limit", 2000, 1, 20000)
	if err != nil {
		return nil, err
	}
	return c.cfg.Keys.Sample(ctx, limit)
}
