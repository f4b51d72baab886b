package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/digis/jobworker/internal/freeport"
)

// clusterBusOffset is Redis Cluster's fixed distance between the client port
// and the node-to-node bus port.
const clusterBusOffset = 10000

// Cluster is a local Redis Cluster of three masters and no replicas.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts three cluster-enabled redis-server processes, joins them
// with `redis-cli --cluster create` and waits until every node reports
// cluster_state:ok. Everything is torn down when the test ends.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	binary(tb, "redis-server")
	cli := binary(tb, "redis-cli")
	c := &Cluster{}
	for i := 0; i < 3; i++ {
		c.Nodes = append(c.Nodes, startClusterNode(tb))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(30 * time.Second); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return c
}

func startClusterNode(tb testing.TB) *Server {
	tb.Helper()
	bin := binary(tb, "redis-server")
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s := &Server{tb: tb, dir: tb.TempDir(), args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
		}}
		// The node's port, and its cluster bus port free as well.
		if s.port, err = freeport.Pick(clusterBusOffset); err != nil {
			continue
		}
		if err = s.launch(bin); err == nil {
			tb.Cleanup(s.Kill)
			return s
		}
	}
	tb.Fatalf("redistest: start cluster node: %v", err)
	return nil
}

// Addrs lists host:port of every master.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL is the cluster in the form REDIS_URL accepts:
// redis+cluster://host:port?addr=host:port&addr=host:port.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	var b strings.Builder
	b.WriteString("redis+cluster://" + addrs[0])
	for i, a := range addrs[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + a)
	}
	return b.String()
}

// Client returns a cluster client, closed when the test ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:        c.Addrs(),
		DialTimeout:  time.Second,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
	})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (c *Cluster) waitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for _, n := range c.Nodes {
			info, err := nodeInfo(n.Addr())
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				bad = n.Addr()
				break
			}
		}
		if bad == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster node %s not ok after %s", bad, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nodeInfo(addr string) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return rc.ClusterInfo(ctx).Result()
}
