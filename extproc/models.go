package extproc

import (
	"unicode/utf8"

	"github.com/fastepp/fastepp/scheduler"
)

// OtherModel is the model_name / target_model_name label value of every model
// the picker does not know (see Options.Registerer).
const OtherModel = "other"

// knownModels is the set of model names that may be metric label values: the
// allow-list and what the pool's servers report in one snapshot. It is
// immutable once published.
type knownModels struct {
	// names maps each known name to itself: the label value, and a string to
	// share instead of converting the body's bytes.
	names map[string]string
	// fromPool are the distinct names the snapshot's servers reported
	// (models, running and waiting LoRA adapters).
	fromPool []string
}

// newKnownModels builds the set from the allow-list and a snapshot (nil: none).
// Names that are empty or not valid UTF-8 are left out: they cannot be label
// values.
func newKnownModels(allow []string, snap *scheduler.Snapshot) *knownModels {
	k := &knownModels{names: make(map[string]string, len(allow))}
	for _, n := range allow {
		if n != "" && utf8.ValidString(n) {
			k.names[n] = n
		}
	}
	if snap == nil {
		return k
	}
	seen := make(map[string]struct{})
	forEachPoolModel(snap, func(n string) bool {
		if n == "" || !utf8.ValidString(n) {
			return true
		}
		if _, ok := seen[n]; !ok {
			seen[n] = struct{}{}
			k.fromPool = append(k.fromPool, n)
			k.names[n] = n
		}
		return true
	})
	return k
}

// forEachPoolModel calls f with every model and adapter name the snapshot's
// endpoints report, duplicates included, until f returns false.
func forEachPoolModel(snap *scheduler.Snapshot, f func(string) bool) {
	for i := range snap.Endpoints {
		m := &snap.Endpoints[i].M
		for _, list := range [3][]string{m.Models, m.ActiveAdapters, m.WaitingAdapters} {
			for _, n := range list {
				if !f(n) {
					return
				}
			}
		}
	}
}

// matches reports whether k was built from a snapshot reporting the same
// names as snap (the allow-list never changes). It allocates nothing.
func (k *knownModels) matches(snap *scheduler.Snapshot) bool {
	same := true
	forEachPoolModel(snap, func(n string) bool {
		if n == "" || !utf8.ValidString(n) {
			return true
		}
		if _, ok := k.names[n]; !ok {
			same = false // a new name
		}
		return same
	})
	if !same {
		return false
	}
	for _, want := range k.fromPool {
		found := false
		forEachPoolModel(snap, func(n string) bool {
			found = n == want
			return !found
		})
		if !found {
			return false // a name the pool no longer reports
		}
	}
	return true
}

// updateKnown makes the known set follow a new snapshot. It runs on the
// pool's publisher goroutine (Scheduler.OnPublish), never on the request
// path, and allocates only when the pool's model names changed.
func (s *Server) updateKnown(snap *scheduler.Snapshot) {
	if !s.known.Load().matches(snap) {
		s.known.Store(newKnownModels(s.allow, snap))
	}
}

// modelLabel is the label value for a model name: the name when the picker
// knows it, "" for no model (headers-only requests), OtherModel otherwise.
func (s *Server) modelLabel(name string) string {
	if name == "" {
		return ""
	}
	if v, ok := s.known.Load().names[name]; ok {
		return v
	}
	return OtherModel
}

// modelName returns the model named by b as a string, without allocating when
// the name is known or was seen before, and its label value (see modelLabel).
func (s *Server) modelName(b []byte) (name, label string) {
	if v, ok := s.known.Load().names[string(b)]; ok {
		return v, v
	}
	return s.internModel(b), OtherModel
}
