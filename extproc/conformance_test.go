package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fastepp/fastepp/config"
)

// TestConformancePlugins: GIE's conformance-test plugins work through a real
// stream: header-based-testing-filter routes where test-epp-endpoint-selection
// says, and destination-endpoint-served-verifier writes the served endpoint
// (or why it cannot) into x-conformance-test-served-endpoint.
func TestConformancePlugins(t *testing.T) {
	l, err := config.Load([]byte(`plugins:
- type: header-based-testing-filter
- type: queue-scorer
- type: destination-endpoint-served-verifier
schedulingProfiles:
- name: default
  plugins: [{pluginRef: header-based-testing-filter}, {pluginRef: queue-scorer}]
`), config.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 4, l.Plan, Options{})
	eps := f.pool.sched.Snapshot().Endpoints
	for i := 0; i < 4; i++ {
		want := eps[i].H.HostPort()
		s := f.open(t)
		hr, _ := roundTrip(t, s, "/v1/completions", []byte(`{"model":"m","prompt":"p"}`), 0,
			HeaderTestEndpointSelection, eps[i].H.Addr.String())
		if got, _ := destOf(hr, hr.GetRequestHeaders().GetResponse()); got != want {
			t.Errorf("selection %s: routed to %s", want, got)
		}
		// The proxy reports where the request went (or not).
		var md *corev3.Metadata
		wantHdr := "fail: missing envoy lb metadata"
		if i%2 == 0 {
			st, _ := structpb.NewStruct(map[string]any{ServedKey: want})
			md = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{MetadataNamespaceLB: st}}
			wantHdr = want
		}
		msg := respHeadersMsg(hdrs(":status", "200"), false)
		msg.MetadataContext = md
		if err := s.Send(msg); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got, ok := headerOf(r.GetResponseHeaders().GetResponse(), "x-conformance-test-served-endpoint")
		if !ok || got != wantHdr {
			t.Errorf("served header %q (%v), want %q", got, ok, wantHdr)
		}
		s.CloseSend()
		waitIdle(t, f.srv, f.pool)
	}
}
