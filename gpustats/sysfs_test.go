package gpustats

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// mi210 is a card with every file, labelled sensors and power1_average.
func mi210(card string) map[string]string {
	d := "class/drm/" + card + "/device/"
	hw := d + "hwmon/hwmon3/"
	return map[string]string{
		d + "vendor":              "0x1002\n",
		d + "product_name":        "AMD Instinct MI210\n",
		d + "unique_id":           "a1b2c3d4e5f60718\n",
		d + "gpu_busy_percent":    "37\n",
		d + "mem_busy_percent":    "12\n",
		d + "mem_info_vram_total": "68702699520\n",
		d + "mem_info_vram_used":  "51539607552\n",
		hw + "power1_average":     "212000000\n",
		hw + "power1_input":       "999000000\n", // ignored: average wins
		hw + "power1_cap":         "300000000\n",
		hw + "temp1_input":        "45000\n",
		hw + "temp1_label":        "edge\n",
		hw + "temp2_input":        "61000\n",
		hw + "temp2_label":        "junction\n",
		hw + "temp3_input":        "52000\n",
		hw + "temp3_label":        "mem\n",
		hw + "freq1_input":        "1700000000\n",
		hw + "freq1_label":        "sclk\n",
		hw + "freq2_input":        "1600000000\n",
		hw + "freq2_label":        "mclk\n",
	}
}

// mi300x has no edge sensor and no power1_average (power1_input instead),
// and unlabelled temp2/temp3 and clocks (the driver's default numbering).
func mi300x(card string) map[string]string {
	d := "class/drm/" + card + "/device/"
	hw := d + "hwmon/hwmon5/"
	return map[string]string{
		d + "vendor":              "0x1002\n",
		d + "product_name":        "AMD Instinct MI300X\n",
		d + "unique_id":           "0x6c8e6f5a1b2c3d4e\n",
		d + "gpu_busy_percent":    "100\n",
		d + "mem_busy_percent":    "0\n", // a real 0 stays 0
		d + "mem_info_vram_total": "206141652992\n",
		d + "mem_info_vram_used":  "185527484416\n",
		hw + "power1_input":       "621000000\n",
		hw + "power1_cap":         "750000000\n",
		hw + "temp2_input":        "78000\n",
		hw + "temp3_input":        "66000\n",
		hw + "freq1_input":        "2100000000\n",
		hw + "freq2_input":        "1300000000\n",
	}
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func TestSysfsRead(t *testing.T) {
	cases := []struct {
		name    string
		files   map[string]string
		golden  string
		wantErr string
	}{
		{
			name: "mixed node",
			files: merge(
				mi210("card0"),
				map[string]string{
					// connector and render entries point at an AMD device too: skipped
					"class/drm/card0-DP-1/device/vendor":      "0x1002\n",
					"class/drm/renderD128/device/vendor":      "0x1002\n",
					"class/drm/card1/device/vendor":           "0x10de\n", // NVIDIA
					"class/drm/card1/device/gpu_busy_percent": "90\n",
					"class/drm/version":                       "drm 1.1.0\n",
					"class/drm/card10/device/vendor":          "0x1002\n", // only a vendor: everything absent
				},
				mi300x("card2"),
				// as in a real sysfs, cardN/device is a symlink to the PCI device
				map[string]string{
					"class/drm/card3/device":                              "->../../../devices/pci0000:c0/0000:c1:00.0",
					"devices/pci0000:c0/0000:c1:00.0/vendor":              "0x1002\n",
					"devices/pci0000:c0/0000:c1:00.0/product_name":        "AMD Instinct MI325X\n",
					"devices/pci0000:c0/0000:c1:00.0/gpu_busy_percent":    "5\n",
					"devices/pci0000:c0/0000:c1:00.0/mem_info_vram_total": "274877906944\n",
				},
			),
			golden: "sysfs_mixed.json",
		},
		{
			name:   "no AMD card",
			files:  map[string]string{"class/drm/card0/device/vendor": "0x10de\n", "class/drm/card0-HDMI-A-1/status": "connected\n"},
			golden: "sysfs_none.json",
		},
		{
			name: "unparsable values",
			files: merge(mi300x("card0"), map[string]string{
				"class/drm/card0/device/gpu_busy_percent":         "N/A\n",
				"class/drm/card0/device/hwmon/hwmon5/temp2_input": "hot\n",
			}),
			golden:  "sysfs_unparsable.json",
			wantErr: `gpu_busy_percent: expected a number, found "N/A"`,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, c.files)
			s := NewSysfs(root, clock)
			got, err := s.Read(context.Background())
			if c.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("want error containing %q, found %v", c.wantErr, err)
			}
			golden(t, c.golden, got)
		})
	}
}

func TestSysfsMissingRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "nothing")
	_, err := NewSysfs(root, nil).Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "expected the DRM class directory") {
		t.Fatalf("want a clear error, found %v", err)
	}
	if n, _ := NewSysfs(root, nil).CountAMD(); n != 0 {
		t.Errorf("CountAMD = %d", n)
	}
}

func TestSysfsDefaultRoot(t *testing.T) {
	if s := NewSysfs("", nil); s.root != "/sys" {
		t.Errorf("root %q", s.root)
	}
}
