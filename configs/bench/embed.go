// Package benchconfig embeds the bench scenarios (configs/bench/*.yaml), so
// the bench binary runs them from any directory. The YAML files are the
// single source: `bench --list` prints what they say.
package benchconfig

import "embed"

// FS holds the scenario files, one scenario per file, named by the file's
// base name without .yaml.
//
//go:embed *.yaml
var FS embed.FS
