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
	benchOutputs = append(benchOutputs, struct {
		name string
		open func(b *testing.B) (io.Writer, func())
	}{"buffered-devnull", func(b *testing.B) (io.Writer, func()) {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		w := logwriter.New(f, logwriter.Config{})
		return w, func() { w.Close(); f.Close() }
	}})
}
