package scorers

import (
	"fmt"

	"github.com/fastepp/fastepp/scheduler"
)

// Interface guard: what the registry checks at start-up, checked at compile time.
var _ scheduler.ProfileHandler = (*singleProfile)(nil)

// SingleProfileHandlerType runs the one scheduling profile a config has.
const SingleProfileHandlerType = "single-profile-handler"

type singleProfile struct{ base }

func registerProfileHandlers(r *scheduler.Registry) {
	r.MustRegister(SingleProfileHandlerType, scheduler.Factory{
		Kind:  scheduler.KindProfileHandler,
		Proto: (*singleProfile)(nil),
		Doc:   "runs the single scheduling profile",
		New: func(name string, _ scheduler.Params) (scheduler.Plugin, error) {
			return &singleProfile{newBase(SingleProfileHandlerType, name)}, nil
		},
	})
}

// NewSingleProfileHandler returns a single-profile-handler.
func NewSingleProfileHandler() scheduler.ProfileHandler {
	return &singleProfile{newBase(SingleProfileHandlerType, "")}
}

func (*singleProfile) Select(*scheduler.Cycle, []*scheduler.Profile) int { return 0 }

func (h *singleProfile) Validate(ps []*scheduler.Profile) error {
	if len(ps) != 1 {
		return fmt.Errorf("profile handler %q (%s): expected exactly one scheduling profile, found %d", h.Name(), h.Type(), len(ps))
	}
	return nil
}
