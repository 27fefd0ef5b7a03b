package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Operation names (the "operation" field of POST /v1/jobs).
const (
	OpStatus                  = "status"
	OpHiveList                = "hive_list"
	OpHiveGet                 = "hive_get"
	OpHiveStatus              = "hive_status"
	OpHiveInstall             = "hive_install"
	OpHiveUninstall           = "hive_uninstall"
	OpHiveStart               = "hive_start"
	OpHiveStop                = "hive_stop"
	OpHiveRefreshCapabilities = "hive_refresh_capabilities"
	OpWorkerSpawn             = "worker_spawn"
	OpWorkerProcessList       = "worker_process_list"
	OpWorkerProcessGet        = "worker_process_get"
	OpWorkerProcessDelete     = "worker_process_delete"
	OpModelDownload           = "model_download"
	OpModelList               = "model_list"
	OpModelGet                = "model_get"
	OpModelDelete             = "model_delete"
	OpInfer                   = "infer"
)

// JobRequest is the body of POST /v1/jobs. Which fields an operation takes
// is given by an OpSpec; DecodeJobRequest rejects the rest.
type JobRequest struct {
	Operation   string   `json:"operation"`
	Alias       string   `json:"alias,omitempty"`
	Force       bool     `json:"force,omitempty"`
	HiveID      string   `json:"hive_id,omitempty"`
	Model       string   `json:"model,omitempty"`
	Device      string   `json:"device,omitempty"`
	WorkerID    string   `json:"worker_id,omitempty"`
	Prompt      string   `json:"prompt,omitempty"`
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
	Seed        *uint64  `json:"seed,omitempty"`
}

// OpSpec lists the fields an operation requires and allows (besides
// "operation" itself).
type OpSpec struct {
	Required []string
	Optional []string
}

// OpSpecs maps operation names to their specs; each server has its own set.
type OpSpecs map[string]OpSpec

// Names returns the operation names in sorted order.
func (s OpSpecs) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RequestError is a client error in a request body; servers answer it with
// 400 invalid_request and its message.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

func reqErrf(format string, args ...any) error {
	return &RequestError{Msg: fmt.Sprintf(format, args...)}
}

// DecodeJobRequest parses and validates a job request body against specs:
// malformed JSON, an unknown operation, a missing, unknown or ill-typed
// field are all *RequestError values naming the problem.
func DecodeJobRequest(body []byte, specs OpSpecs) (JobRequest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return JobRequest{}, reqErrf("malformed JSON: %v", err)
	}
	if raw == nil {
		return JobRequest{}, reqErrf("body must be a JSON object")
	}
	opRaw, ok := raw["operation"]
	if !ok {
		return JobRequest{}, reqErrf("missing field \"operation\"")
	}
	var op string
	if err := json.Unmarshal(opRaw, &op); err != nil {
		return JobRequest{}, reqErrf("field \"operation\" must be a string")
	}
	spec, ok := specs[op]
	if !ok {
		return JobRequest{}, reqErrf("unknown operation %q (known: %s)", op, strings.Join(specs.Names(), ", "))
	}
	allowed := map[string]bool{"operation": true}
	for _, f := range spec.Required {
		allowed[f] = true
	}
	for _, f := range spec.Optional {
		allowed[f] = true
	}
	var unknown []string
	for k := range raw {
		if !allowed[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return JobRequest{}, reqErrf("unknown field %q for operation %q", unknown[0], op)
	}
	for _, f := range spec.Required {
		v, ok := raw[f]
		if !ok || string(v) == "null" {
			return JobRequest{}, reqErrf("missing field %q for operation %q", f, op)
		}
	}
	var req JobRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return JobRequest{}, reqErrf("field %q must be %s, got %s", te.Field, te.Type.String(), te.Value)
		}
		return JobRequest{}, reqErrf("invalid body: %v", err)
	}
	for _, f := range spec.Required {
		if s, isStr := stringField(req, f); isStr && strings.TrimSpace(s) == "" {
			return JobRequest{}, reqErrf("field %q must not be empty", f)
		}
	}
	return req, nil
}

func stringField(r JobRequest, name string) (string, bool) {
	switch name {
	case "alias":
		return r.Alias, true
	case "hive_id":
		return r.HiveID, true
	case "model":
		return r.Model, true
	case "device":
		return r.Device, true
	case "worker_id":
		return r.WorkerID, true
	case "prompt":
		return r.Prompt, true
	}
	return "", false
}

// QueenOps are the queen's operations and their fields (PROTOCOL.md §3).
// infer requires max_tokens so that an explicit out-of-range 0 is an error
// rather than silently "absent".
var QueenOps = OpSpecs{
	OpStatus:                  {},
	OpHiveList:                {},
	OpHiveGet:                 {Required: []string{"alias"}},
	OpHiveStatus:              {Required: []string{"alias"}},
	OpHiveInstall:             {Required: []string{"alias"}, Optional: []string{"force"}},
	OpHiveUninstall:           {Required: []string{"alias"}},
	OpHiveStart:               {Required: []string{"alias"}},
	OpHiveStop:                {Required: []string{"alias"}},
	OpHiveRefreshCapabilities: {Required: []string{"alias"}},
	OpWorkerSpawn:             {Required: []string{"hive_id", "model", "device"}},
	OpWorkerProcessList:       {Required: []string{"hive_id"}},
	OpWorkerProcessGet:        {Required: []string{"hive_id", "worker_id"}},
	OpWorkerProcessDelete:     {Required: []string{"hive_id", "worker_id"}},
	OpModelDownload:           {Required: []string{"hive_id", "model"}},
	OpModelList:               {Required: []string{"hive_id"}},
	OpModelGet:                {Required: []string{"hive_id", "model"}},
	OpModelDelete:             {Required: []string{"hive_id", "model"}},
	OpInfer:                   {Required: []string{"model", "prompt", "max_tokens"}, Optional: []string{"temperature", "seed", "hive_id"}},
}
