package testrun

import (
	"strings"
	"testing"
)

func TestDockerParallel(t *testing.T) {
	t.Setenv(ParallelEnv, "")
	if n, err := DockerParallel(); err != nil || n != DefaultParallel {
		t.Fatalf("unset: %d, %v; want %d", n, err, DefaultParallel)
	}
	for _, ok := range []struct {
		v    string
		want int
	}{{"1", 1}, {" 3 ", 3}, {"8", 8}} {
		t.Setenv(ParallelEnv, ok.v)
		if n, err := DockerParallel(); err != nil || n != ok.want {
			t.Errorf("%q: %d, %v; want %d", ok.v, n, err, ok.want)
		}
	}
	for _, bad := range []string{"0", "-1", "9", "two", "1.5"} {
		t.Setenv(ParallelEnv, bad)
		n, err := DockerParallel()
		if err == nil || !strings.Contains(err.Error(), ParallelEnv) || !strings.Contains(err.Error(), "1 to 8") {
			t.Errorf("%q: %d, %v; want an error naming the variable and the range", bad, n, err)
		}
	}
	// A bad value stops the run before go test starts.
	t.Setenv(ParallelEnv, "0")
	if err := Run(t.Context(), Options{Root: t.TempDir(), JUnitDir: t.TempDir()}, Spec{Name: "x", Packages: []string{"./..."}, Docker: true}); err == nil || !strings.Contains(err.Error(), ParallelEnv) {
		t.Fatalf("Run with %s=0: %v", ParallelEnv, err)
	}
}

func TestDockerTestParallel(t *testing.T) {
	t.Setenv(TestParallelEnv, "")
	if n, err := DockerTestParallel(); err != nil || n != DefaultTestParallel {
		t.Fatalf("unset: %d, %v; want %d", n, err, DefaultTestParallel)
	}
	t.Setenv(TestParallelEnv, " 5 ")
	if n, err := DockerTestParallel(); err != nil || n != 5 {
		t.Fatalf("\" 5 \": %d, %v; want 5", n, err)
	}
	for _, bad := range []string{"0", "9", "all"} {
		t.Setenv(TestParallelEnv, bad)
		n, err := DockerTestParallel()
		if err == nil || !strings.Contains(err.Error(), TestParallelEnv) || !strings.Contains(err.Error(), "1 to 8") {
			t.Errorf("%q: %d, %v; want an error naming the variable and the range", bad, n, err)
		}
	}
	// A bad value stops a Docker run before go test starts.
	t.Setenv(TestParallelEnv, "0")
	if err := Run(t.Context(), Options{Root: t.TempDir(), JUnitDir: t.TempDir()}, Spec{Name: "x", Packages: []string{"./..."}, Docker: true}); err == nil || !strings.Contains(err.Error(), TestParallelEnv) {
		t.Fatalf("Run with %s=0: %v", TestParallelEnv, err)
	}
}
