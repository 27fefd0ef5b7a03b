// Package api holds the wire types of the rbee protocol (docs/PROTOCOL.md):
// job requests and events, heartbeats, registry views, capabilities and the
// worker's inference API. Queen, hive, worker, keeper and the test harness all
// speak through these types and nothing else, so none imports another's
// internals.
package api

import "time"

// Stream terminators: exactly one ends every job stream.
const (
	TermDone      = "[DONE]"
	TermError     = "[ERROR]"
	TermCancelled = "[CANCELLED]"
)

// SSE event names.
const (
	EventNarration = "narration"
	EventResult    = "result"
	EventToken     = "token"
	EventEnd       = "end"
)

// MaxBodyBytes is the largest request body any rbee server accepts.
const MaxBodyBytes = 1 << 20

// JobState is the life-cycle state of a job.
type JobState string

const (
	StateQueued    JobState = "queued"
	StateRunning   JobState = "running"
	StateCompleted JobState = "completed"
	StateFailed    JobState = "failed"
	StateCancelled JobState = "cancelled"
)

// Finished reports whether s is a terminal state.
func (s JobState) Finished() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// JobAccepted answers POST /v1/jobs and POST /v1/inference.
type JobAccepted struct {
	JobID  string `json:"job_id"`
	SSEURL string `json:"sse_url"`
}

// JobStatus answers GET /v1/jobs/{id}.
type JobStatus struct {
	JobID      string     `json:"job_id"`
	Operation  string     `json:"operation"`
	State      JobState   `json:"state"`
	Error      string     `json:"error"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// CancelAnswer answers DELETE /v1/jobs/{id}.
type CancelAnswer struct {
	JobID string   `json:"job_id"`
	State JobState `json:"state"`
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail names what went wrong.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes used in ErrorDetail.Code.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeNotFound             = "not_found"
	CodeConflict             = "conflict"
	CodePayloadTooLarge      = "payload_too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeUnauthorized         = "unauthorized"
	CodeForbidden            = "forbidden"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
)

// Narration is the data of a "narration" event: one human-readable step.
type Narration struct {
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Message string `json:"message"`
	Hive    string `json:"hive,omitempty"`
}

// Token is the data of a "token" event.
type Token struct {
	T string `json:"t"`
	I int    `json:"i"`
}

// End is the data of the worker's "end" event.
type End struct {
	TokensOut  int    `json:"tokens_out"`
	StopReason string `json:"stop_reason"`
}

// Worker states reported in heartbeats.
const (
	WorkerStarting = "starting"
	WorkerReady    = "ready"
	WorkerBusy     = "busy"
	WorkerStopping = "stopping"
)

// WorkerHeartbeat is POSTed by workers to {queen}/v1/worker-heartbeat.
type WorkerHeartbeat struct {
	WorkerID  string    `json:"worker_id"`
	HiveID    string    `json:"hive_id"`
	Model     string    `json:"model"`
	Device    string    `json:"device"`
	URL       string    `json:"url"`
	State     string    `json:"state"`
	Timestamp time.Time `json:"timestamp"`
}

// HiveHeartbeat is POSTed by hives to {queen}/v1/hive-heartbeat.
type HiveHeartbeat struct {
	HiveID    string    `json:"hive_id"`
	URL       string    `json:"url"`
	Timestamp time.Time `json:"timestamp"`
	Devices   []Device  `json:"devices"`
	Workers   []string  `json:"workers"`
}

// StatusOK is the body of a successful heartbeat answer.
type StatusOK struct {
	Status string `json:"status"`
}

// WorkerInfo is one row of GET /v1/workers.
type WorkerInfo struct {
	WorkerID string    `json:"worker_id"`
	HiveID   string    `json:"hive_id"`
	Model    string    `json:"model"`
	Device   string    `json:"device"`
	URL      string    `json:"url"`
	State    string    `json:"state"`
	LastSeen time.Time `json:"last_seen"`
	Stale    bool      `json:"stale"`
}

// Hive states in the queen's registry.
const (
	HiveOnline  = "online"
	HiveOffline = "offline"
	HiveUnknown = "unknown"
	// HiveUnreachable is reported by hive_status when the health probe
	// timed out (the host answers nothing), as opposed to refusing.
	HiveUnreachable = "unreachable"
)

// HiveInfo is one row of GET /v1/hives.
type HiveInfo struct {
	Alias    string     `json:"alias"`
	Hostname string     `json:"hostname"`
	HivePort int        `json:"hive_port"`
	SSHPort  int        `json:"ssh_port"`
	State    string     `json:"state"`
	LastSeen *time.Time `json:"last_seen"`
	Devices  []Device   `json:"devices"`
}

// HiveStatus is the result of the hive_status operation: the registry view
// plus a live probe of the hive's /health.
type HiveStatus struct {
	HiveInfo
	// Probe is "ok", "connection refused", "timeout" or another error text.
	Probe string `json:"probe"`
}

// Device is one compute device of a hive.
type Device struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	DeviceType string  `json:"device_type"`
	VRAMGB     float64 `json:"vram_gb"`
	Simulated  bool    `json:"simulated"`
}

// Capabilities answers the hive's GET /capabilities.
type Capabilities struct {
	HiveID  string   `json:"hive_id"`
	Devices []Device `json:"devices"`
}

// WorkerProcess is a worker in a hive's own table of children; it is the
// result of worker_spawn and an element of worker_process_list.
type WorkerProcess struct {
	WorkerID  string    `json:"worker_id"`
	PID       int       `json:"pid"`
	Port      int       `json:"port"`
	URL       string    `json:"url"`
	Device    string    `json:"device"`
	Model     string    `json:"model"`
	State     string    `json:"state"` // "running" or "exited"
	ExitCode  *int      `json:"exit_code,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// WorkerList is the result of worker_process_list.
type WorkerList struct {
	Workers []WorkerProcess `json:"workers"`
}

// Model is one entry of a hive's model catalog.
type Model struct {
	ID           string    `json:"id"` // "org/repo:file"
	Size         int64     `json:"size"`
	SHA256       string    `json:"sha256"`
	Path         string    `json:"path"`
	DownloadedAt time.Time `json:"downloaded_at"`
}

// ModelList is the result of model_list.
type ModelList struct {
	Models []Model `json:"models"`
}

// StatusResult is the result of the queen's status operation.
type StatusResult struct {
	Hives   []HiveInfo   `json:"hives"`
	Workers []WorkerInfo `json:"workers"`
}

// HiveListResult is the result of hive_list.
type HiveListResult struct {
	Hives []HiveInfo `json:"hives"`
}

// BuildInfo answers GET /v1/build-info.
type BuildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// WorkerHealth answers the worker's GET /health.
type WorkerHealth struct {
	Status   string `json:"status"`
	WorkerID string `json:"worker_id"`
	Model    string `json:"model"`
	Device   string `json:"device"`
}

// Limits of the worker's inference API.
const (
	MinMaxTokens = 1
	MaxMaxTokens = 2048
)

// InferenceRequest is the body of the worker's POST /v1/inference.
type InferenceRequest struct {
	Prompt      string   `json:"prompt"`
	MaxTokens   int      `json:"max_tokens"`
	Temperature float64  `json:"temperature"`
	Seed        uint64   `json:"seed"`
	Stop        []string `json:"stop"`
}

// HiveInstallResult is the result of hive_install.
type HiveInstallResult struct {
	Alias      string `json:"alias"`
	BinaryPath string `json:"binary_path"`
	Version    string `json:"version"`
	Size       int64  `json:"size"`
}

// HiveUninstallResult is the result of hive_uninstall.
type HiveUninstallResult struct {
	Alias      string `json:"alias"`
	BinaryPath string `json:"binary_path"`
	Removed    bool   `json:"removed"`
}

// HiveStartResult is the result of hive_start. PID is the recorded pid of
// the started daemon; 0 when the hive was already healthy.
type HiveStartResult struct {
	Alias   string   `json:"alias"`
	URL     string   `json:"url"`
	State   string   `json:"state"`
	Devices []Device `json:"devices"`
	PID     int      `json:"pid,omitempty"`
}

// HiveStopResult is the result of hive_stop.
type HiveStopResult struct {
	Alias string `json:"alias"`
	State string `json:"state"`
}
