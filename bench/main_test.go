package bench

import (
	"os"
	"runtime/debug"
	"testing"
)

// devGCPercent is `cyclone dev`'s default --gc-percent: the benchmarks measure the
// stack as `make run` runs it. An explicit GOGC wins, as it does for cyclone dev.
const devGCPercent = 400

func TestMain(m *testing.M) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(devGCPercent)
	}
	os.Exit(m.Run())
}
