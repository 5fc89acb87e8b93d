package extproc

import (
	"strconv"
	"sync/atomic"
	"time"
)

// Request-phase idle timing.
//
// Each pooled stream owns one timer, made once. It ticks every quarter of the
// idle timeout while a stream uses it, and is left to lapse (not re-armed)
// once its stream has left the request phase, so a busy server arms a timer
// about once per stream object per tick period, not once per request: timing
// costs no allocation, no clock read and no timer call per request in steady
// state. While the request phase is timed the handler goroutine holds st.mu
// whenever it is not waiting in Recv, and counts the messages it receives.
// The tick's callback takes st.mu, so it only ever sees the stream while the
// handler waits in Recv: a tick that finds no new message counts one idle
// tick, and after four in a row (the idle timeout) it ends the request. A
// stall is therefore answered between RequestIdleTimeout and 1.25 times it
// after the last message. The handler checks st.expired each time Recv
// returns.
//
// The request phase ends, and with it the timing, when the request is answered
// or picked (endIdle), except for a stream picked at its headers that still
// streams its body (STREAMED): that one is timed until the body ends, and on
// expiry only gives back its in-flight count.

// idleTicks is how many ticks without a message make the idle timeout.
const idleTicks = 4

// startIdle starts timing the request phase; the handler then holds st.mu.
func (st *stream) startIdle() {
	d := st.srv.idleTimeout
	if d <= 0 {
		return
	}
	if st.timer == nil {
		st.timer = time.AfterFunc(time.Hour, st.onIdle)
		st.timer.Stop()
	}
	st.mu.Lock()
	st.locked, st.track = true, true
	st.idleOn, st.expired = true, false
	st.msgs, st.seenMsgs, st.idle = 0, ^uint32(0), 0
	if !st.armed {
		st.armed = true
		st.timer.Reset(d / idleTicks)
	}
}

// waitUnlock is called by the handler before Recv: it lets the timer in.
func (st *stream) waitUnlock() {
	if st.locked {
		st.locked = false
		st.mu.Unlock()
	}
}

// lockExpired is called by the handler after Recv while timing: it takes st.mu
// back, counts the message and reports whether the timer ended the request
// meanwhile.
func (st *stream) lockExpired() bool {
	st.mu.Lock()
	st.locked = true
	st.msgs++
	return st.expired
}

// endIdle ends the timing (the request was answered or picked). The handler
// holds st.mu; it releases it before its next Recv. The timer lapses at its
// next tick.
func (st *stream) endIdle() {
	if st.track { // else the handler does not hold st.mu, and there is nothing to end
		st.idleOn, st.track = false, false
	}
}

// stopIdle ends the timing when the stream ends, so that a tick that is
// already running cannot touch the stream any more.
func (st *stream) stopIdle() {
	if !st.track && !st.locked {
		return
	}
	if !st.locked {
		st.mu.Lock()
	}
	st.idleOn, st.track, st.locked = false, false, false
	st.mu.Unlock()
}

// onIdle is the timer's callback (its own goroutine): one tick.
func (st *stream) onIdle() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.idleOn {
		st.armed = false // the stream left the request phase, or is pooled: lapse
		return
	}
	s := st.srv
	tick := s.idleTimeout / idleTicks
	if st.msgs != st.seenMsgs {
		st.seenMsgs, st.idle = st.msgs, 0
	} else {
		st.idle++
	}
	if st.idle < idleTicks {
		st.timer.Reset(tick)
		return
	}
	st.idleOn, st.armed = false, false
	if st.phase >= phResponse {
		// Picked at the headers, and the request body stalled: the request
		// goes on (its response is never timed), but it must not hold its
		// in-flight count for as long as the body stalls.
		st.release()
		return
	}
	// The handler waits in Recv and cannot touch the stream before it
	// gets st.mu back: answer the request here, and release its buffer.
	st.expired = true
	st.unbuffer()
	st.buf, st.body = nil, nil
	_, _ = st.fail(408, "request timed out: expected the next part of the request (headers, body or trailers) within "+
		s.idleTimeout.String()+", found nothing for "+(time.Duration(st.idle)*tick).String())
}

// buffer counts n more body bytes for this stream against
// Options.MaxBufferedBytes. It returns 0 when they fit, else the status to
// answer: 413 when this body alone is over the limit, 503 when all streams
// together would be.
func (st *stream) buffer(n int64) (code int, msg string) {
	s := st.srv
	if st.held+n > s.maxBuffered {
		return 413, "request body of at least " + strconv.FormatInt(st.held+n, 10) +
			" bytes is over the limit of " + strconv.FormatInt(s.maxBuffered, 10) + " request body bytes this picker buffers at once"
	}
	if total := s.buffered.Add(n); total > s.maxBuffered {
		s.buffered.Add(-n)
		return 503, "request bodies buffered by this picker would reach " + strconv.FormatInt(total, 10) +
			" bytes, over its limit of " + strconv.FormatInt(s.maxBuffered, 10) + " bytes: retry later"
	}
	st.held += n
	return 0, ""
}

// unbuffer gives back the stream's counted body bytes.
func (st *stream) unbuffer() {
	if st.held != 0 {
		st.srv.buffered.Add(-st.held)
		st.held = 0
	}
}

// logLimiter lets one log line through per second; the next line reports how
// many were left out meanwhile. It keeps a steady flow of failures (a client
// repeating a bad request, a pool without endpoints) from writing one line per
// request.
type logLimiter struct {
	next    atomic.Int64 // unix nanoseconds before which lines are skipped
	skipped atomic.Int64
}

// allow reports whether a line may be logged now, and how many were skipped
// since the last one.
func (l *logLimiter) allow() (ok bool, skipped int64) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(time.Second)) {
		l.skipped.Add(1)
		return false, 0
	}
	return true, l.skipped.Swap(0)
}
