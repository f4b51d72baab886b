package qstashdev

import (
	"fmt"
	"net/http"
	"strconv"
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
	// Set through the management API (docs/qstash-protocol.md §10.3):
	// a paused key starts nothing; a pinned setting ignores what new
	// messages ask for.
	paused            bool
	pinnedParallelism bool
	pinnedRate        bool
}

// getFlowKey returns the key's gate with the latest message's settings
// (the newest config wins). The caller holds s.mu.
func (s *Server) getFlowKey(fc *flowConfig) *flowKey {
	fk := s.flows[fc.key]
	if fk == nil {
		fk = &flowKey{key: fc.key}
		s.flows[fc.key] = fk
	}
	if !fk.pinnedParallelism {
		fk.parallelism = fc.parallelism
	}
	if !fk.pinnedRate {
		fk.rate, fk.period = fc.rate, fc.period
	}
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
	for len(fk.waiting) > 0 && !fk.paused {
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
		ParallelismCount: fk.inflight, RateMax: fk.rate, RateCount: fk.count, RatePeriod: int64(fk.period.Seconds()),
		IsPaused: fk.paused, IsPinnedParallelism: fk.pinnedParallelism, IsPinnedRate: fk.pinnedRate}
	if !fk.windowStart.IsZero() {
		v.RatePeriodStart = fk.windowStart.Unix()
	}
	return v
}

func (s *Server) routeFlowControl(w http.ResponseWriter, r *http.Request, rest string) {
	if key, action, ok := strings.Cut(rest, "/"); ok && key != "" {
		if r.Method != http.MethodPost {
			writeError(w, errMethod)
			return
		}
		s.handleFlowAction(w, r, key, strings.ToLower(action))
		return
	}
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

// handleFlowAction serves POST /v2/flowControl/{key}/{pause|resume|pin|
// unpin|resetRate} (docs/qstash-protocol.md §10.3). Pause and pin create a
// key not seen yet, so a test can prepare a key before its first message;
// the others answer 404 for an unknown key.
func (s *Server) handleFlowAction(w http.ResponseWriter, r *http.Request, key, action string) {
	q := r.URL.Query()
	var pinPar, pinRate int
	var pinPeriod time.Duration
	var unpinPar, unpinRate bool
	switch action {
	case "pause", "resume", "resetrate", "reset":
	case "pin":
		var err error
		if pinPar, err = flowQueryInt(q.Get("parallelism")); err != nil {
			writeError(w, errorf(http.StatusBadRequest, "invalid parallelism: %v", err))
			return
		}
		if pinRate, err = flowQueryInt(q.Get("rate")); err != nil {
			writeError(w, errorf(http.StatusBadRequest, "invalid rate: %v", err))
			return
		}
		if v := q.Get("period"); v != "" {
			if pinPeriod, err = parseDuration(v); err != nil || pinPeriod <= 0 || pinPeriod > 7*24*time.Hour {
				writeError(w, errorf(http.StatusBadRequest, "invalid period %q: want seconds up to 1 week", v))
				return
			}
		}
		if pinPar == 0 && pinRate == 0 {
			writeError(w, errorf(http.StatusBadRequest, "pin needs parallelism and/or rate"))
			return
		}
	case "unpin":
		unpinPar, unpinRate = q.Get("parallelism") == "true", q.Get("rate") == "true"
		if !unpinPar && !unpinRate {
			writeError(w, errorf(http.StatusBadRequest, "unpin needs parallelism=true and/or rate=true"))
			return
		}
	default:
		writeError(w, errNotFound)
		return
	}
	s.mu.Lock()
	fk := s.flows[key]
	if fk == nil && (action == "pause" || action == "pin") {
		fk = &flowKey{key: key, period: time.Second}
		s.flows[key] = fk
	}
	if fk != nil {
		switch action {
		case "pause":
			fk.paused = true
		case "resume":
			fk.paused = false
		case "resetrate", "reset":
			fk.windowStart, fk.count = time.Now(), 0
			s.removeTimer(fk.timer)
			fk.timer = nil
		case "pin":
			if pinPar > 0 {
				fk.parallelism, fk.pinnedParallelism = pinPar, true
			}
			if pinRate > 0 {
				fk.rate, fk.pinnedRate = pinRate, true
				if pinPeriod > 0 {
					fk.period = pinPeriod
				}
				if fk.period == 0 {
					fk.period = time.Second
				}
			}
			// Pinning starts a new rate window (docs/qstash-protocol.md §10.3).
			fk.windowStart, fk.count = time.Now(), 0
			s.removeTimer(fk.timer)
			fk.timer = nil
		case "unpin":
			fk.pinnedParallelism = fk.pinnedParallelism && !unpinPar
			fk.pinnedRate = fk.pinnedRate && !unpinRate
		}
		if action != "resetrate" && action != "reset" {
			s.jFlow(fk) // pauses and pins survive a restart with DataDir
		}
		s.pumpFlow(fk)
	}
	s.mu.Unlock()
	if fk == nil {
		writeError(w, errorf(http.StatusNotFound, "flow control key %s not found", key))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// flowQueryInt reads an optional positive integer query value.
func flowQueryInt(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 1_000_000 {
		return 0, fmt.Errorf("%q is not a positive integer", v)
	}
	return n, nil
}
