package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want Stats
	}{
		{"empty", nil, Stats{}},
		{"one", []float64{2}, Stats{N: 1, Min: 2, P25: 2, Median: 2, P75: 2, P99: 2, Max: 2, Mean: 2}},
		{"odd count, unsorted: median is the middle run", []float64{5, 1, 3, 2, 4}, Stats{N: 5, Min: 1, P25: 2, Median: 3, P75: 4, P99: 4.96, Max: 5, Mean: 3}},
		{"even count interpolates", []float64{4, 1, 3, 2}, Stats{N: 4, Min: 1, P25: 1.75, Median: 2.5, P75: 3.25, P99: 3.97, Max: 4, Mean: 2.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			got := Summarize(tc.in)
			if !statsClose(got, tc.want) {
				t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
			}
			for i := range in {
				if in[i] != tc.in[i] {
					t.Fatalf("Summarize modified its input: %v, was %v", tc.in, in)
				}
			}
		})
	}
}

func statsClose(a, b Stats) bool {
	c := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.N == b.N && c(a.Min, b.Min) && c(a.P25, b.P25) && c(a.Median, b.Median) && c(a.P75, b.P75) &&
		c(a.P99, b.P99) && c(a.Max, b.Max) && c(a.Mean, b.Mean)
}

func TestPercentileBadInput(t *testing.T) {
	for _, tc := range []struct {
		xs []float64
		p  float64
	}{{nil, 50}, {[]float64{1}, -1}, {[]float64{1}, 101}, {[]float64{1}, math.NaN()}} {
		if got := Percentile(tc.xs, tc.p); !math.IsNaN(got) {
			t.Errorf("Percentile(%v, %v) = %v, want NaN", tc.xs, tc.p, got)
		}
	}
	if got := Percentile([]float64{10, 0}, 50); got != 5 {
		t.Errorf("Percentile([10 0], 50) = %v, want 5", got)
	}
}

func TestRatio(t *testing.T) {
	if r := Ratio(1, 4); r != 0.25 {
		t.Errorf("Ratio(1,4) = %v", r)
	}
	for _, r := range []float64{Ratio(1, 0), Ratio(math.NaN(), 1), Ratio(1, math.NaN())} {
		if !math.IsNaN(r) {
			t.Errorf("want NaN, got %v", r)
		}
	}
}

func TestFormatters(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{Secs(1.234), "1.23 s"},
		{Secs(0.0456), "46 ms"},
		{Secs(-0.004), "-4.00 ms"},
		{Secs(0.0123), "12 ms"},
		{IQR(Summarize([]float64{1, 2, 3, 4, 5})), "2.00–4.00 s"},
		{Secs(math.NaN()), "n/a"},
		{Times(0.625), "0.62×"},
		{Times(math.Inf(1)), "n/a"},
		{Rate(12345.4), "12 345/s"},
		{Rate(999), "999/s"},
		{Rate(1234567), "1 234 567/s"},
		{MiB(3 << 20), "3.0 MiB"},
		{Spread(Summarize([]float64{1.1, 1.4})), "1.10–1.40 s"},
		{Spread(Summarize([]float64{0.01, 0.2})), "10–200 ms"},
		{Spread(Stats{}), "n/a"},
		{Dur(1234567 * time.Microsecond), "1.23s"},
		{Dur(90 * time.Second), "1m30s"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestTableMarkdownEscapes(t *testing.T) {
	tb := Table{Title: "T", Header: []string{"a", "b"}, Notes: []string{"n"}}
	tb.Add("x|y", "line1\nline2")
	tb.Add("only one")
	got := tb.Markdown()
	want := "### T\n\n| a | b |\n|---|---|\n| x\\|y | line1<br>line2 |\n| only one |  |\n\n- n\n"
	if got != want {
		t.Errorf("Markdown:\n%s\nwant:\n%s", got, want)
	}
	var b strings.Builder
	if err := tb.Text(&b); err != nil || !strings.Contains(b.String(), "only one") || !strings.Contains(b.String(), "  n\n") {
		t.Errorf("Text = %q, %v", b.String(), err)
	}
}

func TestReplaceBench(t *testing.T) {
	sec := beginMarker + "\nNEW\n" + endMarker + "\n"
	soak := "## Soak 2026\n\nrows\n"
	for _, tc := range []struct {
		name, doc, want string
		err             bool
	}{
		{name: "empty file gets the intro", doc: "", want: reportIntro + sec},
		{name: "replaces the old section, keeps soak sections",
			doc:  reportIntro + beginMarker + "\nOLD\n" + endMarker + "\n\n" + soak,
			want: reportIntro + sec + "\n" + soak},
		{name: "a file with only soak sections gets the bench section first",
			doc:  reportIntro + soak,
			want: reportIntro + sec + "\n" + soak},
		{name: "end marker missing", doc: beginMarker + "\nOLD\n", err: true},
		{name: "markers reversed", doc: endMarker + "\n" + beginMarker + "\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReplaceBench(tc.doc, sec)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Errorf("got:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestMachineParsers(t *testing.T) {
	if got := cpuModel("model name\t: Intel(R)  Xeon(R) CPU @ 2.20GHz"); got != "Intel(R) Xeon(R) CPU @ 2.20GHz" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel("flags : fpu"); got != "" {
		t.Errorf("cpuModel(flags) = %q", got)
	}
	if got := memTotal("MemTotal:        4028376 kB"); got != "3.8 GiB" {
		t.Errorf("memTotal = %q", got)
	}
	for _, bad := range []string{"MemFree: 1 kB", "MemTotal: x kB", "MemTotal:"} {
		if got := memTotal(bad); got != "" {
			t.Errorf("memTotal(%q) = %q, want empty", bad, got)
		}
	}
	if got := loadAvg("3.62 2.18 2.04 3/412 12345\n"); got != "3.62 2.18 2.04" {
		t.Errorf("loadAvg = %q", got)
	}
	for _, bad := range []string{"", "1 2", "a b c"} {
		if got := loadAvg(bad); got != "" {
			t.Errorf("loadAvg(%q) = %q", bad, got)
		}
	}
}

func TestProcParsers(t *testing.T) {
	rss, err := parseVmRSS("Name:\tqueen\nVmRSS:\t   10240 kB\n")
	if err != nil || rss != 10240*1024 {
		t.Errorf("parseVmRSS = %v, %v", rss, err)
	}
	if _, err := parseVmRSS("Name: x\n"); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
	// Field 2 with spaces and a ')' inside; utime 7, stime 5.
	stat := "123 (a b) c) S 1 123 123 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 8 0 555 0 0"
	if n, err := parseStatCPU(stat); err != nil || n != 12 {
		t.Errorf("parseStatCPU = %v, %v; want 12", n, err)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseStatCPU(bad); err == nil {
			t.Errorf("parseStatCPU(%q): no error", bad)
		}
	}
}

func TestQueenConfig(t *testing.T) {
	toml, hives := queenConfig(18500, "/tmp/k")
	for _, want := range []string{`listen     = "127.0.0.1:18500"`, `public_url = "http://127.0.0.1:18500"`, `stale_after = "10m"`, `secret_file     = "/tmp/k"`, `standalone_hive = "bench"`} {
		if !strings.Contains(toml, want) {
			t.Errorf("queen.toml lacks %q:\n%s", want, toml)
		}
	}
	if !strings.Contains(hives, "[[hive]]") || !strings.Contains(hives, `hostname   = "127.0.0.1"`) {
		t.Errorf("hives.conf:\n%s", hives)
	}
}
