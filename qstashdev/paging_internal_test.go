package qstashdev

import (
	"net/url"
	"slices"
	"testing"
)

func TestTimePage(t *testing.T) {
	t.Parallel()
	// Newest first, as the log serves them; times in ms.
	log := func(times ...int64) []eventRecord {
		out := make([]eventRecord, len(times))
		for i, at := range times {
			out[i] = eventRecord{Time: at, MessageID: string(rune('a' + i))}
		}
		return out
	}
	tests := []struct {
		name       string
		given      []eventRecord
		query      string
		want       []int64
		wantCursor string
	}{
		{name: "all fit", given: log(9, 8, 7), query: "count=5", want: []int64{9, 8, 7}},
		{name: "cut between milliseconds", given: log(9, 8, 7, 6), query: "count=2", want: []int64{9, 8}, wantCursor: "7"},
		{name: "cursor includes its millisecond", given: log(9, 8, 7, 6), query: "count=2&cursor=7", want: []int64{7, 6}},
		{name: "cursor now", given: log(9, 8), query: "cursor=1700000000000", want: []int64{9, 8}},
		{name: "cursor before everything", given: log(9, 8), query: "cursor=5", want: []int64{}},
		{name: "never splits a millisecond", given: log(9, 8, 8, 7), query: "count=2", want: []int64{9}, wantCursor: "8"},
		{name: "a millisecond fuller than a page is taken whole", given: log(8, 8, 8, 7), query: "count=2", want: []int64{8, 8, 8}, wantCursor: "7"},
		{name: "the last millisecond fuller than a page", given: log(8, 8, 8), query: "count=2", want: []int64{8, 8, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, _ := url.ParseQuery(tt.query)
			got, cursor, err := timePage(tt.given, q, 100, 1000)
			if err != nil {
				t.Fatal(err)
			}
			times := []int64{}
			for _, e := range got {
				times = append(times, e.Time)
			}
			if !slices.Equal(times, tt.want) || cursor != tt.wantCursor {
				t.Errorf("page = %v cursor %q, want %v cursor %q", times, cursor, tt.want, tt.wantCursor)
			}
		})
	}
	if _, _, err := timePage(log(1), url.Values{"cursor": {"x"}}, 100, 1000); err == nil {
		t.Error("a cursor that is not a time was accepted")
	}
}
