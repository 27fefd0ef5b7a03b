package worker

import (
	"strings"
	"testing"
	"time"
)

// A heartbeat interval below the minimum is refused, naming the flag and
// the minimum.
func TestHeartbeatIntervalMinimum(t *testing.T) {
	c := Config{WorkerID: "w", ModelPath: "m.bin", HeartbeatInterval: time.Nanosecond}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--heartbeat-interval 1ns is below the minimum of 10ms") {
		t.Fatalf("1ns: %v", err)
	}
	c.HeartbeatInterval = 10 * time.Millisecond
	if err := c.Validate(); err != nil {
		t.Fatalf("10ms: %v", err)
	}
}
