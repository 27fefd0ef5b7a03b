package api

import (
	"strings"
	"testing"
)

func goodWorkerHB() WorkerHeartbeat {
	return WorkerHeartbeat{WorkerID: "w-0123456789", HiveID: "hive-1", Model: "org/repo:model.bin",
		Device: "cpu:0", URL: "http://hive-1:9100", State: WorkerReady}
}

func TestWorkerHeartbeatBounds(t *testing.T) {
	if err := goodWorkerHB().CheckBounds(); err != nil {
		t.Fatalf("a normal heartbeat is refused: %v", err)
	}
	atLimit := goodWorkerHB()
	atLimit.Model = strings.Repeat("m", MaxModelBytes)
	if err := atLimit.CheckBounds(); err != nil {
		t.Fatalf("a model of exactly %d bytes is refused: %v", MaxModelBytes, err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*WorkerHeartbeat)
	}{
		{"worker_id", func(h *WorkerHeartbeat) { h.WorkerID = strings.Repeat("w", MaxIDBytes+1) }},
		{"hive_id", func(h *WorkerHeartbeat) { h.HiveID = strings.Repeat("h", MaxIDBytes+1) }},
		{"model", func(h *WorkerHeartbeat) { h.Model = strings.Repeat("m", 1<<20) }},
		{"device", func(h *WorkerHeartbeat) { h.Device = strings.Repeat("d", MaxDeviceBytes+1) }},
		{"url", func(h *WorkerHeartbeat) { h.URL = "http://x/" + strings.Repeat("u", MaxURLBytes) }},
		{"worker_id", func(h *WorkerHeartbeat) { h.WorkerID = "w-1\nqueen-rbee forged line" }},
		{"worker_id", func(h *WorkerHeartbeat) { h.WorkerID = "w-1\x1b]0;title\x07" }},
		{"hive_id", func(h *WorkerHeartbeat) { h.HiveID = "h\u009b31m" }},
		{"model", func(h *WorkerHeartbeat) { h.Model = "a\xffb" }},
	} {
		hb := goodWorkerHB()
		tc.mut(&hb)
		err := hb.CheckBounds()
		if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s: got %v, want an error naming %q", tc.field, err, tc.field)
		}
	}
}

func TestHiveHeartbeatBounds(t *testing.T) {
	good := HiveHeartbeat{HiveID: "hive-1", URL: "http://hive-1:9000",
		Devices: []Device{{ID: "cpu:0", Name: "CPU", DeviceType: "cpu"}}, Workers: []string{"w-1"}}
	if err := good.CheckBounds(); err != nil {
		t.Fatalf("a normal heartbeat is refused: %v", err)
	}
	full := good
	full.Workers = make([]string, MaxHeartbeatWkrs)
	for i := range full.Workers {
		full.Workers[i] = "w"
	}
	if err := full.CheckBounds(); err != nil {
		t.Fatalf("%d workers are refused: %v", MaxHeartbeatWkrs, err)
	}
	for _, tc := range []struct {
		field string
		mut   func(*HiveHeartbeat)
	}{
		{"hive_id", func(h *HiveHeartbeat) { h.HiveID = strings.Repeat("h", MaxIDBytes+1) }},
		{"url", func(h *HiveHeartbeat) { h.URL = "http://x/" + strings.Repeat("u", MaxURLBytes) }},
		{"devices", func(h *HiveHeartbeat) { h.Devices = make([]Device, MaxHeartbeatDevs+1) }},
		{"devices[0].name", func(h *HiveHeartbeat) { h.Devices[0].Name = strings.Repeat("n", MaxDeviceNameBytes+1) }},
		{"devices[0].id", func(h *HiveHeartbeat) { h.Devices[0].ID = "cpu\r0" }},
		{"workers", func(h *HiveHeartbeat) { h.Workers = make([]string, MaxHeartbeatWkrs+1) }},
		{"workers[1]", func(h *HiveHeartbeat) { h.Workers = []string{"ok", strings.Repeat("w", MaxIDBytes+1)} }},
	} {
		hb := good
		hb.Devices = append([]Device(nil), good.Devices...)
		tc.mut(&hb)
		err := hb.CheckBounds()
		if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s: got %v, want an error naming %q", tc.field, err, tc.field)
		}
	}
}
