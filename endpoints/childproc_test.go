package endpoints

import (
	"bufio"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startChild re-executes this test binary into the helper test named test
// (the helper-process pattern), with env added to its environment, so that a
// benchmark's servers run in another process and the benchmark's CPU time is
// the scraping side's alone. The child prints one address per line, then
// "ready"; startChild returns those addresses, the other lines it printed
// before "ready" (go test's own, or why a listener failed) and its pid. The
// child stops when its stdin closes, at the test's cleanup (killed after 10 s).
func startChild(tb testing.TB, test, env string) (addrs []netip.AddrPort, other []string, pid int) {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close() // the child's signal to stop
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
		ap, err := netip.ParseAddrPort(strings.TrimSpace(sc.Text()))
		if err != nil {
			other = append(other, sc.Text())
			continue
		}
		addrs = append(addrs, ap)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return addrs, other, cmd.Process.Pid
}
