package executor

import (
	"context"
	"time"
)

// Kinds of Instance.
const (
	KindContainer = "container"
	KindNetwork   = "network"
	KindVolume    = "volume"
	KindPod       = "pod"
)

// Instance is one resource an executor made for a record: a step's container or pod,
// or the record's network or volume. It is found by the record's labels.
type Instance struct {
	Kind   string
	Name   string
	Record Record
	Stage  string // the step's stage, for containers and pods
	// State is the engine's word for a container's or pod's state (e.g. "running",
	// "exited", "Pending"); empty for networks and volumes.
	State   string
	Running bool
	Created time.Time
}

// Lister is an optional capability of an Executor: listing everything it made for
// records on its backend (whichever worker made it), for the cloud's workers list and
// for reclaiming what finished records left behind. Reclaiming is Teardown.
type Lister interface {
	List(ctx context.Context) ([]Instance, error)
}
