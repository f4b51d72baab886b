package qstashdev

import "net/http"

// Signing keys (docs/qstash-protocol.md §5.2, §14): GET /v2/keys and
// POST /v2/keys/rotate (or /v2/rotate).

func (s *Server) handleKeys(w http.ResponseWriter) {
	cur, next := s.SigningKeys()
	writeJSON(w, http.StatusOK, map[string]string{"current": cur, "next": next})
}

// handleRotate makes the next key current and draws a new next key, as the
// real service does: receivers that know both keys keep verifying.
func (s *Server) handleRotate(w http.ResponseWriter) {
	s.mu.Lock()
	s.curKey, s.nextKey = s.nextKey, randomID("sig_", 28)
	s.jKeys()
	cur, next := s.curKey, s.nextKey
	s.mu.Unlock()
	s.log.Info("signing keys rotated")
	writeJSON(w, http.StatusOK, map[string]string{"current": cur, "next": next})
}
