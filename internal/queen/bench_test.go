package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/auth"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/jobs"
	"github.com/rbee-dev/rbee/internal/sse"
)

func benchQueen(b *testing.B, hives []config.Hive) *Server {
	b.Helper()
	s, err := New(testConfig(), hives, Options{Logf: func(string, ...any) {}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(5 * time.Second) })
	return s
}

// BenchmarkWorkerHeartbeat measures heartbeat ingest through the HTTP
// handler (decode, validate, registry update, answer), 1000 distinct
// workers, each heartbeat freshly timestamped (the queen refuses one that
// is not newer than the last); /signed is the same with the cluster
// secret: signature and window checked, standalone workers bound.
func BenchmarkWorkerHeartbeat(b *testing.B) {
	b.Run("open", func(b *testing.B) { benchHeartbeats(b, nil) })
	key, err := auth.NewKey(bytes.Repeat([]byte{7}, auth.KeySize))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("signed", func(b *testing.B) { benchHeartbeats(b, key) })
}

func benchHeartbeats(b *testing.B, key *auth.Key) {
	cfg := testConfig()
	cfg.Auth.StandaloneHive = "bench"
	s, err := New(cfg, nil, Options{Logf: func(string, ...any) {}, Key: key})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close(5 * time.Second) })
	h := s.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	var mu sync.Mutex
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		g := n
		n++
		mu.Unlock()
		// Goroutine g owns workers g, g+64, …: each worker's heartbeats are in order.
		for i := g; pb.Next(); i += 64 {
			body, _ := json.Marshal(api.WorkerHeartbeat{WorkerID: fmt.Sprintf("w-%d-%d", g, i%1000), HiveID: "bench",
				Model: "org/repo:file", Device: "cpu:0", URL: "http://10.0.0.1:9100", State: "ready", Timestamp: time.Now()})
			req := httptest.NewRequest(http.MethodPost, "/v1/worker-heartbeat", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if key != nil {
				key.Sign(req, body)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}

// from the stream, over real HTTP, for a forwarded-free op (hive_get).
func BenchmarkSubmitToFirstEvent(b *testing.B) {
	s := benchQueen(b, []config.Hive{{Alias: "hive-1", Hostname: "127.0.0.1", HivePort: 1, SSHPort: 22, SSHUser: "rbee"}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	c := client.New(srv.URL)
	ctx := context.Background()
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		acc, err := c.Submit(ctx, api.JobRequest{Operation: api.OpHiveGet, Alias: "hive-1"})
		if err != nil {
			b.Fatal(err)
		}
		errFirst := fmt.Errorf("first")
		_, err = c.Follow(ctx, acc.JobID, 0, func(sse.Event) error { return errFirst })
		if err != errFirst {
			b.Fatalf("follow: %v", err)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/first-event")
}

// BenchmarkStreamReaders1000 has 1000 concurrent readers follow one job
// (100 events, then [DONE]) over HTTP, and reports heap per reader while
// they are all connected.
func BenchmarkStreamReaders1000(b *testing.B) {
	const readers = 1000
	s := benchQueen(b, nil)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: readers, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	c := client.New(srv.URL, client.WithHTTPClient(hc))
	ctx := context.Background()
	var perReader float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		release := make(chan struct{})
		j := s.engine.Submit("bench", func(ctx context.Context, j *jobs.Job) error {
			for k := 0; k < 50; k++ {
				j.Emit(api.EventToken, api.Token{T: "x", I: k})
			}
			<-release
			for k := 50; k < 100; k++ {
				j.Emit(api.EventToken, api.Token{T: "x", I: k})
			}
			return nil
		})
		runtime.GC()
		var before, during runtime.MemStats
		runtime.ReadMemStats(&before)
		var wg sync.WaitGroup
		var connected sync.WaitGroup
		connected.Add(readers)
		errs := make(chan error, readers)
		for r := 0; r < readers; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen := 0
				once := false
				out, err := c.Follow(ctx, j.ID(), 0, func(ev sse.Event) error {
					seen++
					if !once && seen == 50 {
						once = true
						connected.Done()
					}
					return nil
				})
				if err != nil || out.Kind != sse.Done || seen != 100 {
					errs <- fmt.Errorf("reader: %v %s %d", err, out.Terminator(), seen)
				}
			}()
		}
		connected.Wait()
		runtime.ReadMemStats(&during)
		perReader = float64(int64(during.HeapInuse)-int64(before.HeapInuse)) / readers
		close(release)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perReader, "heap-B/reader")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines-after")
}
