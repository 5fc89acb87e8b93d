package loadgen

import (
	"bufio"
	"io"
	"strconv"
	"sync"
	"time"
)

// csvHeader names the per-request CSV columns (times in seconds).
const csvHeader = "index,stage,group,planned_s,schedule_delay_s,status,error,ttft_s,e2e_s,tpot_s,ntpot_s,itl_mean_s,itl_max_s,input_tokens,output_tokens,tokens_estimated,chunks\n"

type csvWriter struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
	err error
}

func newCSVWriter(w io.Writer) *csvWriter {
	c := &csvWriter{w: bufio.NewWriterSize(w, 64<<10)}
	_, c.err = c.w.WriteString(csvHeader)
	return c
}

func appendSec(b []byte, d time.Duration, ok bool) []byte {
	if !ok {
		return append(b, ',')
	}
	b = strconv.AppendFloat(b, d.Seconds(), 'f', 6, 64)
	return append(b, ',')
}

func appendCSVString(b []byte, s string) []byte {
	needs := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ',' || c == '"' || c == '\n' || c == '\r' {
			needs = true
			break
		}
	}
	if !needs {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

func (c *csvWriter) write(r *Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	b := c.buf[:0]
	b = strconv.AppendInt(b, r.Index, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(r.Stage), 10)
	b = append(b, ',')
	b = appendCSVString(b, r.Group)
	b = append(b, ',')
	b = appendSec(b, r.Planned, true)
	b = appendSec(b, r.SchedDelay, true)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, ',')
	b = appendCSVString(b, r.ErrKind)
	b = append(b, ',')
	b = appendSec(b, r.TTFT, r.TTFT > 0)
	b = appendSec(b, r.E2E, true)
	tpot, ok := r.TPOT()
	b = appendSec(b, tpot, ok)
	ntpot, ok := r.NTPOT()
	b = appendSec(b, ntpot, ok)
	var sum, mx time.Duration
	for _, g := range r.ITLs {
		sum += g
		mx = max(mx, g)
	}
	if n := len(r.ITLs); n > 0 {
		b = appendSec(b, sum/time.Duration(n), true)
		b = appendSec(b, mx, true)
	} else {
		b = append(b, ',', ',')
	}
	b = strconv.AppendInt(b, int64(r.InputTokens), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(r.OutputTokens), 10)
	b = append(b, ',')
	b = strconv.AppendBool(b, r.Estimated)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(r.Chunks), 10)
	b = append(b, '\n')
	c.buf = b
	_, c.err = c.w.Write(b)
}

func (c *csvWriter) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}
