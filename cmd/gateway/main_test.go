package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errb, nil); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, s := range []string{"FULL_DUPLEX_STREAMED", "-listen", "-epp", "-epp-tls", "-direct", "-epp-timeout", "-connect-timeout"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not mention %s", s)
		}
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "expected --epp host:port or --direct"},
		{[]string{"--epp", "127.0.0.1:9002", "--direct", "127.0.0.1:8000"}, "found both"},
		{[]string{"--direct", "127.0.0.1:8000", "--epp-tls"}, "--epp-tls: expected --epp"},
		{[]string{"--epp", "nohost"}, `--epp: expected ip:port, found "nohost"`},
		{[]string{"--direct", "127.0.0.1:8000,bad"}, `--direct: expected ip:port, found "bad"`},
		{[]string{"--epp", "127.0.0.1:9002", "--listen", "8080"}, `--listen: expected host:port, found "8080"`},
		{[]string{"--epp", "127.0.0.1:9002", "--epp-timeout", "0s"}, "--epp-timeout: expected a positive duration"},
		{[]string{"--epp", "127.0.0.1:9002", "--chunk-size", "0"}, "--chunk-size: expected 1.."},
		{[]string{"--epp", "127.0.0.1:9002", "stray"}, `unexpected argument "stray"`},
		{[]string{"--no-such-flag"}, "flag provided but not defined"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb, nil)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestServeDirect runs the command in direct mode on loopback, proxies one
// request and stops it like SIGTERM.
func TestServeDirect(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from upstream")
	}))
	defer up.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--direct", strings.TrimPrefix(up.URL, "http://")}, &out, &errb, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case code := <-done:
		t.Fatalf("exit %d: %s", code, errb.String())
	case <-time.After(5 * time.Second):
		t.Fatal("gateway did not start")
	}
	resp, err := http.Post("http://"+addr+"/v1/completions", "application/json", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello from upstream" {
		t.Errorf("proxied: %d %q", resp.StatusCode, b)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after shutdown: %s", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("gateway did not stop")
	}
	if !strings.Contains(out.String(), "gateway listening on http://"+addr) {
		t.Errorf("stdout %q lacks the listening line", out.String())
	}
}

func TestBalanceAndPathFlags(t *testing.T) {
	var out, errb bytes.Buffer
	run(context.Background(), []string{"--help"}, &out, &errb, nil)
	for _, s := range []string{"-balance", "least-request", "-paths", "/v1/responses", "try --epp-tls"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not mention %s", s)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--direct", "127.0.0.1:8000", "--balance", "fastest"}, `--balance: expected one of round-robin, random, least-request, found "fastest"`},
		{[]string{"--epp", "127.0.0.1:9002", "--balance", "random"}, "--balance: applies to --direct only"},
		{[]string{"--direct", "127.0.0.1:8000", "--paths", "v1/x"}, "absolute paths"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb, nil)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestServeWarnsAboutEPP: started against a port where nothing listens, the
// gateway still serves but says why it cannot speak to epp.
func TestServeWarnsAboutEPP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var out bytes.Buffer
	errb := &syncBuffer{}
	go func() { done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--epp", dead}, &out, errb, ready) }()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(errb.String(), "cannot speak to epp: nothing accepts connections at "+dead) {
		if time.Now().After(deadline) {
			t.Fatalf("stderr %q: no warning about epp", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
