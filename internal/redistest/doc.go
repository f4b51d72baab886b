// Package redistest starts private redis-server processes for tests.
//
// Every test (or package) gets its own server on a free loopback port, so
// tests are isolated without FLUSHALL and can stop, kill, pause or restart
// Redis to exercise failure paths:
//
//	srv := redistest.Start(t)
//	rdb := srv.Client(t)
//	...
//	srv.Stop()    // Redis is gone: callers see connection errors
//	srv.Restart() // back on the same port, with the data it had at Stop
//
// StartCluster brings up a local three-master Redis Cluster for code that
// must also run on a cluster (hash tags, one slot per script).
//
// When redis-server is not installed the tests are skipped, unless the
// environment says CI=true, where a missing server is a failure: CI must
// never pass by skipping the tests that matter.
package redistest
