// Command coredns is CoreDNS (github.com/coredns/coredns, the version e2e/versions.env pins) with
// only the plugins the local cluster's DNS needs: kubernetes (Service and Pod records), errors,
// log, health, ready and cache. No forward plugin: the node sandbox has no upstream resolver, and
// names outside cluster.local get an answer of their own (NXDOMAIN/SERVFAIL) instead of a query
// that leaves the sandbox.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
