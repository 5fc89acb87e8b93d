// Package version names the build of fastepp's binaries: a version string
// set at link time, plus the VCS revision Go records in the binary.
//
// Set the version when building:
//
//	go build -ldflags "-X github.com/fastepp/fastepp/version.Version=v0.3.0" ./cmd/epp
//
// Without it the version is "dev". Every binary prints String on --version.
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release name, set with -ldflags -X (see the package doc).
var Version = "dev"

// readBuildInfo is debug.ReadBuildInfo (a variable for tests).
var readBuildInfo = debug.ReadBuildInfo

// Revision returns the VCS revision the binary was built from (12 hex digits,
// "+modified" when the tree had local changes), or "" when Go recorded none
// (go run, go test, a build outside a repository or with -buildvcs=false).
func Revision() string {
	bi, ok := readBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return ""
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified {
		rev += "+modified"
	}
	return rev
}

// String is the one line a binary prints on --version, e.g.
// "epp v0.3.0 (revision 1ea1bac5c0de, go1.26.0 linux/amd64)".
func String(program string) string {
	var b strings.Builder
	b.WriteString(program)
	b.WriteByte(' ')
	b.WriteString(Version)
	b.WriteString(" (")
	if rev := Revision(); rev != "" {
		b.WriteString("revision ")
		b.WriteString(rev)
		b.WriteString(", ")
	}
	b.WriteString(runtime.Version())
	b.WriteByte(' ')
	b.WriteString(runtime.GOOS + "/" + runtime.GOARCH)
	b.WriteByte(')')
	return b.String()
}
