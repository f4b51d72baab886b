// Package reqlog carries what a request's handlers add to its one log line:
// the server's access log puts a Line in the request's context (New), the
// handlers and the jobs they run add attributes to it (Add: the worker its
// job, message id and outcome; a job its record ids), and the access log
// writes them with its own fields when the request ends. One line per
// request, however many parts had something to say.
package reqlog

import (
	"context"
	"log/slog"
	"sync"
)

// inline is how many attributes a Line holds without allocating: the
// access line's own (Front of them) ahead of what handlers add, the
// worker's four and a job's few.
const inline = 14

// Front is how many attributes Take puts ahead of the added ones without
// allocating.
const Front = 6

// Line is the attributes of one request's log line.
type Line struct {
	mu     sync.Mutex
	n      int
	attrs  [inline]slog.Attr
	more   []slog.Attr // past inline
	closed bool
}

// lineCtx is a request's context with its Line: one allocation for both.
type lineCtx struct {
	context.Context
	line Line
}

type key struct{}

func (c *lineCtx) Value(k any) any {
	if k == (key{}) {
		return &c.line
	}
	return c.Context.Value(k)
}

// New returns parent with a new Line, and the Line.
func New(parent context.Context) (context.Context, *Line) {
	c := &lineCtx{Context: parent}
	c.line.n = Front
	return c, &c.line
}

// From returns the Line ctx carries, nil if none. A nil Line's Add and
// Take work: Add keeps nothing, Take returns only the front.
func From(ctx context.Context) *Line {
	l, _ := ctx.Value(key{}).(*Line)
	return l
}

// Add appends attrs to the line of the request ctx belongs to (ctx or one
// derived from it, a job's included) and reports whether there was one that
// is still to be written: false when ctx carries none (the handler runs
// under another server) or its line was written already, so the caller can
// log a line of its own instead.
func Add(ctx context.Context, attrs ...slog.Attr) bool {
	return From(ctx).Add(attrs...)
}

// Has reports whether ctx carries a line still to be written.
func Has(ctx context.Context) bool {
	l := From(ctx)
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.closed
}

// Add appends attrs, unless the line was taken (Take) already.
func (l *Line) Add(attrs ...slog.Attr) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	for _, a := range attrs {
		if l.n < inline {
			l.attrs[l.n] = a
			l.n++
		} else {
			l.more = append(l.more, a)
		}
	}
	return true
}

// Take closes the line to further Adds and returns front followed by the
// added attributes as one value, to log under the empty key, which handlers
// inline: the record carries a single attribute, so slog allocates nothing
// for the others. The value points into the Line, which must not be used
// afterwards.
func (l *Line) Take(front ...slog.Attr) slog.Value {
	if l == nil {
		// A copy: the value must not keep the caller's arguments alive.
		return slog.GroupValue(append([]slog.Attr(nil), front...)...)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if len(front) > Front || l.more != nil {
		all := make([]slog.Attr, 0, len(front)+l.n-Front+len(l.more))
		all = append(append(append(all, front...), l.attrs[Front:l.n]...), l.more...)
		return slog.GroupValue(all...)
	}
	start := Front - len(front)
	copy(l.attrs[start:], front)
	return slog.GroupValue(l.attrs[start:l.n]...)
}
