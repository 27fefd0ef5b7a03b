package dockerx

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// OwnerLabels are the labels that name the calling process as a resource's
// owner: pid, host and start time.
func OwnerLabels() map[string]string {
	pid := os.Getpid()
	return map[string]string{
		LabelOwnerPID:   strconv.Itoa(pid),
		LabelOwnerHost:  Hostname(),
		LabelOwnerStart: ProcStart(pid),
	}
}

// Hostname is the host's name as the owner labels record it.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// ProcStart is the process's start time in clock ticks since boot (field 22
// of /proc/PID/stat): with the pid it identifies a process even after the
// pid is reused. "" where /proc is unavailable.
func ProcStart(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	// The command name (field 2) may contain spaces; fields after ')' are plain.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 overall
}

// OwnerAlive reports whether the process the owner labels name still runs:
// a process with that pid exists and, where a start time is labelled, it
// started then. Labels of another host count as alive (its processes are
// not ours to probe); labels without a pid as not alive.
func OwnerAlive(labels map[string]string) bool {
	if h, ok := labels[LabelOwnerHost]; ok && h != Hostname() {
		return true
	}
	pid, err := strconv.Atoi(labels[LabelOwnerPID])
	if err != nil || pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	start := labels[LabelOwnerStart]
	now := ProcStart(pid)
	return start == "" || now == "" || now == start
}

// OwnerGone reports whether a resource's owner is known to be dead, so the
// resource may be reaped: not kept (LabelKeep), labelled by this host with a
// pid, and that process no longer runs (OwnerAlive).
func OwnerGone(labels map[string]string) bool {
	if labels[LabelKeep] == "1" || labels[LabelOwnerHost] != Hostname() {
		return false
	}
	if pid, err := strconv.Atoi(labels[LabelOwnerPID]); err != nil || pid <= 0 {
		return false
	}
	return !OwnerAlive(labels)
}
