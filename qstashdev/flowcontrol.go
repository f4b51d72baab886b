package qstashdev

import (
	"net/http"
	"strings"
	"time"
)

// Flow control (docs/qstash-protocol.md §10.2, §10.3): per-key limits on
// concurrent attempts and attempts per period, and the read-only
// /v2/flowControl and /v2/globalParallelism API.

// flowKey gates attempts sharing an Upstash-Flow-Control-Key. Guarded by
// Server.mu.
type flowKey struct {
	key         string
	parallelism int
	rate        int
	period      time.Duration
	waiting     []*message
	inflight    int
	windowStart time.Time // monotonic
	count       int
	timer       *timerItem
}

// getFlowKey returns the key's gate with the latest message's settings
// (the newest config wins). The caller holds s.mu.
func (s *Server) getFlowKey(fc *flowConfig) *flowKey {
	fk := s.flows[fc.key]
	if fk == nil {
		fk = &flowKey{key: fc.key}
		s.flows[fc.key] = fk
	}
	fk.parallelism, fk.rate, fk.period = fc.parallelism, fc.rate, fc.period
	return fk
}

// pumpFlow starts waiting attempts while the key's parallelism and rate
// allow; when the rate window is full it arms a timer for the window's
// end. The caller holds s.mu.
func (s *Server) pumpFlow(fk *flowKey) {
	now := time.Now()
	if fk.rate > 0 && !now.Before(fk.windowStart.Add(fk.period)) {
		fk.windowStart, fk.count = now, 0
	}
	for len(fk.waiting) > 0 {
		if fk.parallelism > 0 && fk.inflight >= fk.parallelism {
			return
		}
		if fk.rate > 0 && fk.count >= fk.rate {
			if fk.timer == nil {
				fk.timer = &timerItem{at: fk.windowStart.Add(fk.period), kind: timerFlow, flow: fk}
				s.addTimer(fk.timer)
			}
			return
		}
		m := fk.waiting[0]
		fk.waiting[0] = nil
		fk.waiting = fk.waiting[1:]
		m.inFlowWait = false
		fk.inflight++
		fk.count++
		m.flowSlot = true
		s.start(m)
	}
}

type flowJSON struct {
	FlowControlKey      string `json:"flowControlKey"`
	WaitListSize        int    `json:"waitListSize"`
	ParallelismMax      int    `json:"parallelismMax"`
	ParallelismCount    int    `json:"parallelismCount"`
	RateMax             int    `json:"rateMax"`
	RateCount           int    `json:"rateCount"`
	RatePeriod          int64  `json:"ratePeriod"`
	RatePeriodStart     int64  `json:"ratePeriodStart"`
	IsPaused            bool   `json:"isPaused"`
	IsPinnedParallelism bool   `json:"isPinnedParallelism"`
	IsPinnedRate        bool   `json:"isPinnedRate"`
}

func (fk *flowKey) view() flowJSON {
	v := flowJSON{FlowControlKey: fk.key, WaitListSize: len(fk.waiting), ParallelismMax: fk.parallelism,
		ParallelismCount: fk.inflight, RateMax: fk.rate, RateCount: fk.count, RatePeriod: int64(fk.period.Seconds())}
	if !fk.windowStart.IsZero() {
		v.RatePeriodStart = fk.windowStart.Unix()
	}
	return v
}

func (s *Server) routeFlowControl(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodGet {
		writeError(w, errMethod)
		return
	}
	if rest == "" {
		search := r.URL.Query().Get("search")
		out := []flowJSON{}
		s.mu.Lock()
		for _, fk := range s.flows {
			if search == "" || strings.Contains(fk.key, search) {
				out = append(out, fk.view())
			}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
		return
	}
	serveView(s, w, s.flows, "flow control key", rest)
}

// handleGlobalParallelism reports the attempts in flight under any flow
// key; there is no global maximum here (0).
func (s *Server) handleGlobalParallelism(w http.ResponseWriter) {
	s.mu.Lock()
	active := 0
	for _, fk := range s.flows {
		active += fk.inflight
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]int{"parallelismMax": 0, "parallelismCount": active})
}
