package api

import (
	"fmt"
	"unicode/utf8"
)

// Heartbeat field bounds. The body limit (MaxBodyBytes) alone lets one
// heartbeat carry a 1 MB model id that the queen keeps, lists and logs;
// these keep every stored field small. They are far above anything a real
// hive or worker sends (ids are at most 63 characters, model ids
// "org/repo:file", URLs http://host:port).
const (
	MaxIDBytes         = 128  // worker_id, hive_id, device ids
	MaxModelBytes      = 512  // model
	MaxDeviceBytes     = 64   // device ("cpu:0")
	MaxURLBytes        = 2048 // url
	MaxDeviceNameBytes = 256  // devices[].name, devices[].device_type
	MaxHeartbeatDevs   = 256  // devices per hive heartbeat
	MaxHeartbeatWkrs   = 4096 // worker ids per hive heartbeat
)

// checkField reports a field over its limit or holding a control character
// (a newline or escape sequence in an id would forge log lines and
// terminal output wherever the id is printed).
func checkField(name, v string, limit int) error {
	if len(v) > limit {
		return fmt.Errorf("field %q is %d bytes, over the limit of %d", name, len(v), limit)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("field %q is not valid UTF-8", name)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("field %q contains the control character %U", name, r)
		}
	}
	return nil
}

// CheckBounds reports the first field of hb that is too long or holds a
// control character, naming it; nil when every field is within bounds.
// It checks sizes only: missing fields and states are the registry's.
func (hb WorkerHeartbeat) CheckBounds() error {
	for _, f := range []struct {
		name, v string
		limit   int
	}{
		{"worker_id", hb.WorkerID, MaxIDBytes},
		{"hive_id", hb.HiveID, MaxIDBytes},
		{"model", hb.Model, MaxModelBytes},
		{"device", hb.Device, MaxDeviceBytes},
		{"url", hb.URL, MaxURLBytes},
		{"state", hb.State, MaxIDBytes},
	} {
		if err := checkField(f.name, f.v, f.limit); err != nil {
			return err
		}
	}
	return nil
}

// CheckBounds reports the first field or array of hb over its bound
// (naming it, with the index for array elements); nil when all are within.
func (hb HiveHeartbeat) CheckBounds() error {
	if err := checkField("hive_id", hb.HiveID, MaxIDBytes); err != nil {
		return err
	}
	if err := checkField("url", hb.URL, MaxURLBytes); err != nil {
		return err
	}
	if len(hb.Devices) > MaxHeartbeatDevs {
		return fmt.Errorf("field \"devices\" has %d entries, over the limit of %d", len(hb.Devices), MaxHeartbeatDevs)
	}
	for i, d := range hb.Devices {
		for _, f := range []struct {
			name, v string
			limit   int
		}{
			{"id", d.ID, MaxIDBytes},
			{"name", d.Name, MaxDeviceNameBytes},
			{"device_type", d.DeviceType, MaxDeviceNameBytes},
		} {
			if err := checkField(fmt.Sprintf("devices[%d].%s", i, f.name), f.v, f.limit); err != nil {
				return err
			}
		}
	}
	if len(hb.Workers) > MaxHeartbeatWkrs {
		return fmt.Errorf("field \"workers\" has %d entries, over the limit of %d", len(hb.Workers), MaxHeartbeatWkrs)
	}
	for i, w := range hb.Workers {
		if err := checkField(fmt.Sprintf("workers[%d]", i), w, MaxIDBytes); err != nil {
			return err
		}
	}
	return nil
}
