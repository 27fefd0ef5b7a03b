package hive

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/rbee-dev/rbee/internal/api"
)

// SimulatedVRAMGB is the VRAM each simulated GPU reports.
const SimulatedVRAMGB = 24

// buildDevices returns CPU-0 (the real CPU, with its model name and the
// machine's memory in GB) followed by gpus simulated GPUs GPU-0…
func buildDevices(gpus int) []api.Device {
	devs := []api.Device{{
		ID:         "CPU-0",
		Name:       cpuName(),
		DeviceType: "cpu",
		VRAMGB:     memGB(),
		Simulated:  false,
	}}
	for i := 0; i < gpus; i++ {
		devs = append(devs, api.Device{
			ID:         fmt.Sprintf("GPU-%d", i),
			Name:       fmt.Sprintf("simulated GPU %d", i),
			DeviceType: "gpu",
			VRAMGB:     SimulatedVRAMGB,
			Simulated:  true,
		})
	}
	return devs
}

func cpuName() string {
	f, err := os.Open("/proc/cpuinfo")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				if v = strings.TrimSpace(v); v != "" {
					return fmt.Sprintf("%s (%d threads)", v, runtime.NumCPU())
				}
			}
		}
	}
	return fmt.Sprintf("%s CPU (%d threads)", runtime.GOARCH, runtime.NumCPU())
}

// memGB is MemTotal from /proc/meminfo in GB (one decimal), 0 if unknown.
// A CPU's "vram" is the machine's memory.
func memGB() float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				return 0
			}
			return float64(int(kb/1024/1024*10+0.5)) / 10
		}
	}
	return 0
}

// deviceNames are the addressable names of the hive's devices: "cpu:0",
// "gpu:0", … in the order of buildDevices.
func deviceNames(gpus int) []string {
	names := []string{"cpu:0"}
	for i := 0; i < gpus; i++ {
		names = append(names, fmt.Sprintf("gpu:%d", i))
	}
	return names
}

// checkDevice validates a device name ("cpu:0", "gpu:1") against this
// hive's devices; the error names the device and lists the valid ones.
func (s *Server) checkDevice(dev string) error {
	for _, n := range deviceNames(s.cfg.GPUs) {
		if dev == n {
			return nil
		}
	}
	return &api.RequestError{Msg: fmt.Sprintf("unknown device %q on %s; valid devices: %s",
		dev, s.cfg.HiveID, strings.Join(deviceNames(s.cfg.GPUs), ", "))}
}
