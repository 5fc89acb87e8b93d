package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fastepp/fastepp/extproc"
)

func directGateway(t *testing.T, balance string, addrs ...string) (*Gateway, string) {
	t.Helper()
	gw, err := New(Config{Direct: addrs, Balance: balance})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return gw, serveGateway(t, gw)
}

func TestDirectRandomSpreads(t *testing.T) {
	ups := []*upstream{newUpstream(t), newUpstream(t), newUpstream(t)}
	gw, url := directGateway(t, BalanceRandom, ups[0].addr, ups[1].addr, ups[2].addr)
	if gw.Balance() != BalanceRandom {
		t.Fatalf("Balance() = %q", gw.Balance())
	}
	const n = 300
	for i := range n {
		if resp, got := post(t, url+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"%d"}`, i)); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
	}
	// Uniform: each gets 100 ± a wide margin (p of failing ≈ 1e-9); round
	// robin would give exactly 100 each, so also check the counts differ.
	var hits []int64
	for _, u := range ups {
		hits = append(hits, u.hits.Load())
		if h := u.hits.Load(); h < 50 || h > 150 {
			t.Errorf("random: hits %v, want about %d each", hits, n/3)
		}
	}
	if hits[0] == 100 && hits[1] == 100 && hits[2] == 100 {
		t.Errorf("random: hits %v look like round-robin", hits)
	}
}

// TestDirectLeastRequestAvoidsBusy holds a request open on one endpoint and
// checks that least-request sends new ones to the other, then that requests
// held on both endpoints end up evenly spread by in-flight count.
func TestDirectLeastRequestAvoidsBusy(t *testing.T) {
	a, b := newUpstream(t), newUpstream(t)
	release := make(chan struct{})
	hold := func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write([]byte(`{"ok":true}`))
	}
	a.setHandler(hold)
	gw, url := directGateway(t, BalanceLeastRequest, a.addr, b.addr)
	var wg sync.WaitGroup
	released := false
	defer func() {
		if !released {
			close(release)
		}
		wg.Wait()
	}()
	send := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model":"m"}`))
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	total := func() int64 { return a.hits.Load() + b.hits.Load() }
	waitHits := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for total() < n {
			if time.Now().After(deadline) {
				t.Fatalf("upstreams got %d requests, want %d", total(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Until a holds one, requests that land on b finish at once.
	for a.hits.Load() == 0 {
		n := total() // before sending: the request may land before waitHits reads it
		send()
		waitHits(n + 1)
		time.Sleep(5 * time.Millisecond) // let b's response finish
	}
	before := b.hits.Load()
	for i := range 50 {
		if resp, got := post(t, url+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"%d"}`, i)); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
		// The client can hold the whole answer a moment before the gateway
		// counts the request done: wait for that, as a next request would
		// otherwise see b still busy and tie.
		settle(t, gw, []int64{1, 0})
	}
	if got := b.hits.Load() - before; got != 50 {
		t.Errorf("least-request: idle endpoint got %d of 50 while the other had one in flight, want all", got)
	}
	if in := gw.DirectInflight(); in[0] != 1 || in[1] != 0 {
		t.Errorf("in flight %v, want [1 0]", in)
	}
	// Now both hold: 9 more requests, one at a time, split 5/5 with the
	// held one (random would split them evenly only about a quarter of the time).
	b.setHandler(hold)
	for range 9 {
		n := total()
		send()
		waitHits(n + 1) // the gateway counts a request in flight before the upstream sees it
	}
	if in := gw.DirectInflight(); in[0] != 5 || in[1] != 5 {
		t.Errorf("in flight %v, want [5 5]", in)
	}
	close(release)
	released = true
	wg.Wait()
	settle(t, gw, []int64{0, 0})
}

// settle waits (up to 2 s) for the gateway's in-flight counts to be want:
// a response can reach the client a moment before the gateway counts it done.
func settle(t *testing.T, gw *Gateway, want []int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		in := gw.DirectInflight()
		if slices.Equal(in, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight %v, want %v", in, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDirectLeastRequestBalances: with equal endpoints and sequential
// requests (nothing in flight), P2C breaks ties at random and spreads.
func TestDirectLeastRequestBalances(t *testing.T) {
	ups := []*upstream{newUpstream(t), newUpstream(t), newUpstream(t), newUpstream(t)}
	gw, url := directGateway(t, BalanceLeastRequest, ups[0].addr, ups[1].addr, ups[2].addr, ups[3].addr)
	for i := range 200 {
		if resp, got := post(t, url+"/v1/completions", fmt.Sprintf(`{"model":"m","prompt":"%d"}`, i)); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
	}
	for i, u := range ups {
		if h := u.hits.Load(); h < 20 || h > 80 {
			t.Errorf("endpoint %d: %d of 200 requests, want about 50", i, h)
		}
	}
	settle(t, gw, []int64{0, 0, 0, 0})
}

func TestPathFilter(t *testing.T) {
	up := newUpstream(t)
	_, url := directGateway(t, "", up.addr)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/v1/completions", 200},
		{"POST", "/v1/chat/completions?stream=false", 200},
		{"GET", "/v1/models", 200},
		{"POST", "/v1/embeddings", 200},
		{"POST", "/v1/responses", 200},
		{"GET", "/health", 200},
		{"POST", "/admin/crash?restart_after=5s", 404},
		{"GET", "/metrics", 404},
		{"GET", "/", 404},
		{"POST", "/v1/completions/", 404},
		{"GET", "/v1/../admin/faults", 404},
	} {
		before := up.hits.Load()
		req, _ := http.NewRequest(tc.method, url+tc.path, strings.NewReader(`{"model":"m"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body strings.Builder
		_, _ = fmt.Fprint(&body, resp.Header.Get("Content-Type"))
		resp.Body.Close()
		forwarded := up.hits.Load() - before
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
		if (tc.want == 200) != (forwarded == 1) {
			t.Errorf("%s %s: forwarded %d times", tc.method, tc.path, forwarded)
		}
	}
	// The 404 says which paths are forwarded, in the OpenAI error shape.
	resp, got := post(t, url+"/admin/crash", "")
	if resp.StatusCode != 404 || !strings.Contains(got, `"error"`) || !strings.Contains(got, "/v1/chat/completions") {
		t.Errorf("404 body %q", got)
	}
	// Custom paths; and the filter applies in epp mode too (epp never sees it).
	gw2, err := New(Config{Direct: []string{up.addr}, Paths: []string{"/custom"}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw2.Close()
	url2 := serveGateway(t, gw2)
	if resp, _ := post(t, url2+"/custom", "{}"); resp.StatusCode != 200 {
		t.Errorf("custom path: %d", resp.StatusCode)
	}
	if resp, _ := post(t, url2+"/v1/completions", "{}"); resp.StatusCode != 404 {
		t.Errorf("path outside a custom list: %d, want 404", resp.StatusCode)
	}
	s := newStack(t, nil, up.addr)
	if resp, _ := post(t, s.url+"/admin/crash", ""); resp.StatusCode != 404 || s.ep.Open() != 0 {
		t.Errorf("epp mode: /admin/crash answered %d", resp.StatusCode)
	}
}

func TestBalanceConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Direct: []string{"127.0.0.1:1"}, Balance: "fastest"}, `expected one of round-robin, random, least-request, found "fastest"`},
		{Config{EPP: "127.0.0.1:1", Balance: BalanceRandom}, "direct mode only"},
		{Config{Direct: []string{"127.0.0.1:1"}, Paths: []string{}}, "at least one path"},
		{Config{Direct: []string{"127.0.0.1:1"}, Paths: []string{"v1/completions"}}, "absolute paths"},
	} {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "epp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// eppServer serves a real ext_proc server (no endpoints: it answers 503)
// over TLS or plaintext on loopback.
func eppServer(t *testing.T, useTLS bool) string {
	t.Helper()
	s := newStack(t, nil) // for its scheduler; its own listener is unused here
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := extproc.GRPCServerOptions(0)
	if useTLS {
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})))
	}
	g := grpc.NewServer(opts...)
	s.ep.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestEPPMismatchSaysWhy: a plaintext gateway in front of a TLS epp (epp's
// default) and the reverse get a 500 that says what to change, and
// ProbeEPP says it at start-up.
func TestEPPMismatchSaysWhy(t *testing.T) {
	tlsAddr, plainAddr := eppServer(t, true), eppServer(t, false)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for _, tc := range []struct {
		name   string
		addr   string
		useTLS bool
		want   string // "" = works (epp answers 503: no endpoints)
	}{
		{"plaintext to TLS", tlsAddr, false, "expects TLS (epp's --secure-serving defaults to true): try --epp-tls"},
		{"TLS to plaintext", plainAddr, true, "does not speak TLS"},
		{"nothing listening", deadAddr, false, "nothing accepts connections at " + deadAddr},
		{"TLS to TLS", tlsAddr, true, ""},
		{"plaintext to plaintext", plainAddr, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProbeEPP(context.Background(), tc.addr, tc.useTLS); !strings.Contains(got, tc.want) || (tc.want == "") != (got == "") {
				t.Errorf("ProbeEPP: %q, want %q", got, tc.want)
			}
			gw, err := New(Config{EPP: tc.addr, EPPTLS: tc.useTLS, EPPTimeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Close()
			resp, got := post(t, serveGateway(t, gw)+"/v1/completions", `{"model":"m","prompt":"x"}`)
			if tc.want == "" {
				if resp.StatusCode != 503 {
					t.Errorf("matching TLS setting: %d %q, want epp's 503 (empty pool)", resp.StatusCode, got)
				}
				return
			}
			if resp.StatusCode != 500 || !strings.Contains(got, tc.want) {
				t.Errorf("%d %q, want 500 saying %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}
