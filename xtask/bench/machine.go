package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// Machine describes where a run happened, for the report's header. Numbers
// from a busy machine are not comparable with a quiet one: the load average
// at the start says which it was.
type Machine struct {
	CPU     string // model name from /proc/cpuinfo
	Cores   int    // logical CPUs
	Memory  string // MemTotal
	Kernel  string
	Docker  string // engine version (and API)
	Go      string
	Date    time.Time
	LoadAvg string // 1, 5, 15 minutes, at the start of the run
}

// DescribeMachine reads the description from /proc, the Docker engine and the
// Go runtime. What it cannot read is "unknown", never an error: a report
// with a hole beats no report.
func DescribeMachine(ctx context.Context) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC()}
	m.CPU = orUnknown(readFirst("/proc/cpuinfo", cpuModel))
	m.Memory = orUnknown(readFirst("/proc/meminfo", memTotal))
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Kernel = orUnknown(m.Kernel)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = loadAvg(string(b))
	}
	m.LoadAvg = orUnknown(m.LoadAvg)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if d, err := dockerx.Connect(cctx); err == nil {
		if v, err := d.ServerVersion(cctx, client.ServerVersionOptions{}); err == nil {
			m.Docker = fmt.Sprintf("%s (API %s)", v.Version, v.APIVersion)
		}
		d.Close()
	}
	m.Docker = orUnknown(m.Docker)
	return m
}

// Rows returns the description as label/value pairs.
func (m Machine) Rows() [][2]string {
	return [][2]string{
		{"CPU", m.CPU},
		{"cores", strconv.Itoa(m.Cores)},
		{"memory", m.Memory},
		{"kernel", m.Kernel},
		{"Docker engine", m.Docker},
		{"Go", m.Go},
		{"date", m.Date.Format("2006-01-02 15:04 MST")},
		{"load average at start (1/5/15 min)", m.LoadAvg},
	}
}

// Table renders the description as a two-column table.
func (m Machine) Table() Table {
	t := Table{Title: "Machine", Header: []string{"", ""}}
	for _, r := range m.Rows() {
		t.Add(r[0], r[1])
	}
	return t
}

func orUnknown(s string) string {
	if strings.TrimSpace(s) == "" {
		return "unknown"
	}
	return s
}

// readFirst returns the first non-empty result of parse over path's lines.
func readFirst(path string, parse func(line string) string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v := parse(sc.Text()); v != "" {
			return v
		}
	}
	return ""
}

// cpuModel parses a "model name : …" line of /proc/cpuinfo.
func cpuModel(line string) string {
	k, v, ok := strings.Cut(line, ":")
	if !ok || strings.TrimSpace(k) != "model name" {
		return ""
	}
	return strings.Join(strings.Fields(v), " ")
}

// memTotal parses "MemTotal: 4028376 kB" into "3.8 GiB".
func memTotal(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "MemTotal:" {
		return ""
	}
	kb, err := strconv.ParseFloat(f[1], 64)
	if err != nil || kb < 0 {
		return ""
	}
	return fmt.Sprintf("%.1f GiB", kb/(1<<20))
}

// loadAvg keeps the three averages of /proc/loadavg.
func loadAvg(s string) string {
	f := strings.Fields(s)
	if len(f) < 3 {
		return ""
	}
	for _, x := range f[:3] {
		if _, err := strconv.ParseFloat(x, 64); err != nil {
			return ""
		}
	}
	return strings.Join(f[:3], " ")
}

// LoadNow is the 1-minute load average now ("" if unreadable); the report
// shows it at the start and at the end of a run.
func LoadNow() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return loadAvg(string(b))
}
