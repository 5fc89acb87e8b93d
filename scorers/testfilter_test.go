package scorers

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// parseSelection turns a test-epp-endpoint-selection value into what the
// proposed scheduler.Request field would hold (port 0 for an "IP" entry),
// as GIE splits it: comma-separated, spaces trimmed, brackets optional.
func parseSelection(t *testing.T, v string) []netip.AddrPort {
	t.Helper()
	var out []netip.AddrPort
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if ap, err := netip.ParseAddrPort(item); err == nil {
			out = append(out, ap)
			continue
		}
		a, err := netip.ParseAddr(strings.Trim(item, "[]"))
		if err != nil {
			continue // GIE skips what names no endpoint
		}
		out = append(out, netip.AddrPortFrom(a, 0))
	}
	return out
}

// TestSelectTestEndpoints: header-based-testing-filter's selection, GIE's
// rules, over endpoints e0 10.0.0.1:8000, e1 10.0.0.1:8001, e2 10.0.0.2:8000,
// e3 [fd00::1]:3000.
func TestSelectTestEndpoints(t *testing.T) {
	mk := func(name, ap string) scheduler.EndpointState {
		e, err := scheduler.ParseEndpoint(ap)
		if err != nil {
			t.Fatal(err)
		}
		e.Name = name
		return scheduler.EndpointState{H: scheduler.NewHandle(e), Healthy: true}
	}
	eps := []scheduler.EndpointState{mk("e0", "10.0.0.1:8000"), mk("e1", "10.0.0.1:8001"), mk("e2", "10.0.0.2:8000"), mk("e3", "[fd00::1]:3000")}
	cases := []struct {
		header string
		want   []string
	}{
		{"", nil},                                        // absent or empty: none
		{"10.0.0.2", []string{"e2"}},                     // IP
		{"10.0.0.1", []string{"e1"}},                     // IP of two: the last, as GIE's map
		{"10.0.0.1:8000", []string{"e0"}},                // exact IP:port
		{"10.0.0.1:9999", nil},                           // no such port
		{"10.0.0.1:8000, 10.0.0.1:8001", []string{"e0"}}, // one per IP: the first named
		{"10.0.0.1:8001,10.0.0.1:8000", []string{"e1"}},
		{" 10.0.0.2 , 10.0.0.1:8000 ", []string{"e0", "e2"}},
		{"fd00::1", []string{"e3"}},
		{"[fd00::1]:3000,10.0.0.9", []string{"e3"}}, // unknown entries skipped
		{"[fd00::1]", []string{"e3"}},
		{"10.0.0.2,10.0.0.2", []string{"e2"}}, // duplicates once
		{"::ffff:10.0.0.2", []string{"e2"}},   // mapped IPv4
	}
	for _, tc := range cases {
		cands := []int32{0, 1, 2, 3}
		first := make([]int32, len(cands))
		var got []string
		for _, i := range selectTestEndpoints(eps, cands, parseSelection(t, tc.header), first) {
			got = append(got, eps[i].H.Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: kept %v, want %v", tc.header, got, tc.want)
		}
	}
}

// TestHeaderTestFilterThroughPick: the filter keeps what the request's
// TestEndpoints name; without the header it keeps every endpoint.
func TestHeaderTestFilterThroughPick(t *testing.T) {
	f := mustPlugin(t, HeaderTestFilterType).(*headerTestFilter)
	states := endpoints(time.Now(), make([]scheduler.Metrics, 3)...)
	got, err := kept(t, f, states, &scheduler.Request{Model: "m"})
	if err != nil || len(got) != 3 {
		t.Errorf("no header: kept %v (err %v), want all 3", got, err)
	}
	one := states[1].H
	got, err = kept(t, f, states, &scheduler.Request{Model: "m", HasTestEndpoints: true,
		TestEndpoints: []netip.AddrPort{netip.AddrPortFrom(one.Addr, 0)}})
	if err != nil || len(got) != 1 || got[0] != one.Name {
		t.Errorf("header naming %s: kept %v (err %v)", one.Name, got, err)
	}
	if _, err := kept(t, f, states, &scheduler.Request{Model: "m", HasTestEndpoints: true}); err == nil {
		t.Error("an empty header kept endpoints; want none (the pick fails, as in GIE)")
	}
}
