package version

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestString(t *testing.T) {
	defer func(v string, r func() (*debug.BuildInfo, bool)) { Version, readBuildInfo = v, r }(Version, readBuildInfo)
	platform := runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name, version string
		info          *debug.BuildInfo
		want          string
	}{
		{"no build info", "dev", nil, "epp dev (" + platform + ")"},
		{"no VCS settings", "dev", &debug.BuildInfo{}, "epp dev (" + platform + ")"},
		{"clean tree", "v1.2.3", &debug.BuildInfo{Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "1ea1bac5c0de0123456789abcdef012345678901"}, {Key: "vcs.modified", Value: "false"}}},
			"epp v1.2.3 (revision 1ea1bac5c0de, " + platform + ")"},
		{"modified tree", "dev", &debug.BuildInfo{Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}},
			"epp dev (revision abc+modified, " + platform + ")"},
	}
	for _, tt := range tests {
		Version = tt.version
		readBuildInfo = func() (*debug.BuildInfo, bool) { return tt.info, tt.info != nil }
		if got := String("epp"); got != tt.want {
			t.Errorf("%s: String = %q, want %q", tt.name, got, tt.want)
		}
	}
}
