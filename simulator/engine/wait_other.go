//go:build !linux

package engine

func newStepWaiter() stepWaiter { return newTimerWaiter() }
