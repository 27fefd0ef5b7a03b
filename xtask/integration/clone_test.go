package integration

import (
	"context"
	"slices"
	"testing"
	"time"
)

// renameEnv renames exactly the values equal to the source service's name.
func TestRenameEnv(t *testing.T) {
	in := []string{"RBEE_WORKER_ID=worker-1", "RBEE_QUEEN_URL=http://queen:8500", "X=worker-10", "EMPTY=", "NOEQ"}
	want := []string{"RBEE_WORKER_ID=worker-3", "RBEE_QUEEN_URL=http://queen:8500", "X=worker-10", "EMPTY=", "NOEQ"}
	if got := renameEnv(in, "worker-1", "worker-3"); !slices.Equal(got, want) {
		t.Fatalf("renameEnv = %q, want %q", got, want)
	}
}

// CloneService rejects bad arguments before touching Docker.
func TestCloneServiceBadArgs(t *testing.T) {
	h := &Harness{services: map[string]*service{"worker-1": {name: "worker-1"}}}
	for _, tc := range []struct {
		name, svc, clone string
		timeout          time.Duration
	}{
		{"zero timeout", "worker-1", "worker-3", 0},
		{"empty name", "worker-1", "", time.Second},
		{"bad name", "worker-1", "Worker_3", time.Second},
		{"unknown source", "worker-9", "worker-3", time.Second},
		{"existing name", "worker-1", "worker-1", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := h.CloneService(context.Background(), tc.svc, tc.clone, tc.timeout); err == nil {
				t.Fatalf("CloneService(%q, %q, %v) = nil, want an error", tc.svc, tc.clone, tc.timeout)
			}
		})
	}
}
