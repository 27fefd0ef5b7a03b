package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("RBEE_HUB_AS_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  string
		code int
		out  string
	}{
		{"version", []string{"--version"}, "", 0, "rbee-model-hub "},
		{"unknown flag", []string{"--nope"}, "", 2, "flag provided but not defined"},
		{"bad rate", []string{"--rate-bytes-per-sec", "fast"}, "", 2, "--rate-bytes-per-sec"},
		{"bad HUB_RATE", nil, "HUB_RATE=slow", 2, "--rate-bytes-per-sec"},
		{"bad cut", []string{"--cut-after-bytes", "-1"}, "", 2, "--cut-after-bytes"},
		{"unknown wrong-sha256 model", []string{"--wrong-sha256", "rbee/nope:model.bin"}, "", 2, "rbee/nope:model.bin"},
		{"extra arg", []string{"serve"}, "", 2, "unexpected argument"},
		{"bad listen", []string{"--listen", "256.0.0.1:99999"}, "", 1, "listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.args...)
			cmd.Env = append(os.Environ(), "RBEE_HUB_AS_MAIN=1", tc.env)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.out) {
				t.Fatalf("exit %d, output %q; want %d containing %q", code, out, tc.code, tc.out)
			}
		})
	}
}
