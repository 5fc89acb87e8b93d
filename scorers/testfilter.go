package scorers

import (
	"net/netip"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guards: what the registry and config check, checked at compile time.
var (
	_ scheduler.Filter      = (*headerTestFilter)(nil)
	_ scheduler.CycleStater = (*headerTestFilter)(nil)
)

// HeaderTestFilterType is a filter of GIE's conformance tests: it keeps the
// endpoints the request's test-epp-endpoint-selection header names, a
// comma-separated list of "IP" or "IP:port" (IPv6 with or without
// brackets), so a test decides where each request goes. GIE's rules, which
// selectTestEndpoints follows: an "IP:port" entry names the endpoint with
// that address and port; an "IP" entry names the last candidate with that IP;
// entries that name no candidate are skipped; of several named endpoints
// sharing an IP only the one named first is kept; an absent or empty header
// keeps none (the pick fails). It takes no parameters.
//
// The ext_proc server parses the header into scheduler.Request.TestEndpoints.
const HeaderTestFilterType = "header-based-testing-filter"

type headerTestFilter struct {
	base
	slot int
}

// testFilterState is per-cycle scratch: for each candidate position, the
// first header entry that names it (-1: none).
type testFilterState struct{ first []int32 }

func registerHeaderTestFilter(r *scheduler.Registry) {
	r.MustRegister(HeaderTestFilterType, scheduler.Factory{
		Kind:  scheduler.KindFilter,
		Proto: (*headerTestFilter)(nil),
		Doc:   "GIE conformance tests: keeps the endpoints the test-epp-endpoint-selection header names",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &headerTestFilter{base: newBase(HeaderTestFilterType, name)}, nil
		},
	})
}

// SetSlot implements scheduler.Stateful.
func (f *headerTestFilter) SetSlot(slot int) { f.slot = slot }

// NewCycleState implements scheduler.CycleStater.
func (f *headerTestFilter) NewCycleState() any { return &testFilterState{} }

// testSelection returns the endpoints the request's test-epp-endpoint-selection
// header names, and whether the header was present.
func testSelection(r *scheduler.Request) ([]netip.AddrPort, bool) {
	return r.TestEndpoints, r.HasTestEndpoints
}

// Filter implements scheduler.Filter.
func (f *headerTestFilter) Filter(c *scheduler.Cycle, cands []int32) []int32 {
	sel, ok := testSelection(c.Req)
	if !ok {
		return cands
	}
	st := c.State(f.slot).(*testFilterState)
	if cap(st.first) < len(cands) {
		st.first = make([]int32, len(cands))
	}
	return selectTestEndpoints(c.Snap.Endpoints, cands, sel, st.first[:len(cands)])
}

// selectTestEndpoints keeps the candidates sel names, by GIE's rules (see
// HeaderTestFilterType); a port of 0 in sel means "any port". first is
// scratch of len(cands). The kept candidates are compacted to the front of
// cands, in candidate order; none are kept when sel names none.
func selectTestEndpoints(eps []scheduler.EndpointState, cands []int32, sel []netip.AddrPort, first []int32) []int32 {
	for i := range first {
		first[i] = -1
	}
	for j, s := range sel {
		a, named := s.Addr().Unmap(), -1
		for i, e := range cands {
			h := eps[e].H
			if h.Addr == a && (s.Port() == 0 || h.Port == s.Port()) {
				named = i // the last match, as GIE's lookup map keeps
			}
		}
		if named >= 0 && first[named] < 0 {
			first[named] = int32(j)
		}
	}
	// Of the named candidates sharing an IP, only the one named first stays.
	for i, fi := range first {
		if fi < 0 {
			continue
		}
		a := eps[cands[i]].H.Addr
		for k, fk := range first {
			if k != i && fk >= 0 && fk < fi && eps[cands[k]].H.Addr == a {
				first[i] = -2 // dropped; the one named first has the smallest index and stays
				break
			}
		}
	}
	out := cands[:0]
	for i, e := range cands {
		if first[i] >= 0 {
			out = append(out, e)
		}
	}
	return out
}
