package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMain lets the test binary act as rbee-keeper.
func TestMain(m *testing.M) {
	if os.Getenv("RBEE_KEEPER_AS_MAIN") == "1" {
		main()
	}
	os.Exit(m.Run())
}

func TestProcessExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--version"}, 0, "rbee-keeper "},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--queen", "http://127.0.0.1:1", "status"}, 1, "connection refused"},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), "RBEE_KEEPER_AS_MAIN=1")
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(string(out), tc.out) {
			t.Errorf("%v: exit %d, %q; want %d containing %q", tc.args, code, out, tc.code, tc.out)
		}
	}
}
