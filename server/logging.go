package server

import (
	"io"
	"log/slog"
)

// NewLogger returns the process logger: JSON (the default, for log
// pipelines) or text (for a terminal), at the given level.
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
