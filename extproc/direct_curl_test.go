package extproc

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
)

// TestDirectCurl drives the direct transport with a second HTTP/2
// implementation besides Go's: curl's (libnghttp2, the codec Envoy long
// used), in cleartext with prior knowledge and over TLS with ALPN h2. A
// whole FULL_DUPLEX_STREAMED request goes out as one POST body; the answers
// are decoded from the response body and the status read from the trailers
// curl dumps with the headers. It needs curl built with HTTP/2 (.ci/run
// installs it).
func TestDirectCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("this test drives the server with curl built with HTTP/2 (libnghttp2), as .ci/run installs it; found none: %v", err)
	}
	if v, err := exec.Command(curl, "--version").Output(); err != nil || !bytes.Contains(v, []byte("HTTP2")) {
		t.Fatalf("expected curl with the HTTP2 feature (libnghttp2), found %q (%v)", v, err)
	}
	cert, _ := selfSignedCert(t)
	body := []byte(`{"model":"m","prompt":"` + strings.Repeat("curl ", 400) + `"}`)
	req := append(grpcMsg(t, reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil)),
		grpcMsg(t, reqBodyMsg(body, true))...)
	dir := t.TempDir()
	reqFile := filepath.Join(dir, "req")
	if err := os.WriteFile(reqFile, req, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  bool
		args []string
	}{
		{"h2c prior knowledge", false, []string{"--http2-prior-knowledge"}},
		{"TLS with ALPN h2", true, []string{"--http2", "--insecure"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			do := DirectOptions{}
			scheme := "http"
			if tc.tls {
				do.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				scheme = "https"
			}
			e := startDirect(t, Options{}, do)
			hdrFile, outFile := filepath.Join(dir, "hdr"), filepath.Join(dir, "out")
			args := append([]string{"-sS", "--max-time", "10", "-X", "POST",
				"-H", "content-type: application/grpc", "-H", "te: trailers",
				"--data-binary", "@" + reqFile, "-D", hdrFile, "-o", outFile,
				scheme + "://" + e.addr + processMethod}, tc.args...)
			if out, err := exec.Command(curl, args...).CombinedOutput(); err != nil {
				t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			hdr, err := os.ReadFile(hdrFile)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(hdr, []byte("HTTP/2 200")) || !bytes.Contains(hdr, []byte("grpc-status: 0")) {
				t.Fatalf("curl's header dump (headers and trailers):\n%s\nexpected HTTP/2 200 and grpc-status: 0", hdr)
			}
			out, err := os.ReadFile(outFile)
			if err != nil {
				t.Fatal(err)
			}
			var rs []*extprocv3.ProcessingResponse
			for len(out) > 0 {
				if len(out) < 5 || out[0] != 0 || int(binary.BigEndian.Uint32(out[1:])) > len(out)-5 {
					t.Fatalf("response body: expected gRPC messages, found % x", out[:min(len(out), 16)])
				}
				n := int(binary.BigEndian.Uint32(out[1:]))
				m := new(extprocv3.ProcessingResponse)
				if err := proto.Unmarshal(out[5:5+n], m); err != nil {
					t.Fatal(err)
				}
				rs = append(rs, m)
				out = out[5+n:]
			}
			if len(rs) < 2 || rs[0].GetRequestHeaders() == nil {
				t.Fatalf("answers %v: expected the headers answer, then the body", rs)
			}
			if hdr, md := destOf(rs[0], rs[0].GetRequestHeaders().GetResponse()); hdr == "" || hdr != md {
				t.Fatalf("headers answer %v: expected the same destination in the header and the metadata", rs[0])
			}
			var echo []byte
			for _, m := range rs[1:] {
				echo = append(echo, m.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse().GetBody()...)
			}
			if !bytes.Equal(echo, body) {
				t.Fatalf("echoed %d bytes, want the %d-byte body", len(echo), len(body))
			}
			e.waitIdle(t)
		})
	}
}
