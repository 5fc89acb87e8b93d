package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// probeTimeout bounds one ProbeEPP.
const probeTimeout = 2 * time.Second

// probeEvery is how long a probe's answer is reused for failed streams, so
// that a flood of failures costs one probe per interval.
const probeEvery = 2 * time.Second

// ProbeEPP says why a gateway configured with addr and useTLS cannot speak
// to epp, or "" when it sees nothing wrong: nothing listening, TLS expected
// (epp's --secure-serving defaults to true), or plaintext expected. It dials
// addr and attempts a TLS handshake, nothing more; it sends no ext_proc
// message.
func ProbeEPP(ctx context.Context, addr string, useTLS bool) string {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "nothing accepts connections at " + addr + " (" + err.Error() + "): is epp running, and is this its --grpc-port (default 9002)?"
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}) //nolint:gosec // a probe: only asks whether the peer speaks TLS
	herr := tc.HandshakeContext(ctx)
	switch {
	case herr == nil && !useTLS:
		return "epp at " + addr + " expects TLS (epp's --secure-serving defaults to true): try --epp-tls, or start epp with --secure-serving=false"
	case herr != nil && useTLS:
		var ne net.Error
		if errors.As(herr, &ne) && ne.Timeout() {
			return "epp at " + addr + " did not answer a TLS handshake within " + probeTimeout.String() + ": is it epp?"
		}
		return "epp at " + addr + " does not speak TLS (the handshake failed: " + herr.Error() + "): drop --epp-tls, or start epp with --secure-serving"
	}
	return ""
}

// eppHint returns ProbeEPP's answer for err when err says the connection to
// epp failed (gRPC Unavailable), reusing a recent answer; "" otherwise.
func (g *Gateway) eppHint(err error) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	g.probeMu.Lock()
	defer g.probeMu.Unlock()
	if time.Since(g.probeAt) < probeEvery {
		return g.probeHint
	}
	g.probeHint = ProbeEPP(context.Background(), g.cfg.EPP, g.cfg.EPPTLS)
	g.probeAt = time.Now()
	return g.probeHint
}
