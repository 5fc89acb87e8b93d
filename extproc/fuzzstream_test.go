package extproc

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// FuzzStream drives the state machine with arbitrary message sequences: it
// must never reach its panic guard and never leave a request in flight.
func FuzzStream(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4}, []byte(`{"model":"m","prompt":"x"}`))
	f.Add([]byte{0x10, 1, 1, 2, 4, 4}, []byte(`{"model":"m","messages":[{"content":"hi"}]}`))
	f.Add([]byte{0x21, 1, 5, 3, 6}, []byte(`not json`))
	f.Add([]byte{0x31, 8, 1, 2}, []byte(`{"model":"m"}`))
	f.Add([]byte{0x42, 0, 1, 3, 4, 6, 7}, []byte(`{"model":"m","prompt":[1,2]}`))
	var logs bytes.Buffer
	p := newPool(f, nil, 3)
	srv, err := New(p.sched, Options{
		MaxBodyBytes: 64,
		Logger:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		f.Fatal(err)
	}
	modes := []filterv3.ProcessingMode_BodySendMode{
		filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_BUFFERED,
		filterv3.ProcessingMode_BUFFERED_PARTIAL, filterv3.ProcessingMode_STREAMED, filterv3.ProcessingMode_NONE,
	}
	f.Fuzz(func(t *testing.T, script []byte, body []byte) {
		if len(script) == 0 {
			return
		}
		var pc *extprocv3.ProtocolConfiguration
		if m := script[0] >> 4; int(m) < len(modes) {
			pc = protocol(modes[m], modes[int(script[0]&3)%len(modes)])
		}
		var msgs []*extprocv3.ProcessingRequest
		half := len(body) / 2
		for i, op := range script[1:] {
			var m *extprocv3.ProcessingRequest
			switch op % 9 {
			case 0:
				m = reqHeadersMsg(postHeaders("/v1/chat/completions", len(body), HeaderModelRewrite, "r"), false, nil, nil)
			case 1:
				m = reqHeadersMsg(postHeaders("/v1/completions", len(body)), op&0x10 != 0, nil, subsetMD(p.handles[0].HostPort()))
			case 2:
				m = reqBodyMsg(body[:half], false)
			case 3:
				m = reqBodyMsg(body[half:], true)
			case 4:
				m = respHeadersMsg(hdrs(":status", "200"), op&0x10 != 0)
			case 5:
				m = respBodyMsg(body, op&0x10 != 0)
			case 6:
				m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{}}
			case 7:
				m = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{}}
			case 8:
				m = &extprocv3.ProcessingRequest{}
			}
			if i == 0 {
				m.ProtocolConfig = pc
			}
			msgs = append(msgs, m)
		}
		fs := &fakeStream{ctx: context.Background(), in: msgs}
		if err := srv.Process(fs); err != nil {
			t.Fatal(err)
		}
		if logs.Len() != 0 {
			t.Fatalf("panic guard fired: %s", logs.String())
		}
		if p.inflight() != 0 || srv.Open() != 0 {
			t.Fatalf("leak: in-flight %d, open streams %d", p.inflight(), srv.Open())
		}
	})
}
