// Package keeper is the rbee-keeper CLI (PROTOCOL.md §7): it turns a
// command line into a queen job, submits it, follows the job's stream
// (narration to stderr; results and tokens to stdout; --json prints the raw
// events), resumes a dropped stream with Last-Event-ID, cancels the job on
// Ctrl-C, and maps the terminator to the exit status: 0 [DONE], 1 [ERROR],
// 130 [CANCELLED], 2 usage error.
//
// Main is the whole program, so tests run it in-process against an
// httptest queen. Run its tests with: go test ./internal/keeper/
package keeper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/buildinfo"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

// Exit statuses.
const (
	ExitOK        = 0
	ExitError     = 1
	ExitUsage     = 2
	ExitCancelled = 130
)

// Program is the command's name in messages.
const Program = "rbee-keeper"

// DefaultQueen is the queen URL when neither --queen nor RBEE_QUEEN_URL is set.
const DefaultQueen = "http://localhost:8500"

// QueenEnv names the environment variable with the queen's URL.
const QueenEnv = "RBEE_QUEEN_URL"

// DefaultMaxTokens is infer's --max-tokens default.
const DefaultMaxTokens = 64

// CancelGrace is how long, after Ctrl-C, the keeper waits for the job's
// [CANCELLED] before giving up on it. A variable so tests can shorten it.
var CancelGrace = 5 * time.Second

const usageText = `usage: rbee-keeper [--queen URL] [--json] COMMAND [ARGS]

Commands:
  status                                     hives and workers known to the queen
  hive list
  hive get|status|install|uninstall|start|stop|refresh -a ALIAS
                                             (install also takes --force)
  worker spawn --hive H --model M [--device cpu:0]
  worker list --hive H
  worker get|delete --hive H WORKER_ID
  model download|get|delete --hive H MODEL   (MODEL is org/repo:file)
  model list --hive H
  infer --model M [--hive H] [--max-tokens N] [--temperature T] [--seed S] PROMPT
  workers                                    the queen's worker registry (GET /v1/workers)
  hives                                      the queen's hive registry (GET /v1/hives)
  help                                       this text

Global flags (before or after the command):
  --queen URL        queen base URL (default $RBEE_QUEEN_URL, else http://localhost:8500)
  --json             print raw events as JSON lines on stdout
  --reconnects N     how often a dropped stream is resumed (default 10)
  --version          print the version and exit

Exit status: 0 [DONE], 1 [ERROR] or queen unreachable, 130 [CANCELLED] or
interrupted, 2 usage error.
`

// UsageError is a command-line mistake (exit status 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

type globals struct {
	queen      string
	json       bool
	reconnects int
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.queen, "queen", g.queen, "queen base URL")
	fs.BoolVar(&g.json, "json", g.json, "print raw events as JSON lines")
	fs.IntVar(&g.reconnects, "reconnects", g.reconnects, "stream resumes allowed")
}

// invocation is a parsed command line: a job to run, or a registry view.
type invocation struct {
	job      *api.JobRequest
	registry string // "workers" or "hives"
	help     bool
}

// Main runs rbee-keeper with args (without the program name). Cancelling
// ctx is Ctrl-C: the running job is cancelled on the queen and Main
// returns 130 once [CANCELLED] arrives or CancelGrace has passed.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := globals{queen: DefaultQueen, reconnects: 10}
	if v := os.Getenv(QueenEnv); v != "" {
		g.queen = v
	}
	top := newFlagSet("")
	g.register(top)
	version := top.Bool("version", false, "print the version")
	help := top.Bool("help", false, "")
	top.BoolVar(help, "h", false, "")
	if err := top.Parse(args); err != nil {
		return usageFail(stderr, err)
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Line(Program))
		return ExitOK
	}
	if *help {
		fmt.Fprint(stdout, usageText)
		return ExitOK
	}
	inv, err := parse(top.Args(), &g)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return ExitOK
	}
	if err != nil {
		return usageFail(stderr, err)
	}
	if inv.help {
		fmt.Fprint(stdout, usageText)
		return ExitOK
	}
	if u, err := url.Parse(g.queen); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageFail(stderr, usagef("--queen %q: want an http(s)://host:port URL", g.queen))
	}
	if g.reconnects < 0 {
		return usageFail(stderr, usagef("--reconnects %d must not be negative", g.reconnects))
	}
	c := client.New(g.queen, client.WithReconnects(g.reconnects))
	if inv.registry != "" {
		return showRegistry(ctx, c, inv.registry, stdout, stderr)
	}
	return runJob(ctx, c, *inv.job, g.json, stdout, stderr)
}

func usageFail(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "%s: %v\nRun '%s help' for usage.\n", Program, err, Program)
	return ExitUsage
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(strings.TrimSpace(Program+" "+name), flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by usageFail
	return fs
}

// parseInterleaved parses flags anywhere among the positional arguments
// (std flag stops at the first positional); "--" ends flag parsing.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &UsageError{Msg: err.Error()}
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return usagef("%s takes no arguments, got %q", cmd, pos[0])
	}
	return nil
}

func required(cmd, flagName, v string) error {
	if strings.TrimSpace(v) == "" {
		return usagef("%s: missing %s", cmd, flagName)
	}
	return nil
}

// onePositional returns the single positional argument of cmd (or the
// flag value when given instead).
func onePositional(cmd, what, flagVal string, pos []string) (string, error) {
	switch {
	case flagVal != "" && len(pos) == 0:
		return flagVal, nil
	case flagVal != "" || len(pos) > 1:
		return "", usagef("%s: unexpected argument %q", cmd, pos[len(pos)-1])
	case len(pos) == 0:
		return "", usagef("%s: missing %s", cmd, what)
	}
	return pos[0], nil
}

var hiveOps = map[string]string{
	"list": api.OpHiveList, "get": api.OpHiveGet, "status": api.OpHiveStatus, "install": api.OpHiveInstall,
	"uninstall": api.OpHiveUninstall, "start": api.OpHiveStart, "stop": api.OpHiveStop, "refresh": api.OpHiveRefreshCapabilities,
}

var workerOps = map[string]string{
	"spawn": api.OpWorkerSpawn, "list": api.OpWorkerProcessList, "get": api.OpWorkerProcessGet, "delete": api.OpWorkerProcessDelete,
}

var modelOps = map[string]string{
	"download": api.OpModelDownload, "list": api.OpModelList, "get": api.OpModelGet, "delete": api.OpModelDelete,
}

func verbs(m map[string]string) string {
	order := []string{"list", "get", "status", "install", "uninstall", "start", "stop", "refresh", "spawn", "delete", "download"}
	var out []string
	for _, v := range order {
		if _, ok := m[v]; ok {
			out = append(out, v)
		}
	}
	return strings.Join(out, ", ")
}

// parse turns the command and its arguments into an invocation.
func parse(args []string, g *globals) (invocation, error) {
	if len(args) == 0 {
		return invocation{}, usagef("missing command")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		return invocation{help: true}, nil
	case "status", "workers", "hives":
		fs := newFlagSet(cmd)
		g.register(fs)
		pos, err := parseInterleaved(fs, rest)
		if err != nil {
			return invocation{}, err
		}
		if err := noArgs(cmd, pos); err != nil {
			return invocation{}, err
		}
		if cmd == "status" {
			return invocation{job: &api.JobRequest{Operation: api.OpStatus}}, nil
		}
		return invocation{registry: cmd}, nil // the queen's registry views
	case "hive", "worker", "model":
		return parseGroup(cmd, rest, g)
	case "infer":
		return parseInfer(rest, g)
	}
	return invocation{}, usagef("unknown command %q (commands: status, hive, worker, model, infer, workers, hives, help)", cmd)
}

func parseGroup(group string, args []string, g *globals) (invocation, error) {
	ops := map[string]map[string]string{"hive": hiveOps, "worker": workerOps, "model": modelOps}[group]
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return invocation{}, usagef("%s: missing subcommand (one of %s)", group, verbs(ops))
	}
	verb, rest := args[0], args[1:]
	op, ok := ops[verb]
	if !ok {
		return invocation{}, usagef("%s: unknown subcommand %q (one of %s)", group, verb, verbs(ops))
	}
	cmd := group + " " + verb
	fs := newFlagSet(cmd)
	g.register(fs)
	req := api.JobRequest{Operation: op}
	var alias, hive, mdl, device, id string
	var force bool
	switch group {
	case "hive":
		fs.StringVar(&alias, "a", "", "hive alias")
		fs.StringVar(&alias, "alias", "", "hive alias")
		if verb == "install" {
			fs.BoolVar(&force, "force", false, "overwrite an installed binary")
		}
	case "worker", "model":
		fs.StringVar(&hive, "hive", "", "hive id")
		fs.StringVar(&hive, "hive-id", "", "hive id")
		if group == "worker" && verb == "spawn" {
			fs.StringVar(&mdl, "model", "", "model id")
			fs.StringVar(&device, "device", "cpu:0", "device (cpu:N, gpu:N)")
		}
		if group == "worker" && (verb == "get" || verb == "delete") {
			fs.StringVar(&id, "id", "", "worker id")
		}
		if group == "model" && verb != "list" {
			fs.StringVar(&mdl, "model", "", "model id")
		}
	}
	pos, err := parseInterleaved(fs, rest)
	if err != nil {
		return invocation{}, err
	}
	switch group {
	case "hive":
		if verb == "list" {
			if err := noArgs(cmd, pos); err != nil {
				return invocation{}, err
			}
			break
		}
		if req.Alias, err = onePositional(cmd, "-a ALIAS", alias, pos); err != nil {
			return invocation{}, err
		}
		req.Force = force
	case "worker":
		if err := required(cmd, "--hive H", hive); err != nil {
			return invocation{}, err
		}
		req.HiveID = hive
		switch verb {
		case "spawn":
			if err := noArgs(cmd, pos); err != nil {
				return invocation{}, err
			}
			if err := required(cmd, "--model M", mdl); err != nil {
				return invocation{}, err
			}
			if err := required(cmd, "--device D", device); err != nil {
				return invocation{}, err
			}
			req.Model, req.Device = mdl, device
		case "list":
			if err := noArgs(cmd, pos); err != nil {
				return invocation{}, err
			}
		default:
			if req.WorkerID, err = onePositional(cmd, "WORKER_ID", id, pos); err != nil {
				return invocation{}, err
			}
		}
	case "model":
		if err := required(cmd, "--hive H", hive); err != nil {
			return invocation{}, err
		}
		req.HiveID = hive
		if verb == "list" {
			if err := noArgs(cmd, pos); err != nil {
				return invocation{}, err
			}
			break
		}
		if req.Model, err = onePositional(cmd, "MODEL (org/repo:file)", mdl, pos); err != nil {
			return invocation{}, err
		}
	}
	return invocation{job: &req}, nil
}

func parseInfer(args []string, g *globals) (invocation, error) {
	fs := newFlagSet("infer")
	g.register(fs)
	var mdl, hive string
	fs.StringVar(&mdl, "model", "", "model id")
	fs.StringVar(&hive, "hive", "", "only use workers on this hive")
	fs.StringVar(&hive, "hive-id", "", "only use workers on this hive")
	maxTokens := fs.Int("max-tokens", DefaultMaxTokens, "tokens to generate (1..2048)")
	temperature := fs.Float64("temperature", 0, "sampling temperature (0 = argmax)")
	seed := fs.Uint64("seed", 0, "sampling seed")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return invocation{}, err
	}
	if err := required("infer", "--model M", mdl); err != nil {
		return invocation{}, err
	}
	prompt := strings.Join(pos, " ")
	if strings.TrimSpace(prompt) == "" {
		return invocation{}, usagef("infer: missing PROMPT")
	}
	if *maxTokens < api.MinMaxTokens || *maxTokens > api.MaxMaxTokens {
		return invocation{}, usagef("infer: --max-tokens %d out of range %d..%d", *maxTokens, api.MinMaxTokens, api.MaxMaxTokens)
	}
	req := api.JobRequest{Operation: api.OpInfer, Model: mdl, HiveID: hive, Prompt: prompt, MaxTokens: *maxTokens}
	// Only send what the user chose, so the queen's defaults apply otherwise.
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "temperature":
			req.Temperature = temperature
		case "seed":
			req.Seed = seed
		}
	})
	if req.Temperature != nil && *req.Temperature < 0 {
		return invocation{}, usagef("infer: --temperature %g must not be negative", *req.Temperature)
	}
	return invocation{job: &req}, nil
}

func showRegistry(ctx context.Context, c *client.Client, what string, stdout, stderr io.Writer) int {
	var v any
	var err error
	if what == "workers" {
		v, err = c.Workers(ctx)
	} else {
		v, err = c.Hives(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "%s: interrupted\n", Program)
			return ExitCancelled
		}
		fmt.Fprintf(stderr, "%s: %s from %s: %v\n", Program, what, c.BaseURL(), err)
		return ExitError
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(stdout, "%s\n", b)
	return ExitOK
}

// runJob submits req, follows its stream and maps the terminator to the
// exit status.
func runJob(ctx context.Context, c *client.Client, req api.JobRequest, jsonOut bool, stdout, stderr io.Writer) int {
	acc, err := c.Submit(ctx, req)
	if err != nil {
		var ae *client.APIError
		switch {
		case ctx.Err() != nil:
			fmt.Fprintf(stderr, "%s: interrupted before the queen accepted the job\n", Program)
			return ExitCancelled
		case errors.As(err, &ae) && ae.Status == http.StatusBadRequest:
			fmt.Fprintf(stderr, "%s: the queen rejected the request: %s\n", Program, ae.Message)
			return ExitUsage
		default:
			fmt.Fprintf(stderr, "%s: submitting %s to %s: %v\n", Program, req.Operation, c.BaseURL(), err)
			return ExitError
		}
	}
	if !jsonOut {
		fmt.Fprintf(stderr, "%s: job %s (%s) accepted\n", Program, acc.JobID, req.Operation)
	}
	p := &printer{stdout: stdout, stderr: stderr, json: jsonOut}

	// The stream is followed on its own context: Ctrl-C (ctx) must not
	// cut it, because the [CANCELLED] that follows our DELETE is the
	// answer we wait for.
	followCtx, stopFollow := context.WithCancel(context.Background())
	defer stopFollow()
	grace := CancelGrace
	followed := make(chan struct{})
	interrupted := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-followed:
			return
		case <-ctx.Done():
		}
		close(interrupted)
		fmt.Fprintf(stderr, "%s: interrupted; cancelling job %s\n", Program, acc.JobID)
		// The DELETE is abandoned as soon as the stream has ended (the
		// [CANCELLED] may arrive before the queen answers it).
		cctx, cancel := context.WithTimeout(context.Background(), grace)
		go func() {
			select {
			case <-followed:
				cancel()
			case <-cctx.Done():
			}
		}()
		_, err := c.Cancel(cctx, acc.JobID)
		cancel()
		select {
		case <-followed:
			return
		default:
		}
		if err != nil && !client.IsStatus(err, http.StatusConflict) {
			fmt.Fprintf(stderr, "%s: cancelling job %s: %v\n", Program, acc.JobID, err)
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-followed:
		case <-t.C:
			stopFollow()
		}
	}()
	out, err := c.Follow(followCtx, acc.JobID, 0, p.event)
	close(followed)
	<-watcherDone // nothing of this job outlives runJob
	p.finish(out, err == nil)
	wasInterrupted := false
	select {
	case <-interrupted:
		wasInterrupted = true
	default:
	}
	if out.Reconnects > 0 && !jsonOut {
		fmt.Fprintf(stderr, "%s: stream resumed %d time(s) after the connection dropped\n", Program, out.Reconnects)
	}
	if err != nil {
		if wasInterrupted {
			fmt.Fprintf(stderr, "%s: job %s: no [CANCELLED] within %s of the cancel request\n", Program, acc.JobID, grace)
			return ExitCancelled
		}
		fmt.Fprintf(stderr, "%s: following job %s: %v\n", Program, acc.JobID, err)
		return ExitError
	}
	switch out.Kind {
	case sse.Done:
		return ExitOK
	case sse.Error:
		if !jsonOut {
			fmt.Fprintf(stderr, "%s: job %s failed: %s\n", Program, acc.JobID, out.Error)
		}
		return ExitError
	default:
		if !jsonOut {
			fmt.Fprintf(stderr, "%s: job %s cancelled\n", Program, acc.JobID)
		}
		return ExitCancelled
	}
}

// printer renders stream events.
type printer struct {
	stdout, stderr io.Writer
	json           bool
	midLine        bool // tokens were written without a final newline
}

type jsonEvent struct {
	ID    int             `json:"id,omitempty"`
	Event string          `json:"event,omitempty"`
	Data  json.RawMessage `json:"data"`
}

func (p *printer) writeJSON(id int, name, data string) {
	raw := json.RawMessage(data)
	if !json.Valid(raw) {
		raw, _ = json.Marshal(data)
	}
	b, _ := json.Marshal(jsonEvent{ID: id, Event: name, Data: raw})
	fmt.Fprintf(p.stdout, "%s\n", b)
}

func (p *printer) endLine() {
	if p.midLine {
		fmt.Fprintln(p.stdout)
		p.midLine = false
	}
}

func (p *printer) event(ev sse.Event) error {
	if p.json {
		p.writeJSON(ev.ID, ev.Name, ev.Data)
		return nil
	}
	switch ev.Name {
	case api.EventNarration:
		var n api.Narration
		if err := json.Unmarshal([]byte(ev.Data), &n); err != nil {
			fmt.Fprintf(p.stderr, "narration: %s\n", ev.Data)
			return nil
		}
		prefix := n.Actor
		if n.Hive != "" && n.Hive != n.Actor {
			prefix = n.Hive + "/" + n.Actor
		}
		fmt.Fprintf(p.stderr, "[%s] %s: %s\n", prefix, n.Action, n.Message)
	case api.EventResult:
		p.endLine()
		var b bytes.Buffer
		if json.Indent(&b, []byte(ev.Data), "", "  ") != nil {
			b.Reset()
			b.WriteString(ev.Data)
		}
		fmt.Fprintf(p.stdout, "%s\n", b.Bytes())
	case api.EventToken:
		var t api.Token
		if err := json.Unmarshal([]byte(ev.Data), &t); err != nil {
			fmt.Fprintf(p.stderr, "bad token event %d: %s\n", ev.ID, ev.Data)
			return nil
		}
		io.WriteString(p.stdout, t.T)
		p.midLine = t.T != "" && !strings.HasSuffix(t.T, "\n")
	case api.EventEnd:
		p.endLine()
		var e api.End
		if json.Unmarshal([]byte(ev.Data), &e) == nil {
			fmt.Fprintf(p.stderr, "[end] %d tokens, stop reason %s\n", e.TokensOut, e.StopReason)
		} else {
			fmt.Fprintf(p.stderr, "[end] %s\n", ev.Data)
		}
	default:
		fmt.Fprintf(p.stderr, "[%s] %s\n", ev.Name, ev.Data)
	}
	return nil
}

// finish ends the output: a newline after tokens, and in --json mode the
// terminator line.
func (p *printer) finish(out client.Outcome, complete bool) {
	p.endLine()
	if p.json && complete {
		p.writeJSON(out.LastID, "", out.Terminator())
	}
}
