package gpustats

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AMDVendorID is the PCI vendor id of AMD GPUs in sysfs (device/vendor).
const AMDVendorID = "0x1002"

// Sysfs reads AMD GPUs from the amdgpu driver's sysfs files
// (root/class/drm/cardN/device, docs/GPUSTATS.md). It needs no library and
// no privileges. A file that is missing or cannot be read means the card
// does not expose that value (absent, not 0).
type Sysfs struct {
	root string
	now  func() time.Time
}

// NewSysfs reads under root ("" is "/sys"); now is the clock (nil: time.Now).
func NewSysfs(root string, now func() time.Time) *Sysfs {
	if root == "" {
		root = "/sys"
	}
	return &Sysfs{root: root, now: nowFunc(now)}
}

// Name is "sysfs".
func (s *Sysfs) Name() string { return "sysfs" }

var cardRE = regexp.MustCompile(`^card([0-9]+)$`)

// amdCards returns the device directories of AMD cards, in card-number order.
// Connector entries (card0-DP-1) and render nodes (renderD128) are skipped.
func (s *Sysfs) amdCards() ([]string, error) {
	drm := filepath.Join(s.root, "class", "drm")
	ents, err := os.ReadDir(drm)
	if err != nil {
		return nil, fmt.Errorf("sysfs: expected the DRM class directory %s, found: %w", drm, err)
	}
	type card struct {
		n   int
		dev string
	}
	var cards []card
	for _, e := range ents {
		m := cardRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		dev := filepath.Join(drm, e.Name(), "device")
		v, ok := readString(filepath.Join(dev, "vendor"))
		if !ok || !strings.EqualFold(v, AMDVendorID) {
			continue
		}
		cards = append(cards, card{n, dev})
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i].n < cards[j].n })
	out := make([]string, len(cards))
	for i, c := range cards {
		out[i] = c.dev
	}
	return out, nil
}

// CountAMD returns how many AMD cards the tree shows.
func (s *Sysfs) CountAMD() (int, error) {
	c, err := s.amdCards()
	return len(c), err
}

// Read returns one GPU per AMD card. Values whose file holds something that
// is not a number are left absent and named in the returned error.
func (s *Sysfs) Read(ctx context.Context) ([]GPU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	devs, err := s.amdCards()
	if err != nil {
		return nil, err
	}
	now := s.now()
	gpus := make([]GPU, 0, len(devs))
	var errs []error
	for i, dev := range devs {
		r := &fileReader{}
		g := GPU{Index: i, ReadTime: now}
		g.Product, _ = readString(filepath.Join(dev, "product_name"))
		g.UniqueID, _ = readString(filepath.Join(dev, "unique_id"))
		g.GfxActivityPercent = r.num(filepath.Join(dev, "gpu_busy_percent"), 1)
		g.MemActivityPercent = r.num(filepath.Join(dev, "mem_busy_percent"), 1)
		g.VRAMTotalBytes = r.num(filepath.Join(dev, "mem_info_vram_total"), 1)
		g.VRAMUsedBytes = r.num(filepath.Join(dev, "mem_info_vram_used"), 1)
		if hw := hwmonDir(dev); hw != "" {
			g.PowerWatts = r.num(filepath.Join(hw, "power1_average"), 1e6)
			if g.PowerWatts == nil {
				g.PowerWatts = r.num(filepath.Join(hw, "power1_input"), 1e6)
			}
			g.PowerCapWatts = r.num(filepath.Join(hw, "power1_cap"), 1e6)
			r.temps(hw, &g)
			r.clocks(hw, &g)
		}
		gpus = append(gpus, g)
		errs = append(errs, r.errs...)
	}
	return gpus, errors.Join(errs...)
}

// hwmonDir returns the card's first hwmon directory, "" when it has none.
func hwmonDir(dev string) string {
	m, _ := filepath.Glob(filepath.Join(dev, "hwmon", "hwmon*"))
	sort.Strings(m)
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// fileReader reads numeric sysfs files and collects parse errors.
type fileReader struct{ errs []error }

// num reads an integer or decimal file and divides it by div (unit
// conversion); nil when the file is
// missing, unreadable (the driver answers EINVAL/EOPNOTSUPP for unsupported
// values) or not a number (recorded as an error).
func (r *fileReader) num(path string, div float64) *float64 {
	v, ok := readString(path)
	if !ok {
		return nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("sysfs %s: expected a number, found %q", path, truncate(v, 40)))
		return nil
	}
	return F(f / div)
}

// temps reads temp*_input (milli-°C) by their temp*_label (edge, junction,
// mem); an unlabelled sensor falls back to the amdgpu numbering
// (1 edge, 2 junction, 3 memory).
func (r *fileReader) temps(hw string, g *GPU) {
	for n := 1; n <= 9; n++ {
		in := filepath.Join(hw, fmt.Sprintf("temp%d_input", n))
		if _, err := os.Stat(in); err != nil {
			continue
		}
		label, ok := readString(filepath.Join(hw, fmt.Sprintf("temp%d_label", n)))
		if !ok {
			label = map[int]string{1: "edge", 2: "junction", 3: "mem"}[n]
		}
		var dst **float64
		switch strings.ToLower(label) {
		case "edge":
			dst = &g.EdgeTemperatureCelsius
		case "junction", "hotspot":
			dst = &g.JunctionTemperatureCelsius
		case "mem", "memory", "vram", "hbm":
			dst = &g.MemoryTemperatureCelsius
		default:
			continue
		}
		if *dst == nil {
			*dst = r.num(in, 1e3)
		}
	}
}

// clocks reads freq1_input (sclk) and freq2_input (mclk) in Hz, by label
// when there is one.
func (r *fileReader) clocks(hw string, g *GPU) {
	for n := 1; n <= 2; n++ {
		in := filepath.Join(hw, fmt.Sprintf("freq%d_input", n))
		label, ok := readString(filepath.Join(hw, fmt.Sprintf("freq%d_label", n)))
		if !ok {
			label = map[int]string{1: "sclk", 2: "mclk"}[n]
		}
		switch strings.ToLower(label) {
		case "sclk":
			if g.SclkHz == nil {
				g.SclkHz = r.num(in, 1)
			}
		case "mclk":
			if g.MclkHz == nil {
				g.MclkHz = r.num(in, 1)
			}
		}
	}
}

// readString returns a small file's trimmed content; false when it is
// missing or unreadable.
func readString(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	if n == 0 && err != nil {
		return "", false
	}
	return strings.TrimSpace(string(buf[:n])), true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
