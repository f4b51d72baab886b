package server_test

import (
	"io"
	"os"
	"testing"

	"github.com/digis/jobworker/internal/logwriter"
)

// The processes' setup (internal/process): the access line goes to a
// buffered writer over the file.
func init() {
	type output = struct {
		name string
		open func(b *testing.B) (io.Writer, func())
	}
	benchOutputs = append(benchOutputs, output{"buffered-devnull", func(b *testing.B) (io.Writer, func()) {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		w := logwriter.New(f, logwriter.Config{})
		return w, func() { w.Close(); f.Close() } // called twice: both are idempotent enough
	}}, output{"buffered-pipe", func(b *testing.B) (io.Writer, func()) {
		p, closePipe := openPipe(b)
		w := logwriter.New(p, logwriter.Config{})
		return w, func() { w.Close(); closePipe() }
	}})
}
