// Command skjold-xds-probe connects to istiod as the sidecar of a Pod the webhook injected and
// prints, as one JSON line each time it changes, what istiod serves that proxy: listeners with
// their access logs, where unknown outbound traffic goes, inbound filter chains by transport,
// clusters and weighted routes. The end-to-end tests read these lines to prove the guides' mesh
// settings in istiod's own output.
//
// The node identity is what pilot-agent would send for that Pod: the id
// sidecar~<podIP>~<pod>.<ns>~<ns>.svc.cluster.local and metadata from the injected istio-proxy
// container's env (ISTIO_META_*, PROXY_CONFIG) and the Pod itself (namespace, service account,
// labels, IP). It uses Istio's own xDS client (istio.io/istio/pkg/adsc) from the pinned module.
//
//	skjold-xds-probe --addr 127.0.0.1:15010 --pod pod.json [--container istio-proxy] [--once]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelog "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"istio.io/istio/pilot/pkg/model"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	"istio.io/istio/pkg/adsc"
)

var istioVersion string

// Pod is the part of a Kubernetes Pod the probe reads.
type Pod struct {
	Metadata struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ServiceAccountName string      `json:"serviceAccountName"`
		NodeName           string      `json:"nodeName"`
		Containers         []Container `json:"containers"`
		InitContainers     []Container `json:"initContainers"`
	} `json:"spec"`
	Status struct {
		PodIP  string `json:"podIP"`
		HostIP string `json:"hostIP"`
	} `json:"status"`
}

// Container is the part of a container the probe reads.
type Container struct {
	Name string `json:"name"`
	Env  []struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	} `json:"env"`
}

// AccessLog is one file access log of a listener.
type AccessLog struct {
	Path   string `json:"path"`
	Format string `json:"format"` // TEXT or JSON
}

// Listener is what the tests read of one listener.
type Listener struct {
	Name       string      `json:"name"`
	AccessLogs []AccessLog `json:"access_logs"`
	// Transport protocols of the filter chains ("tls", "raw_buffer", "" for any), per
	// destination port ("" for chains without a port match).
	Chains map[string][]string `json:"chains,omitempty"`
}

// Route is one route of a virtual host with its weighted clusters (or single cluster).
type Route struct {
	VirtualHost string         `json:"virtual_host"`
	Domains     []string       `json:"domains"`
	Clusters    map[string]int `json:"clusters"`
}

// Summary is one JSON line of output.
type Summary struct {
	// The cluster unknown outbound traffic goes to (the virtualOutbound listener's catch-all).
	OutboundCatchAll string              `json:"outbound_catch_all"`
	Listeners        []Listener          `json:"listeners"`
	Clusters         []string            `json:"clusters"`
	Routes           map[string][]Route  `json:"routes"`
	Node             map[string]string   `json:"node"`
	Errors           []string            `json:"errors,omitempty"`
	Raw              map[string][]string `json:"-"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:15010", "istiod's plaintext xDS address")
	podFile := flag.String("pod", "", "the injected Pod as JSON (kubectl get pod -o json)")
	containerName := flag.String("container", "istio-proxy", "the sidecar container")
	once := flag.Bool("once", false, "print the first complete summary and exit")
	timeout := flag.Duration("timeout", 60*time.Second, "give up when nothing complete arrives in this time")
	version := flag.String("istio-version", "", "ISTIO_VERSION the proxy reports (the injected image's tag)")
	flag.Parse()
	istioVersion = *version
	if err := run(*addr, *podFile, *containerName, *once, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "skjold-xds-probe:", err)
		os.Exit(1)
	}
}

func run(addr, podFile, containerName string, once bool, timeout time.Duration) error {
	raw, err := os.ReadFile(podFile)
	if err != nil {
		return err
	}
	var pod Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return fmt.Errorf("--pod %s: %v", podFile, err)
	}
	meta, ids, err := nodeMetadata(&pod, containerName)
	if err != nil {
		return err
	}
	client, err := adsc.New(addr, &adsc.ADSConfig{
		Config: adsc.Config{
			ClientName: "skjold-xds-probe",
			Namespace:  pod.Metadata.Namespace,
			Workload:   pod.Metadata.Name,
			IP:         pod.Status.PodIP,
			Meta:       meta,
			NodeType:   model.SidecarProxy,
		},
		InitialDiscoveryRequests: []*discovery.DiscoveryRequest{{TypeUrl: v3.ClusterType}, {TypeUrl: v3.ListenerType}},
	})
	if err != nil {
		return fmt.Errorf("connecting to %s: %v", addr, err)
	}
	if err := client.Run(); err != nil {
		return fmt.Errorf("starting the ADS stream to %s: %v", addr, err)
	}
	defer client.Close()
	seen := map[string]bool{}
	last := ""
	deadline := time.NewTimer(timeout)
	for {
		select {
		case u := <-client.Updates:
			seen[u] = true
		case <-deadline.C:
			return fmt.Errorf("no complete configuration (clusters, listeners, routes) from %s within %v; received %v", addr, timeout, keys(seen))
		}
		if !(seen[v3.ClusterType] && seen[v3.ListenerType] && seen[v3.RouteType]) {
			continue
		}
		s := summarize(client)
		s.Node = ids
		line, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if string(line) == last {
			continue
		}
		last = string(line)
		fmt.Println(last)
		if once {
			return nil
		}
		deadline.Reset(24 * time.Hour)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// nodeMetadata builds the node metadata pilot-agent sends for the Pod: the container's
// ISTIO_META_* variables without the prefix, PROXY_CONFIG as a struct, and the Pod's identity.
func nodeMetadata(pod *Pod, containerName string) (*structpb.Struct, map[string]string, error) {
	var c *Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == containerName {
			c = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == containerName {
			c = &pod.Spec.InitContainers[i]
		}
	}
	if c == nil {
		return nil, nil, fmt.Errorf("pod %s/%s has no container %q: not injected?", pod.Metadata.Namespace, pod.Metadata.Name, containerName)
	}
	if pod.Status.PodIP == "" {
		return nil, nil, fmt.Errorf("pod %s/%s has no status.podIP", pod.Metadata.Namespace, pod.Metadata.Name)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Metadata.Name
			case "metadata.namespace":
				v = pod.Metadata.Namespace
			case "status.podIP", "status.podIPs":
				v = pod.Status.PodIP
			case "status.hostIP", "status.hostIPs":
				v = pod.Status.HostIP
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			case "spec.nodeName":
				v = pod.Spec.NodeName
			}
		}
		env[e.Name] = v
	}
	fields := map[string]any{}
	for k, v := range env {
		if name, ok := strings.CutPrefix(k, "ISTIO_META_"); ok {
			fields[name] = v
		}
	}
	if pc := env["PROXY_CONFIG"]; pc != "" {
		var parsed map[string]any
		if err := json.Unmarshal([]byte(pc), &parsed); err != nil {
			return nil, nil, fmt.Errorf("PROXY_CONFIG of %s is not JSON: %v", containerName, err)
		}
		fields["PROXY_CONFIG"] = parsed
	}
	labels := map[string]any{}
	for k, v := range pod.Metadata.Labels {
		labels[k] = v
	}
	fields["LABELS"] = labels
	fields["NAMESPACE"] = pod.Metadata.Namespace
	fields["NAME"] = pod.Metadata.Name
	fields["SERVICE_ACCOUNT"] = pod.Spec.ServiceAccountName
	fields["INSTANCE_IPS"] = pod.Status.PodIP
	if _, ok := fields["ISTIO_VERSION"]; !ok && istioVersion != "" {
		fields["ISTIO_VERSION"] = istioVersion
	}
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, nil, err
	}
	ids := map[string]string{
		"id":           fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", pod.Status.PodIP, pod.Metadata.Name, pod.Metadata.Namespace, pod.Metadata.Namespace),
		"cluster":      env["ISTIO_META_CLUSTER_ID"],
		"interception": env["ISTIO_META_INTERCEPTION_MODE"],
	}
	return s, ids, nil
}

func summarize(client *adsc.ADSC) Summary {
	// Only the Get* accessors: adsc replaces those maps whole on each update (safe to read),
	// while it writes VersionInfo in place from its receive goroutine (not safe to read here).
	s := Summary{Routes: map[string][]Route{}}
	var all []*listener.Listener
	for _, l := range client.GetHTTPListeners() {
		all = append(all, l)
	}
	for _, l := range client.GetTCPListeners() {
		all = append(all, l)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	for _, l := range all {
		out := Listener{Name: l.Name, AccessLogs: []AccessLog{}, Chains: map[string][]string{}}
		chains := append([]*listener.FilterChain{}, l.FilterChains...)
		if l.DefaultFilterChain != nil {
			chains = append(chains, l.DefaultFilterChain)
		}
		logs := map[AccessLog]bool{}
		for _, fc := range chains {
			port := ""
			transport := ""
			if m := fc.FilterChainMatch; m != nil {
				if m.DestinationPort != nil {
					port = fmt.Sprint(m.DestinationPort.Value)
				}
				transport = m.TransportProtocol
			}
			out.Chains[port] = append(out.Chains[port], transport)
			for _, f := range fc.Filters {
				for _, al := range filterAccessLogs(f, &s) {
					logs[al] = true
				}
				// The catch-all of the outbound capture listener: the chain that matches no
				// destination port (its port-15001 chain only stops loops).
				if l.Name == "virtualOutbound" && port == "" {
					if c := tcpCluster(f); c != "" {
						s.OutboundCatchAll = c
					}
				}
			}
		}
		for al := range logs {
			out.AccessLogs = append(out.AccessLogs, al)
		}
		sort.Slice(out.AccessLogs, func(i, j int) bool {
			return out.AccessLogs[i].Path+out.AccessLogs[i].Format < out.AccessLogs[j].Path+out.AccessLogs[j].Format
		})
		for p := range out.Chains {
			sort.Strings(out.Chains[p])
		}
		s.Listeners = append(s.Listeners, out)
	}
	for name := range client.GetClusters() {
		s.Clusters = append(s.Clusters, name)
	}
	for name := range client.GetEdsClusters() {
		s.Clusters = append(s.Clusters, name)
	}
	sort.Strings(s.Clusters)
	for name, rc := range client.GetRoutes() {
		s.Routes[name] = routes(rc)
	}
	return s
}

func filterAccessLogs(f *listener.Filter, s *Summary) []AccessLog {
	var logs []*accesslog.AccessLog
	switch f.Name {
	case "envoy.filters.network.http_connection_manager":
		m := &hcm.HttpConnectionManager{}
		if tc := f.GetTypedConfig(); tc != nil {
			if err := tc.UnmarshalTo(m); err != nil {
				s.Errors = append(s.Errors, err.Error())
				return nil
			}
		}
		logs = m.AccessLog
	case "envoy.filters.network.tcp_proxy":
		m := &tcpproxy.TcpProxy{}
		if tc := f.GetTypedConfig(); tc != nil {
			if err := tc.UnmarshalTo(m); err != nil {
				s.Errors = append(s.Errors, err.Error())
				return nil
			}
		}
		logs = m.AccessLog
	}
	var out []AccessLog
	for _, al := range logs {
		if al.GetTypedConfig() == nil {
			continue
		}
		fl := &filelog.FileAccessLog{}
		if err := al.GetTypedConfig().UnmarshalTo(fl); err != nil {
			continue // not a file access log (e.g. gRPC or OpenTelemetry)
		}
		format := "TEXT"
		if fl.GetLogFormat().GetJsonFormat() != nil {
			format = "JSON"
		}
		out = append(out, AccessLog{Path: fl.Path, Format: format})
	}
	return out
}

func tcpCluster(f *listener.Filter) string {
	if f.Name != "envoy.filters.network.tcp_proxy" || f.GetTypedConfig() == nil {
		return ""
	}
	m := &tcpproxy.TcpProxy{}
	if err := f.GetTypedConfig().UnmarshalTo(m); err != nil {
		return ""
	}
	return m.GetCluster()
}

func routes(rc *route.RouteConfiguration) []Route {
	var out []Route
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			a := r.GetRoute()
			if a == nil {
				continue
			}
			clusters := map[string]int{}
			if c := a.GetCluster(); c != "" {
				clusters[c] = 100
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				clusters[wc.Name] = int(wc.GetWeight().GetValue())
			}
			out = append(out, Route{VirtualHost: vh.Name, Domains: vh.Domains, Clusters: clusters})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VirtualHost < out[j].VirtualHost })
	return out
}
