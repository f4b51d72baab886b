package qstashdev

// OnEvent makes s call fn, with its lock held, for every event-log record
// (state, message id), so tests can wait for a state change instead of
// sleeping. fn must not block or call s.
func OnEvent(s *Server, fn func(state, messageID string)) {
	s.mu.Lock()
	s.onEvent = fn
	s.mu.Unlock()
}

// PauseJournalWriter stops s's background journal writer until the
// returned function is called, so a test sees what the API itself wrote.
func PauseJournalWriter(s *Server) (resume func()) {
	s.jr.round.Lock()
	return s.jr.round.Unlock
}
