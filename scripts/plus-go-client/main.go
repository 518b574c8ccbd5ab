// Drives the NGINX Plus Go client (github.com/nginxinc/nginx-plus-go-client,
// Debian's golang-github-nginxinc-nginx-plus-go-client-dev, used unchanged)
// against a cluster of nginx nodes running this module's `api` directive:
// it reads the zone_sync status and every status endpoint (GetStats), and
// manages keyvals through the client's own methods, and checks that writes
// made on one node show on the others.
//
// Usage: plus-go-client -api http://127.0.0.1:8080/api,http://... \
//            -zone one [-stream-zone two] [-limit-zone three] [-timeout 10s]
//
// Prints one "ok - ..." line per check; exits 1 at the first failure.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nginxinc/nginx-plus-go-client/client"
)

var timeout time.Duration

func fail(format string, args ...interface{}) {
	fmt.Printf("not ok - "+format+"\n", args...)
	os.Exit(1)
}

func ok(format string, args ...interface{}) {
	fmt.Printf("ok - "+format+"\n", args...)
}

// eventually retries check until it returns "" or the timeout passes.
func eventually(what string, check func() string) {
	deadline := time.Now().Add(timeout)
	for {
		why := check()
		if why == "" {
			ok("%s", what)
			return
		}
		if time.Now().After(deadline) {
			fail("%s: %s", what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type kv struct {
	get    func(c *client.NginxClient, zone string) (client.KeyValPairs, error)
	getAll func(c *client.NginxClient) (client.KeyValPairsByZone, error)
	add    func(c *client.NginxClient, zone, key, val string) error
	modify func(c *client.NginxClient, zone, key, val string) error
	del    func(c *client.NginxClient, zone, key string) error
	clear  func(c *client.NginxClient, zone string) error
}

var httpKV = kv{
	get:    (*client.NginxClient).GetKeyValPairs,
	getAll: (*client.NginxClient).GetAllKeyValPairs,
	add:    (*client.NginxClient).AddKeyValPair,
	modify: (*client.NginxClient).ModifyKeyValPair,
	del:    (*client.NginxClient).DeleteKeyValuePair,
	clear:  (*client.NginxClient).DeleteKeyValPairs,
}

var streamKV = kv{
	get:    (*client.NginxClient).GetStreamKeyValPairs,
	getAll: (*client.NginxClient).GetAllStreamKeyValPairs,
	add:    (*client.NginxClient).AddStreamKeyValPair,
	modify: (*client.NginxClient).ModifyStreamKeyValPair,
	del:    (*client.NginxClient).DeleteStreamKeyValuePair,
	clear:  (*client.NginxClient).DeleteStreamKeyValPairs,
}

// everywhere checks that every node's zone satisfies want.
func everywhere(nodes []*client.NginxClient, k kv, zone string, want func(client.KeyValPairs) string) func() string {
	return func() string {
		for i, c := range nodes {
			pairs, err := k.get(c, zone)
			if err != nil {
				return fmt.Sprintf("node %d: %v", i, err)
			}
			if why := want(pairs); why != "" {
				return fmt.Sprintf("node %d: %s (have %v)", i, why, pairs)
			}
		}
		return ""
	}
}

func has(key, val string) func(client.KeyValPairs) string {
	return func(p client.KeyValPairs) string {
		if v, found := p[key]; !found || v != val {
			return fmt.Sprintf("want %s=%q", key, val)
		}
		return ""
	}
}

func lacks(key string) func(client.KeyValPairs) string {
	return func(p client.KeyValPairs) string {
		if _, found := p[key]; found {
			return fmt.Sprintf("want no %s", key)
		}
		return ""
	}
}

func empty(p client.KeyValPairs) string {
	if len(p) != 0 {
		return "want an empty zone"
	}
	return ""
}

func keyvals(nodes []*client.NginxClient, k kv, kind, zone string) {
	n := len(nodes)
	key := "go-client-" + kind
	if err := k.add(nodes[0], zone, key, "v1"); err != nil {
		fail("%s: add on node 0: %v", kind, err)
	}
	ok("%s: AddKeyValPair on node 0", kind)
	eventually(fmt.Sprintf("%s: added pair read on all %d nodes", kind, n),
		everywhere(nodes, k, zone, has(key, "v1")))

	if err := k.add(nodes[0], zone, key, "again"); err == nil ||
		!strings.Contains(err.Error(), "KeyvalKeyExists") {
		fail("%s: adding an existing key: want KeyvalKeyExists, got %v", kind, err)
	}
	ok("%s: adding an existing key is refused (KeyvalKeyExists)", kind)

	last := nodes[n-1]
	if err := k.modify(last, zone, key, "v2"); err != nil {
		fail("%s: modify on node %d: %v", kind, n-1, err)
	}
	ok("%s: ModifyKeyValPair on node %d", kind, n-1)
	eventually(fmt.Sprintf("%s: modified pair read on all nodes", kind),
		everywhere(nodes, k, zone, has(key, "v2")))

	all, err := k.getAll(nodes[0])
	if err != nil {
		fail("%s: get all zones: %v", kind, err)
	}
	if all[zone][key] != "v2" {
		fail("%s: get all zones: %v", kind, all)
	}
	ok("%s: GetAll*KeyValPairs", kind)

	if err := k.del(nodes[n/2], zone, key); err != nil {
		fail("%s: delete on node %d: %v", kind, n/2, err)
	}
	ok("%s: DeleteKeyValuePair on node %d", kind, n/2)
	eventually(fmt.Sprintf("%s: deleted pair gone on all nodes", kind),
		everywhere(nodes, k, zone, lacks(key)))

	for _, kk := range []string{"a", "b", "c"} {
		if err := k.add(nodes[1%n], zone, key+"-"+kk, kk); err != nil {
			fail("%s: add %s: %v", kind, kk, err)
		}
	}
	eventually(fmt.Sprintf("%s: three pairs read on all nodes", kind),
		everywhere(nodes, k, zone, has(key+"-c", "c")))
	if err := k.clear(nodes[0], zone); err != nil {
		fail("%s: delete all on node 0: %v", kind, err)
	}
	ok("%s: DeleteKeyValPairs on node 0", kind)
	eventually(fmt.Sprintf("%s: zone empty on all nodes", kind),
		everywhere(nodes, k, zone, empty))

	if _, err := k.get(nodes[0], "no-such-zone"); err == nil ||
		!strings.Contains(err.Error(), "KeyvalNotFound") {
		fail("%s: unknown zone: want KeyvalNotFound, got %v", kind, err)
	}
	ok("%s: unknown zone is KeyvalNotFound", kind)
}

// stats checks GetStats, which reads every status endpoint of the API, on
// every node: it must succeed and carry our zones' slab figures, the
// zone_sync status, nginx's connection counters and (with -limit-zone)
// the zone's limit_req counters.
func stats(nodes []*client.NginxClient, zones []string, limitZone string) {
	for i, c := range nodes {
		st, err := c.GetStats()
		if err != nil {
			fail("node %d: GetStats: %v", i, err)
		}
		for _, z := range zones {
			slab, found := st.Slabs[z]
			if !found {
				fail("node %d: GetStats: no slab figures for zone %s: %+v", i, z, st.Slabs)
			}
			if slab.Pages.Used == 0 || slab.Pages.Free == 0 || len(slab.Slots) == 0 {
				fail("node %d: GetStats: zone %s slab figures: %+v", i, z, slab)
			}
			var reqs uint64
			for _, s := range slab.Slots {
				reqs += s.Reqs
			}
			if reqs == 0 {
				fail("node %d: GetStats: zone %s: no slot allocations counted: %+v", i, z, slab.Slots)
			}
		}
		if st.StreamZoneSync == nil || st.StreamZoneSync.Status.NodesOnline != uint64(len(nodes)-1) {
			fail("node %d: GetStats: zone_sync status: %+v", i, st.StreamZoneSync)
		}
		if st.Connections.Accepted == 0 || st.HTTPRequests.Total == 0 {
			fail("node %d: GetStats: connections %+v, requests %+v", i, st.Connections, st.HTTPRequests)
		}
		if limitZone != "" {
			if _, found := st.HTTPLimitRequests[limitZone]; !found {
				fail("node %d: GetStats: no limit_req zone %s: %+v", i, limitZone, st.HTTPLimitRequests)
			}
		}
		ok("node %d: GetStats: slabs of %v, zone_sync, %d connections accepted, %d requests",
			i, zones, st.Connections.Accepted, st.HTTPRequests.Total)
	}
}

func main() {
	apis := flag.String("api", "", "comma-separated API endpoints, one per node")
	zone := flag.String("zone", "", "http keyval zone (with sync)")
	streamZone := flag.String("stream-zone", "", "stream keyval zone (with sync)")
	limitZone := flag.String("limit-zone", "", "a sync_limit_req_zone GetStats must report")
	flag.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for replication")
	flag.Parse()
	if *apis == "" || *zone == "" {
		flag.Usage()
		os.Exit(2)
	}

	httpClient := &http.Client{Timeout: 5 * time.Second}
	var nodes []*client.NginxClient
	for i, endpoint := range strings.Split(*apis, ",") {
		c, err := client.NewNginxClient(httpClient, endpoint)
		if err != nil {
			fail("node %d: NewNginxClient(%s): %v", i, endpoint, err)
		}
		nodes = append(nodes, c)
	}
	ok("NewNginxClient on %d nodes (API version %d)", len(nodes), nodes[0].Version())

	info, err := nodes[0].GetNginxInfo()
	if err != nil || info.Version == "" || info.ProcessID == 0 || info.LoadTimestamp == "" {
		fail("GetNginxInfo: %+v %v", info, err)
	}
	ok("GetNginxInfo: nginx %s, pid %d", info.Version, info.ProcessID)

	eventually(fmt.Sprintf("GetStreamZoneSync: nodes_online = %d on every node", len(nodes)-1),
		func() string {
			for i, c := range nodes {
				zs, err := c.GetStreamZoneSync()
				if err != nil {
					return fmt.Sprintf("node %d: %v", i, err)
				}
				if zs == nil {
					return fmt.Sprintf("node %d: zone_sync not configured", i)
				}
				if zs.Status.NodesOnline != uint64(len(nodes)-1) {
					return fmt.Sprintf("node %d: nodes_online %d", i, zs.Status.NodesOnline)
				}
				if _, found := zs.Zones[*zone]; !found {
					return fmt.Sprintf("node %d: zone %s not listed: %+v", i, *zone, zs.Zones)
				}
			}
			return ""
		})

	slabZones := []string{*zone}
	if *streamZone != "" {
		slabZones = append(slabZones, *streamZone)
	}
	stats(nodes, slabZones, *limitZone)

	before, _ := nodes[0].GetStreamZoneSync()
	keyvals(nodes, httpKV, "http", *zone)
	if *streamZone != "" {
		keyvals(nodes, streamKV, "stream", *streamZone)
	}

	eventually("GetStreamZoneSync: counters moved, records_pending back to 0", func() string {
		for i, c := range nodes {
			zs, err := c.GetStreamZoneSync()
			if err != nil || zs == nil {
				return fmt.Sprintf("node %d: %v", i, err)
			}
			for name, z := range zs.Zones {
				if z.RecordsPending != 0 {
					return fmt.Sprintf("node %d: zone %s records_pending %d", i, name, z.RecordsPending)
				}
			}
		}
		after, _ := nodes[0].GetStreamZoneSync()
		if after.Status.MsgsOut <= before.Status.MsgsOut || after.Status.BytesOut <= before.Status.BytesOut {
			return fmt.Sprintf("node 0 counters did not move: %+v -> %+v", before.Status, after.Status)
		}
		return ""
	})
	fmt.Println("all checks passed")
}
