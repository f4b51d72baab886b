package server_test

import (
	"context"
	"errors"
	"testing"

	"github.com/digis/jobworker/server"
)

func TestAddReadinessCheck(t *testing.T) {
	t.Parallel()
	var redisErr, storeErr error
	s := newServer(t, server.Config{Ready: func(context.Context) error { return redisErr }})
	s.AddReadinessCheck("store", func(context.Context) error { return storeErr })
	s.AddReadinessCheck("nil check is ignored", nil)
	base, _ := start(t, s)
	for _, tt := range []struct {
		name         string
		redis, store error
		want         int
	}{
		{"all ready", nil, nil, 200},
		{"store down", nil, errors.New("db down"), 503},
		{"redis down", errors.New("redis down"), nil, 503},
		{"both back", nil, nil, 200},
	} {
		redisErr, storeErr = tt.redis, tt.store
		if res, body := get(t, base+"/readyz"); res.StatusCode != tt.want {
			t.Fatalf("%s: %d %s", tt.name, res.StatusCode, body)
		}
	}
}
