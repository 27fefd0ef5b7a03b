//go:build docker

package httpcomm

import (
	"bufio"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// keepaliveInterval is PROTOCOL's ": keepalive every 15 s" of a silent stream.
const keepaliveInterval = 15 * time.Second

// rawLine is one line of an SSE stream and when it arrived.
type rawLine struct {
	at   time.Time
	text string
}

// rawLines reads the stream at url line by line, comments included, to EOF.
func rawLines(ctx context.Context, url string) ([]rawLine, error) {
	body, err := openStream(ctx, url, 0)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var ls []rawLine
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ls = append(ls, rawLine{at: time.Now(), text: sc.Text()})
	}
	return ls, sc.Err()
}

// During a long silence of the worker (one token, then nothing for longer
// than every idle limit on the path) the queen's stream carries
// ": keepalive" comments about every 15 s: a client whose idle watchdog is
// longer than that interval never reconnects, one whose watchdog is
// shorter does (negative control), and the queen's relay of the worker's
// stream is never cut for idleness (the worker logs no resume).
func TestKeepalivesThroughRelay(t *testing.T) {
	t.Parallel()
	// 40 s between tokens: more than the queen's idle limit on the worker
	// stream (max(2 × 15 s, [http] timeout) = 30 s) and than the client
	// watchdog used below (25 s).
	const tokenDelay = 40 * time.Second
	h := integration.Start(t, integration.FullStack, integration.WithServices("queen", "worker-1"),
		integration.WithEnv(map[string]string{"RBEE_TOKEN_DELAY": tokenDelay.String()}))
	ctx := suite.Context(t, 4*time.Minute)
	q := h.MustQueen(t)
	if _, err := checks.AwaitWorker(ctx, q, "worker-1", 30*time.Second, "fresh", checks.Fresh); err != nil {
		t.Fatal(err)
	}
	seed := uint64(3)
	// Raw access: the job is read by a raw byte reader and by two clients
	// with watchdogs of their own, which is what the test compares; the
	// History reads it once more at the end.
	var hist checks.History
	acc, err := hist.Submit(ctx, q, api.JobRequest{Operation: api.OpInfer, Model: suite.TinyModel, Prompt: "Alice", MaxTokens: 2, Seed: &seed})
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	var lines []rawLine
	var linesErr error
	wg.Go(func() { lines, linesErr = rawLines(ctx, q.BaseURL()+"/v1/jobs/"+acc.JobID+"/stream") })
	// A watchdog longer than the keepalive interval: must never fire.
	var patient client.Outcome
	var patientErr error
	wg.Go(func() {
		c := client.New(q.BaseURL(), client.WithIdleTimeout(25*time.Second), client.WithReconnects(0))
		patient, patientErr = c.Follow(ctx, acc.JobID, 0, nil)
	})
	// Negative control: a watchdog shorter than the interval fires in the
	// silence and resumes (so the silence is real and watchdogs work).
	var eager client.Outcome
	var eagerErr error
	wg.Go(func() {
		c := client.New(q.BaseURL(), client.WithIdleTimeout(5*time.Second), client.WithReconnects(50))
		eager, eagerErr = c.Follow(ctx, acc.JobID, 0, nil)
	})
	wg.Wait()
	if linesErr != nil || patientErr != nil || eagerErr != nil {
		t.Fatalf("raw reader: %v; client with 25 s watchdog: %v; client with 5 s watchdog: %v", linesErr, patientErr, eagerErr)
	}

	// The raw bytes: the silence between the two tokens holds keepalive
	// comments, about one per interval, and no line is ever further apart
	// than an interval plus scheduling slack.
	var tokenAt []time.Time
	var keepalives []time.Time
	for i, l := range lines {
		switch {
		case l.text == "event: "+api.EventToken:
			tokenAt = append(tokenAt, l.at)
		case l.text == ": keepalive":
			keepalives = append(keepalives, l.at)
		case strings.HasPrefix(l.text, ":"):
			t.Errorf("line %d: unexpected comment %q", i, l.text)
		}
	}
	if len(tokenAt) != 2 {
		t.Fatalf("%d token events on the raw stream, want 2", len(tokenAt))
	}
	silence := tokenAt[1].Sub(tokenAt[0])
	if silence < tokenDelay-time.Second {
		t.Fatalf("tokens %v apart; the worker's token delay is %v, so the test had no silence", silence, tokenDelay)
	}
	var inSilence []time.Time
	for _, k := range keepalives {
		if k.After(tokenAt[0]) && k.Before(tokenAt[1]) {
			inSilence = append(inSilence, k)
		}
	}
	// 40 s of silence hold two or three 15 s ticks (the ticker starts when
	// the stream is opened, not at the token).
	if n := len(inSilence); n < int(silence/keepaliveInterval)-1 || n > int(silence/keepaliveInterval)+1 {
		t.Fatalf("%d keepalives during %v of silence; want about one per %v", n, silence.Round(time.Second), keepaliveInterval)
	}
	prev := tokenAt[0]
	for _, k := range append(inSilence, tokenAt[1]) {
		if gap := k.Sub(prev); gap > keepaliveInterval+8*time.Second {
			t.Fatalf("nothing arrived for %v during the silence; keepalives should come every %v", gap.Round(time.Millisecond), keepaliveInterval)
		}
		prev = k
	}
	for i := 1; i < len(inSilence); i++ {
		if gap := inSilence[i].Sub(inSilence[i-1]); gap < keepaliveInterval-5*time.Second {
			t.Fatalf("keepalives %v apart; want about %v", gap.Round(time.Millisecond), keepaliveInterval)
		}
	}

	if patient.Kind != sse.Done || patient.Reconnects != 0 || len(patient.Events) == 0 {
		t.Fatalf("client with a 25 s watchdog: ended %s after %d reconnects; want [DONE] without reconnecting (keepalives reset the watchdog)", patient.Terminator(), patient.Reconnects)
	}
	if eager.Kind != sse.Done || eager.Reconnects == 0 {
		t.Fatalf("client with a 5 s watchdog: ended %s after %d reconnects; want [DONE] after at least one (its watchdog fires in the silence)", eager.Terminator(), eager.Reconnects)
	}
	if !sameEvents(patient.Events, eager.Events) {
		t.Fatalf("the resuming client saw %d events, the patient one %d: a resume lost or repeated events", len(eager.Events), len(patient.Events))
	}

	// The queen's own reader of the worker stream was kept alive by the
	// worker's keepalives: it never had to resume.
	if logs := h.MustLogs(t, "worker-1"); strings.Contains(logs, "stream resumed") {
		t.Fatalf("the worker's stream was resumed, so the queen's relay went idle:\n%s", grepLines(logs, "stream resumed"))
	}
	t.Logf("silence %v: %d keepalives; 5 s watchdog reconnected %d times", silence.Round(time.Millisecond), len(inSilence), eager.Reconnects)
	if _, err := hist.Adopt(ctx, q, api.OpInfer, acc.JobID, nil); err != nil {
		t.Fatalf("following queen job %s again: %v", acc.JobID, err)
	}
	suite.NothingLost(t, time.Minute, q, &hist)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
