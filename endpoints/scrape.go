package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/fastepp/fastepp/scheduler"
)

// maxPageBytes bounds one metrics page (a vLLM page is ~20 KB).
const maxPageBytes = 16 << 20

// NewHTTPClient returns the keep-alive client scrapers use when Options.Client
// is nil for what the plain-http fast path (rawGet) leaves to net/http's
// Transport (https, user-info URLs, redirects): no proxy, no compression
// (loopback and pod networks are cheap, gzip is not), bounded
// dial/header/total times, and no cap on idle connections across hosts
// (MaxIdleConns 0: one per endpoint stays open, at any pool size).
// insecureSkipVerify skips certificate verification on https scrapes.
func NewHTTPClient(timeout time.Duration, insecureSkipVerify bool) *http.Client {
	d := &net.Dialer{Timeout: min(timeout, 2*time.Second), KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:           d.DialContext,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   min(timeout, 2*time.Second),
			ResponseHeaderTimeout: timeout,
			DisableCompression:    true,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: insecureSkipVerify}, // the operator's choice (metrics-data-source)
		},
	}
}

// scraper fetches and parses one endpoint's metrics page. It keeps its
// request, read buffer, parser and accumulator across scrapes, so a steady
// scrape allocates only what net/http does.
type scraper struct {
	h       *scheduler.Handle
	url     string
	eng     *engine
	engErr  error
	client  *http.Client
	req     *http.Request
	raw     *rawGet // plain-http fast path (useRaw); nil: client
	ctx     context.Context
	reqErr  error
	buf     []byte
	parser  pageParser
	acc     accumulator
	missing []string // core families last reported missing (logged on change)
}

// newScraper prepares the scraper of t; tbl holds the engines sc's labels
// may name (tblErr, when the configured engines are invalid, fails every
// scrape with that error).
func newScraper(ctx context.Context, h *scheduler.Handle, t Target, sc ScrapeConfig, tbl *engineTable, tblErr error, client *http.Client) *scraper {
	s := &scraper{h: h, url: sc.URL(t), client: client, ctx: ctx}
	if tblErr != nil {
		s.engErr = tblErr
	} else {
		s.eng, s.engErr = sc.engineFor(tbl, t.Labels)
	}
	s.req, s.reqErr = http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if s.reqErr == nil {
		s.req.Header.Set("Accept", "text/plain; version=0.0.4")
	}
	return s
}

// scrape takes one sample of the endpoint. On success the returned metrics
// carry UpdatedAt and InflightAtScrape.
func (s *scraper) scrape() (scheduler.Metrics, error) {
	var m scheduler.Metrics
	if s.engErr != nil {
		return m, s.engErr
	}
	if s.reqErr != nil {
		return m, fmt.Errorf("metrics URL %q: %w", s.url, s.reqErr)
	}
	// Read before the request: what is dispatched from now on may or may not
	// be in the page, and counting it twice is the safe side.
	m.InflightAtScrape = s.h.Inflight()
	page, status, readErr, err := s.fetch()
	if err != nil {
		return m, err
	}
	if status != "" {
		return m, fmt.Errorf("GET %s: expected HTTP 200, found %s", s.url, status)
	}
	if readErr != nil {
		return m, fmt.Errorf("GET %s: reading the page: %w", s.url, readErr)
	}
	m.UpdatedAt = time.Now()
	if err := s.parser.parse(page, s.eng, &s.acc); err != nil {
		return m, fmt.Errorf("GET %s: %w", s.url, err)
	}
	if !s.acc.foundCore() {
		return m, fmt.Errorf("GET %s: expected %s metrics (%s), found none of them in %d bytes; is the engine label right?",
			s.url, s.eng.name, strings.Join(s.acc.missing(), ", "), len(page))
	}
	s.acc.fill(&m)
	return m, nil
}

// fetch GETs the page into s.buf and returns it with the response's status
// ("" for 200) and the error reading the body; or no status and why the
// request failed.
func (s *scraper) fetch() (page []byte, status string, readErr, err error) {
	if s.raw != nil {
		s.buf, status, err = s.raw.get(s.ctx, s.buf)
		switch {
		case err == nil && status == "":
			return s.buf, "", nil, nil
		case err == nil:
			return nil, status, nil, nil
		case errors.Is(err, errPageTooLarge):
			return nil, "", err, nil
		case err != errUseNetHTTP:
			return nil, "", nil, &url.Error{Op: "Get", URL: s.url, Err: err}
		}
		// A redirect: net/http from now on.
		s.raw.close()
		s.raw = nil
	}
	resp, err := s.client.Do(s.req)
	if err != nil {
		return nil, "", nil, err
	}
	s.buf, readErr = readPage(resp.Body, s.buf[:0])
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.Status, nil, nil
	}
	return s.buf, "", readErr, nil
}

// useRaw switches s to the plain-http fast path (rawGet) when its URL allows
// it; the client must be one NewHTTPClient made with the same timeout.
func (s *scraper) useRaw(timeout time.Duration) {
	if s.reqErr == nil {
		s.raw = newRawGet(s.ctx, s.req.URL, s.req.Header.Get("Accept"), timeout)
	}
}

// close releases the fast path's connection (net/http's idle connections
// belong to the client).
func (s *scraper) close() {
	if s.raw != nil {
		s.raw.close()
	}
}

// missingChanged reports the core families the last page lacked when that
// set differs from the previous report.
func (s *scraper) missingChanged() ([]string, bool) {
	cur := s.acc.missing()
	if slices.Equal(cur, s.missing) {
		return nil, false
	}
	s.missing = cur
	return cur, true
}

var errPageTooLarge = fmt.Errorf("expected a metrics page under %d bytes, found more", maxPageBytes)

// readPage reads r into b (reusing its capacity).
func readPage(r io.Reader, b []byte) ([]byte, error) {
	if cap(b) == 0 {
		b = make([]byte, 0, 32<<10)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > maxPageBytes {
			return b, errPageTooLarge
		}
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}
