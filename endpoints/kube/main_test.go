package kube

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	UseLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
