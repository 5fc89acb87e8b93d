package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHelpAndList(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help: exit %d: %s", code, errb.String())
	}
	for _, s := range []string{"-scenario", "-strategies", "-output", "-repeats", "-list", "bench serve",
		"round-robin", "least-request", "epp-gie-default", "external=HOST:PORT", "default ", "burst", "mixed", "ci "} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not mention %q", s)
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"--list"}, &out, &errb); code != 0 {
		t.Fatalf("--list: exit %d", code)
	}
	for _, s := range []string{"Scenarios", "default", "8 × llama-3.1-70b on mi300x", "Strategies", "epp=FILE"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--list does not mention %q:\n%s", s, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"serve", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "-strategy") {
		t.Errorf("serve --help: exit %d: %s", code, out.String())
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "nope"}, `scenario "nope": expected one of burst, ci, default, mixed`},
		{[]string{"--strategies", "round-robin,fastest"}, `--strategies: unknown strategy "fastest": expected one of round-robin, random, least-request, epp-gie-default, epp, epp-gpu-aware, external=HOST:PORT, epp=FILE`},
		{[]string{"--repeats", "0"}, "--repeats: expected 1..100"},
		{[]string{"stray"}, `unexpected argument "stray"`},
		{[]string{"--no-such"}, "flag provided but not defined"},
		{[]string{"serve", "--strategy", "nope"}, `--strategy: unknown strategy "nope"`},
		{[]string{"serve", "--scenario", "nope"}, `scenario "nope"`},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestServe starts the ci scenario's stack with epp, sends the printed
// request through the gateway and stops it.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--scenario", "ci", "--listen", "127.0.0.1:0"}, pw, &errb)
		pw.Close()
	}()
	var (
		mu   sync.Mutex
		text strings.Builder
	)
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		re := regexp.MustCompile(`curl -sN (http://127\.0\.0\.1:\d+)`)
		for sc.Scan() {
			mu.Lock()
			text.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
	}()
	var url string
	select {
	case url = <-urlc:
	case code := <-done:
		t.Fatalf("serve exited %d: %s", code, errb.String())
	case <-time.After(20 * time.Second):
		t.Fatal("serve printed no curl line")
	}
	resp, err := http.Post(url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":5,"messages":[{"role":"user","content":"Hello!"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "chat.completion") {
		t.Errorf("through the gateway: %d %s", resp.StatusCode, b)
	}
	if resp, err := http.Post(url+"/admin/crash", "", nil); err != nil || resp.StatusCode != 404 {
		t.Errorf("admin path through the gateway: %v %v, want 404", resp, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{"strategy epp", "picker:  ext_proc at 127.0.0.1:", "fleet:"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("serve output lacks %q:\n%s", s, text.String())
		}
	}
}
