package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDirectSoak mixes, on a few connections at once, what the direct
// transport's locking has to survive together: routed requests, streams
// the proxy cancels in the middle of the body or after the pick, stalls the
// idle timer answers (408, written by the timer's goroutine while the
// connection goroutine reads), and a graceful stop under load. Bounded:
// 1,200 requests, then a graceful stop with 64 more in flight. Every routed
// request must succeed, every stall must get its 408, the stop must return,
// and nothing may stay open or in flight.
func TestDirectSoak(t *testing.T) {
	const (
		total   = 1200
		workers = 32
		conns   = 4
		idle    = 150 * time.Millisecond
	)
	e := startDirect(t, Options{RequestIdleTimeout: idle}, DirectOptions{})
	clients := make([]extprocv3.ExternalProcessorClient, conns)
	for i := range clients {
		clients[i] = extprocv3.NewExternalProcessorClient(e.grpcConn(t, nil))
	}
	body := benchBodies(1, 2<<10)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var next, routed, stalls, cancels atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				c := clients[(int(i)+w)%conns]
				var err error
				switch i % 20 {
				case 16, 17: // cancelled in the middle of the body
					err = soakCancel(ctx, c, body, false)
					cancels.Add(1)
				case 19: // cancelled after the pick, before reading the answers
					err = soakCancel(ctx, c, body, true)
					cancels.Add(1)
				case 18: // stalls: the idle timer answers 408
					err = soakStall(ctx, c, body)
					stalls.Add(1)
				default:
					err = envoyRequest(ctx, c, postHeaders("/v1/completions", len(body)), body)
					routed.Add(1)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d routed, %d stalls answered 408, %d cancelled", routed.Load(), stalls.Load(), cancels.Load())

	// A graceful stop with requests in flight: each either completes or is
	// refused before it started; none fails half-way.
	started := make(chan struct{}, 64)
	results := make(chan error, 64)
	for i := range 64 {
		go func() {
			started <- struct{}{}
			results <- envoyRequest(ctx, clients[i%conns], postHeaders("/v1/completions", len(body)), body)
		}()
	}
	for range 64 {
		<-started
	}
	stopped := make(chan struct{})
	go func() { e.d.GracefulStop(); close(stopped) }()
	completed := 0
	for range 64 {
		err := <-results
		switch {
		case err == nil:
			completed++
		case status.Code(err) == codes.Unavailable: // refused: the connection was going away before the stream began
		default:
			t.Errorf("a request in flight at the graceful stop: %v", err)
		}
	}
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("GracefulStop did not return within 15s of its streams ending")
	}
	t.Logf("graceful stop: %d of 64 in-flight requests completed, the rest refused", completed)
	e.waitIdle(t)
}

// soakCancel sends a request's headers and half its body (all of it with
// picked) and cancels the stream; with picked it first waits for the
// headers answer, so the pick has happened.
func soakCancel(ctx context.Context, c extprocv3.ExternalProcessorClient, body []byte, picked bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.Process(sctx)
	if err != nil {
		return err
	}
	if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil)); err != nil {
		return err
	}
	part := body[:len(body)/2]
	if picked {
		part = body
	}
	if err := s.Send(reqBodyMsg(part, picked)); err != nil {
		return err
	}
	if picked {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
	cancel()
	for { // answers already received may still be returned first
		if _, err := s.Recv(); err != nil {
			if status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
				return errors.New("soak: a cancelled stream: expected Canceled, found " + err.Error())
			}
			return nil
		}
	}
}

// soakStall sends the headers and half the body, then nothing: the answer
// must be a 408 from the idle timer; the stream then ends normally.
func soakStall(ctx context.Context, c extprocv3.ExternalProcessorClient, body []byte) error {
	s, err := c.Process(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(reqHeadersMsg(postHeaders("/v1/completions", len(body)), false, duplex, nil)); err != nil {
		return err
	}
	if err := s.Send(reqBodyMsg(body[:len(body)/2], false)); err != nil {
		return err
	}
	r, err := s.Recv()
	if err != nil {
		return err
	}
	if got := r.GetImmediateResponse().GetStatus().GetCode(); int(got) != 408 {
		return errors.New("soak: a stalled request: expected an immediate 408, found " + r.String())
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	if _, err := s.Recv(); err != io.EOF {
		return fmt.Errorf("soak: after the 408: expected the stream to end, found %v", err)
	}
	return nil
}
