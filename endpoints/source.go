package endpoints

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/fastepp/fastepp/scheduler"
)

// Target is one endpoint a Source reports: its identity and where its
// metrics are scraped.
type Target struct {
	scheduler.Endpoint
	// MetricsURL is the metrics page; empty means the pool's ScrapeConfig
	// decides (default http://ip:port/metrics).
	MetricsURL string
}

// URL returns the metrics URL to scrape under the default ScrapeConfig.
func (t Target) URL() string { return DefaultScrapeConfig().URL(t) }

// sameEndpoint reports whether a and b describe the same endpoint identity
// (a Handle carries the Endpoint, so a change here needs a new Handle).
func sameEndpoint(a, b scheduler.Endpoint) bool {
	return a.Name == b.Name && a.Namespace == b.Namespace && a.Addr == b.Addr &&
		a.Port == b.Port && maps.Equal(a.Labels, b.Labels)
}

// SameTargets reports whether a and b list the same targets in the same
// order: the same endpoint identities and metrics URLs. Sources use it to
// report a list only when it changed.
func SameTargets(a, b []Target) bool {
	return slices.EqualFunc(a, b, func(x, y Target) bool {
		return sameEndpoint(x.Endpoint, y.Endpoint) && x.MetricsURL == y.MetricsURL
	})
}

// Source discovers the pool's endpoints.
type Source interface {
	// Run calls update with the complete list of targets once it is known and
	// again whenever it changes, until ctx is done. update is never called
	// concurrently and must not retain the slice. Run returns nil when ctx
	// ends, or an error when discovery cannot go on.
	Run(ctx context.Context, update func([]Target)) error
}

// Static is a fixed list of targets.
type Static []Target

// Run reports the list once and waits for ctx.
func (s Static) Run(ctx context.Context, update func([]Target)) error {
	update(s)
	<-ctx.Done()
	return nil
}

// ParseStatic parses the --endpoints flag: "ip:port,ip:port,..." (IPv6 in
// brackets). Blanks around entries are ignored; duplicates are errors.
func ParseStatic(list string) (Static, error) {
	var out Static
	seen := map[string]bool{}
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, fmt.Errorf("--endpoints entry %d: expected ip:port, found an empty entry in %q", i+1, list)
		}
		e, err := scheduler.ParseEndpoint(s)
		if err != nil {
			return nil, fmt.Errorf("--endpoints entry %d: %w", i+1, err)
		}
		e.Name = e.HostPort()
		if seen[e.Name] {
			return nil, fmt.Errorf("--endpoints entry %d: expected each ip:port once, found %s again", i+1, e.Name)
		}
		seen[e.Name] = true
		out = append(out, Target{Endpoint: e})
	}
	return out, nil
}

// MaxTargetsFileBytes bounds an endpoints file. A list of a thousand
// endpoints with labels is well under 1 MiB; a larger file is a mistake
// (parsing 7 MB of YAML takes a core-second and hundreds of MB).
const MaxTargetsFileBytes = 4 << 20

// FileSource watches a YAML or JSON file holding a list of
// {address, port, metricsURL?, labels?, name?} and reports it whenever its
// content changes. Every Poll it compares the file's size, modification time
// and identity with the last read, and reads it only when one differs (or the
// modification was too recent to trust); a read whose bytes hash like the
// last parsed ones is not parsed again. A file that cannot be read or parsed,
// or is over MaxTargetsFileBytes, keeps the last good list; each distinct
// error is logged once and available from Err until a good version appears.
type FileSource struct {
	Path string
	// Poll is how often the file is checked (default 1s).
	Poll time.Duration
	// Logger receives one line per change or new error (default slog.Default()).
	Logger *slog.Logger
	// Scrape is the pool's scrape configuration: engine labels in the file
	// are checked against its engines and engine label key (zero value: the
	// defaults).
	Scrape ScrapeConfig

	mu  sync.Mutex
	err error
}

// Err returns the error of the last check (nil when the file is good).
func (f *FileSource) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// maxLoggedErrors bounds the set of distinct errors remembered as logged.
const maxLoggedErrors = 64

// Run implements Source.
func (f *FileSource) Run(ctx context.Context, update func([]Target)) error {
	poll := f.Poll
	if poll <= 0 {
		poll = time.Second
	}
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	var (
		w        fileWatch
		haveGood bool
		logged   = map[string]bool{} // distinct errors logged since the last good version
	)
	parse := func(data []byte) ([]Target, error) { return f.Scrape.ParseTargets(data, f.Path) }
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		targets, changed, err := w.check(f.Path, parse)
		if changed {
			haveGood = true
			clear(logged)
			log.Info("endpoints file loaded", "path", f.Path, "endpoints", len(targets))
			update(targets)
		}
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		if err != nil && !logged[err.Error()] {
			if len(logged) >= maxLoggedErrors {
				clear(logged)
			}
			logged[err.Error()] = true
			if haveGood {
				log.Error("endpoints file rejected; keeping the last good list", "path", f.Path, "err", err)
			} else {
				log.Error("endpoints file rejected; no endpoints yet", "path", f.Path, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// racyWindow: a file modified less than this before it was read may change
// again without its size or modification time changing (coarse file-system
// timestamps), so it is read again until the modification is older.
const racyWindow = 2 * time.Second

// fileSeed seeds the content hashes of watched files.
var fileSeed = maphash.MakeSeed()

// fileWatch remembers what a FileSource last read and parsed, so that an
// unchanged file costs one stat per poll.
type fileWatch struct {
	info   os.FileInfo // stat of the last read
	readAt time.Time
	parsed bool   // sum and result are set
	sum    uint64 // hash of the bytes last parsed
	result error  // their parse error (nil: they were good)
	reads  int    // reads so far (tests)
	parses int    // parses so far (tests)
}

// check looks at the file. It returns the targets and changed = true when
// content not seen before parsed well; otherwise the error of the file as it
// is now (nil when it is unchanged and good).
func (w *fileWatch) check(path string, parse func([]byte) ([]Target, error)) ([]Target, bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		w.info = nil
		return nil, false, fmt.Errorf("endpoints file: %w", err)
	}
	if w.info != nil && fi.Size() == w.info.Size() && fi.ModTime().Equal(w.info.ModTime()) &&
		os.SameFile(fi, w.info) && w.readAt.Sub(fi.ModTime()) > racyWindow {
		return nil, false, w.result // unchanged since the last read
	}
	data, err := readBounded(path)
	if err != nil {
		w.info = nil
		return nil, false, err
	}
	w.reads++
	w.info, w.readAt = fi, time.Now()
	sum := maphash.Bytes(fileSeed, data)
	if w.parsed && sum == w.sum {
		return nil, false, w.result
	}
	targets, err := parse(data)
	w.parses++
	w.parsed, w.sum, w.result = true, sum, err
	if err != nil {
		return nil, false, err
	}
	return targets, true, nil
}

// readBounded reads an endpoints file of at most MaxTargetsFileBytes.
func readBounded(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("endpoints file: %w", err)
	}
	defer fh.Close()
	tooBig := func(n int64) error {
		return fmt.Errorf("endpoints file %s: expected at most %d bytes (%d MiB), found %d bytes; the file is not read",
			path, MaxTargetsFileBytes, MaxTargetsFileBytes>>20, n)
	}
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("endpoints file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("endpoints file %s: expected a regular file, found %s", path, fi.Mode().Type())
	}
	if fi.Size() > MaxTargetsFileBytes {
		return nil, tooBig(fi.Size())
	}
	data, err := io.ReadAll(io.LimitReader(fh, MaxTargetsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("endpoints file: %w", err)
	}
	if len(data) > MaxTargetsFileBytes {
		return nil, tooBig(int64(len(data))) // it grew while being read
	}
	return data, nil
}

// ReadTargetsFile reads and parses an endpoints file (see ParseTargets)
// under the default scrape configuration.
func ReadTargetsFile(path string) ([]Target, error) {
	return DefaultScrapeConfig().ReadTargetsFile(path)
}

// ReadTargetsFile reads and parses an endpoints file, checking engine labels
// against c's engines (see ScrapeConfig.ParseTargets).
func (c ScrapeConfig) ReadTargetsFile(path string) ([]Target, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	return c.ParseTargets(data, path)
}

var knownFields = "address, port, metricsURL, labels, name"

// ParseTargets parses an endpoints file: a YAML or JSON list of objects with
// address (an IP), port (1..65535), and optionally metricsURL (http or https
// URL), labels (string map) and name (defaults to ip:port). Unknown fields,
// duplicates and bad values (an engine label naming no engine) are errors
// naming the file, line and field. "[]" is an empty pool; an empty file is
// an error (likely a half-written file).
func ParseTargets(data []byte, file string) ([]Target, error) {
	return DefaultScrapeConfig().ParseTargets(data, file)
}

// ParseTargets is the package's ParseTargets with engine labels checked
// against c's engine label key and engines.
func (c ScrapeConfig) ParseTargets(data []byte, file string) ([]Target, error) {
	table, err := c.engineTable()
	if err != nil {
		return nil, err
	}
	fail := func(n *yaml.Node, field, format string, args ...any) error {
		where := file
		if n != nil {
			where = fmt.Sprintf("%s:%d", file, n.Line)
		}
		if field != "" {
			where += ": field " + strconv.Quote(field)
		}
		return fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fail(nil, "", "expected a YAML or JSON list of endpoints, found an empty file")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: expected a YAML or JSON list of endpoints: %w", file, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fail(nil, "", "expected one YAML or JSON document with a list of endpoints")
	}
	list := doc.Content[0]
	if list.Kind != yaml.SequenceNode {
		return nil, fail(list, "", "expected a list of endpoints, found %s", kindName(list))
	}
	out := make([]Target, 0, len(list.Content))
	seen := map[netip.AddrPort]int{}
	for _, item := range list.Content {
		if item.Kind != yaml.MappingNode {
			return nil, fail(item, "", "expected an endpoint object {address, port, ...}, found %s", kindName(item))
		}
		var t Target
		var haveAddr, havePort bool
		for i := 0; i+1 < len(item.Content); i += 2 {
			k, v := item.Content[i], item.Content[i+1]
			switch k.Value {
			case "address":
				a, err := netip.ParseAddr(scalar(v))
				if err != nil || v.Kind != yaml.ScalarNode {
					return nil, fail(v, "address", "expected an IP address, found %s", found(v))
				}
				t.Addr, haveAddr = a.Unmap(), true
			case "port":
				p, err := strconv.ParseUint(scalar(v), 10, 16)
				if err != nil || p == 0 || v.Kind != yaml.ScalarNode {
					return nil, fail(v, "port", "expected an integer in 1..65535, found %s", found(v))
				}
				t.Port, havePort = uint16(p), true
			case "metricsURL":
				u, err := url.Parse(scalar(v))
				if v.Kind != yaml.ScalarNode || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return nil, fail(v, "metricsURL", "expected an http:// or https:// URL, found %s", found(v))
				}
				t.MetricsURL = v.Value
			case "name":
				if v.Kind != yaml.ScalarNode || v.Value == "" {
					return nil, fail(v, "name", "expected a non-empty string, found %s", found(v))
				}
				t.Name = v.Value
			case "labels":
				if v.Kind != yaml.MappingNode {
					return nil, fail(v, "labels", "expected a map of strings, found %s", found(v))
				}
				t.Labels = make(map[string]string, len(v.Content)/2)
				for j := 0; j+1 < len(v.Content); j += 2 {
					lk, lv := v.Content[j], v.Content[j+1]
					if lk.Kind != yaml.ScalarNode || lv.Kind != yaml.ScalarNode {
						return nil, fail(lv, "labels", "expected string keys and values, found %s", found(lv))
					}
					t.Labels[lk.Value] = lv.Value
				}
				if _, err := c.engineFor(table, t.Labels); err != nil {
					return nil, fail(v, "labels", "%v", err)
				}
			default:
				return nil, fail(k, k.Value, "unknown field; expected one of %s", knownFields)
			}
		}
		if !haveAddr {
			return nil, fail(item, "address", "missing; expected an IP address")
		}
		if !havePort {
			return nil, fail(item, "port", "missing; expected an integer in 1..65535")
		}
		ap := netip.AddrPortFrom(t.Addr, t.Port)
		if line, dup := seen[ap]; dup {
			return nil, fail(item, "", "expected each address:port once, found %s again (first on line %d)", ap, line)
		}
		seen[ap] = item.Line
		if t.Name == "" {
			t.Name = ap.String()
		}
		out = append(out, t)
	}
	return out, nil
}

func scalar(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func found(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "an object"
	case yaml.ScalarNode:
		return "the value " + strconv.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}
