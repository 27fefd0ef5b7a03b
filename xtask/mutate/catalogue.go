package mutate

// Categories are the Docker suites a mutant can be claimed by; each is the
// package xtask/tests/docker/<category>. A category whose package is not in
// the tree (yet) is reported and skipped, so the catalogue may name suites
// that land later.
var Categories = []string{"httpcomm", "sshcomm", "heartbeat", "lifecycle", "workerlifecycle", "failure", "e2e", "security"}

// Catalogue is every mutant `mage mutate` knows: the mistakes a developer of
// the queen, the hive or the worker could plausibly make, one per entry.
// Each Old must occur exactly once in its File (TestCatalogueApplies checks
// it against the tree), so the snippets are kept to short, central lines.
var Catalogue = []Mutant{
	// SSH client (internal/sshx): the queen's only way onto a hive machine.
	{
		Name: "ssh-hostkey-any", File: "internal/sshx/sshx.go",
		Desc:   "the queen's SSH client accepts any host key (known_hosts ignored)",
		Old:    "HostKeyCallback:   hk.check,",
		New:    "HostKeyCallback:   ssh.InsecureIgnoreHostKey(),",
		Catch:  "Survives sshcomm: its host-key tests use the test's own SSH client, not the queen's. Kill: hive_install/hive_start through the queen with a known_hosts that pins another key for the hive must end [ERROR] \u2026 host key mismatch and install nothing.",
		Claims: []string{"sshcomm", "security", "lifecycle"},
	},
	{
		Name: "ssh-exit-code-dropped", File: "internal/sshx/sshx.go",
		Desc:   "the exit status of a remote command is dropped: every command looks successful",
		Old:    "\t\tres.ExitCode = ee.ExitStatus()\n",
		New:    "\t\t_ = ee.ExitStatus()\n",
		Catch:  "a remote command through the queen that exits non-zero (hive_start of a binary path that is not executable, hive_install into a read-only directory) must end [ERROR] with the exit code.",
		Claims: []string{"sshcomm", "lifecycle"},
	},
	{
		Name: "ssh-stderr-dropped", File: "internal/sshx/sshx.go",
		Desc:   "a remote command's stderr is not collected, so errors lose their cause",
		Old:    "sess.Stdout, sess.Stderr = stdout, stderr",
		New:    "sess.Stdout = stdout",
		Catch:  "Survives sshcomm: no test reads a failing remote command's stderr through the queen. Kill: the [ERROR] of a failing remote command through the queen must contain the command's stderr (e.g. 'Permission denied' from mkdir in a read-only directory).",
		Claims: []string{"sshcomm", "lifecycle"},
	},
	{
		Name: "ssh-upload-in-place", File: "internal/sshx/upload.go",
		Desc:   "hive_install writes the binary in place instead of to a temporary renamed on success",
		Old:    `tmp := path.Join(dir, "."+path.Base(dst)+".tmp-"+hex.EncodeToString(rnd[:]))`,
		New:    `tmp := dst; _ = hex.EncodeToString`,
		Catch:  "after SSH is cut mid-install, the target path must hold either nothing or the complete old binary, never a truncated file (size/sha256 checked on the hive).",
		Claims: []string{"failure", "sshcomm"},
	},
	{
		Name: "queen-nonzero-exit-ok", File: "internal/queen/lifecycle.go",
		Desc:   "the queen treats a non-zero exit of a lifecycle command as success unless it lists allowed codes",
		Old:    "\tif res.ExitCode == 0 {\n\t\treturn res, nil\n\t}\n\tfor _, c := range okCodes {",
		New:    "\tif res.ExitCode == 0 || len(okCodes) == 0 {\n\t\treturn res, nil\n\t}\n\tfor _, c := range okCodes {",
		Catch:  "hive_install into a directory the SSH user cannot write must end [ERROR] (exit code and stderr), not report an install.",
		Claims: []string{"sshcomm", "lifecycle"},
	},

	// Scheduler and registry (queen).
	{
		Name: "scheduler-sticky-hive", File: "internal/scheduler/scheduler.go",
		Desc:   "ties go to the hive picked most recently instead of longest ago: one hive gets everything",
		Old:    "return ha < hb // the hive picked longest ago first",
		New:    "return ha > hb // the hive picked longest ago first",
		Catch:  "Survives because TestMultiHiveLoadBalancing sends its 20 infers concurrently, so the in-flight count (not the tie-break) spreads them, and it asks only >= n/4 per hive. Kill: sequential infers on two idle equal hives must alternate hive-1, hive-2, hive-1, \u2026 (PROTOCOL: the hive picked longest ago first).",
		Claims: []string{"e2e"},
	},
	{
		Name: "scheduler-inflight-leak", File: "internal/scheduler/scheduler.go",
		Desc:   "release never lowers a worker's in-flight count, so finished inferences count as load forever",
		Old:    "if s.inflight[w.WorkerID]--; s.inflight[w.WorkerID] <= 0 {",
		New:    "if s.inflight[w.WorkerID] <= 0 {",
		Catch:  "after N finished infers the scheduler must still balance: with one worker on each hive, later requests keep alternating, and a worker that served many short jobs is not avoided.",
		Claims: []string{"e2e", "failure"},
	},
	{
		Name: "registry-worker-lastseen-frozen", File: "internal/registry/registry.go",
		Desc:   "a worker's last_seen is stamped at registration and never advanced by later heartbeats",
		Old:    "\te.seen = later(e.seen, now)\n\te.sent = hb.Timestamp\n\te.info = api.WorkerInfo{",
		New:    "\tif e.seen.IsZero() {\n\t\te.seen = now\n\t}\n\te.sent = hb.Timestamp\n\te.info = api.WorkerInfo{",
		Catch:  "a worker's last_seen must advance by about one heartbeat interval between two reads (and freeze while worker\u2192queen is blocked).",
		Claims: []string{"heartbeat"},
	},
	{
		Name: "registry-hive-lastseen-frozen", File: "internal/registry/registry.go",
		Desc:   "a hive's last_seen is stamped at its first heartbeat and never advanced",
		Old:    "\te.seen = later(e.seen, now)\n\te.sent = hb.Timestamp\n\te.offline = false\n\te.url = hb.URL",
		New:    "\tif e.seen.IsZero() {\n\t\te.seen = now\n\t}\n\te.sent = hb.Timestamp\n\te.offline = false\n\te.url = hb.URL",
		Catch:  "a hive's last_seen must advance with its heartbeats; after a partition heals it must keep advancing and the hive stay online past stale_after.",
		Claims: []string{"heartbeat", "failure"},
	},
	{
		Name: "registry-stale-after-ignored", File: "internal/registry/registry.go",
		Desc:   "a worker's stale flag uses the 30 s default instead of the configured stale_after",
		Old:    "w.Stale = now.Sub(e.seen) > r.staleAfter",
		New:    "w.Stale = now.Sub(e.seen) > DefaultStaleAfter",
		Catch:  "with stale_after = 3 s a killed worker must be stale within 3 s + one interval (upper bound), not after 30 s.",
		Claims: []string{"heartbeat"},
	},
	{
		Name: "registry-schedules-stale", File: "internal/registry/registry.go",
		Desc:   "Candidates keeps workers silent for up to 10 x stale_after: stale workers are scheduled",
		Old:    "\t\tif now.Sub(e.seen) > r.staleAfter {\n\t\t\tcontinue\n\t\t}",
		New:    "\t\tif now.Sub(e.seen) > 10*r.staleAfter {\n\t\t\tcontinue\n\t\t}",
		Catch:  "an infer after a worker's heartbeats stopped for > stale_after must not be routed to it (no ready worker, or another worker).",
		Claims: []string{"failure", "heartbeat", "e2e"},
	},
	{
		Name: "registry-hive-never-stale", File: "internal/registry/registry.go",
		Desc:   "a silent hive stays online: only hive_stop marks it offline",
		Old:    "if e.offline || now.Sub(e.seen) > r.staleAfter {\n\t\t\th.State = api.HiveOffline",
		New:    "if e.offline {\n\t\t\th.State = api.HiveOffline",
		Catch:  "a hive partitioned from the queen must turn offline within stale_after + one interval.",
		Claims: []string{"failure", "heartbeat"},
	},

	// Hive lifecycle over SSH and HTTP (queen).
	{
		Name: "queen-stop-not-offline", File: "internal/queen/lifecycle.go",
		Desc:   "hive_stop after a clean shutdown does not mark the hive offline (it stays online until stale)",
		Old:    "\t\t\ts.reg.MarkHiveOffline(h.Alias)\n\t\t\ts.narrate(j, \"hive_stop\", h.Alias, \"%s stopped\", h.Alias)",
		New:    "\t\t\ts.narrate(j, \"hive_stop\", h.Alias, \"%s stopped\", h.Alias)",
		Catch:  "right after hive_stop returns, /v1/hives must show the hive offline (before stale_after could do it).",
		Claims: []string{"lifecycle"},
	},
	{
		Name: "queen-stop-kills-reused-pid", File: "internal/queen/lifecycle.go",
		Desc:   "hive_stop signals the recorded pid even when it now belongs to another process",
		Old:    "  3) rm -f \"$f\"; echo \"$pid\"; exit 5 ;;\n",
		New:    "",
		Catch:  "Survives because TestHiveStopViaQueen's decoys are never the recorded pid: no test writes a pid file that names another process. Kill: write a decoy's pid into ~/.local/state/rbee/rbee-hive.pid, stop the hive's HTTP side, hive_stop: the decoy must still run and the job say the pid is not rbee-hive.",
		Claims: []string{"lifecycle"},
	},
	{
		Name: "queen-refresh-from-cache", File: "internal/queen/ops.go",
		Desc:   "hive_refresh_capabilities answers the devices the queen already has instead of asking the hive",
		Old:    "func (s *Server) refreshCapabilities(ctx context.Context, j *jobs.Job, t hiveTarget) error {\n\tcaps, err := s.fetchCapabilities(ctx, j, t)",
		New:    "func (s *Server) refreshCapabilities(ctx context.Context, j *jobs.Job, t hiveTarget) error {\n\th, _ := s.reg.Hive(t.alias)\n\tcaps, err := api.Capabilities{HiveID: t.alias, Devices: h.Devices}, error(nil)",
		Catch:  "block hive\u2192queen heartbeats, change the hive's devices and restart it out of band: /v1/hives keeps the old devices until hive_refresh_capabilities, which must show the new ones.",
		Claims: []string{"lifecycle", "httpcomm"},
	},
	{
		Name: "hive-heartbeat-no-devices", File: "internal/hive/hive.go",
		Desc:   "hive heartbeats stop carrying the devices, so the queen knows them only from GET /capabilities",
		Old:    "\t\tDevices:   s.Devices(),\n",
		New:    "\t\tDevices:   nil,\n",
		Catch:  "a hive started out of band (not through hive_start) must show its devices in /v1/hives after its first heartbeat.",
		Claims: []string{"httpcomm", "lifecycle"},
	},

	// Job forwarding, cancellation, retries (queen).
	{
		Name: "queen-forward-cancel-dropped", File: "internal/queen/ops.go",
		Desc:   "cancelling a forwarded job does not cancel it on the hive",
		Old:    "\tif ctx.Err() != nil {\n\t\ts.cancelRemote(c, t.alias, acc.JobID)\n\t\treturn jobs.ErrCancelled\n\t}\n\tif err != nil {",
		New:    "\tif ctx.Err() != nil {\n\t\treturn jobs.ErrCancelled\n\t}\n\tif err != nil {",
		Catch:  "DELETE of a queen job forwarded to a hive (model_download, worker_spawn) must cancel the hive's job: the hive's own GET /v1/jobs/{id} ends cancelled.",
		Claims: []string{"httpcomm", "failure", "workerlifecycle"},
	},
	{
		Name: "queen-infer-cancel-dropped", File: "internal/queen/infer.go",
		Desc:   "cancelling an infer job does not DELETE the generation on the worker",
		Old:    "shutting-down queen does not exit before it goes out.\n\t\ts.cancelInference(c, w.WorkerID, strings.TrimSuffix(path, \"/stream\"))",
		New:    "shutting-down queen does not exit before it goes out.",
		Catch:  "DELETE of an infer job must stop the generation on the worker: the worker's job ends cancelled and it turns ready well before max_tokens are generated.",
		Claims: []string{"httpcomm", "failure", "e2e"},
	},
	{
		Name: "queen-retries-post", File: "internal/queen/httpx.go",
		Desc:   "the queen retries a POST after a broken connection, although the peer may have executed it",
		Old:    "idempotent := st.method == http.MethodGet || st.method == http.MethodHead || st.method == http.MethodDelete",
		New:    "idempotent := st.method == http.MethodGet || st.method == http.MethodHead || st.method == http.MethodDelete || st.method == http.MethodPost",
		Catch:  "a POST /v1/jobs to a hive on a connection that breaks after the body was written must run at most once on the hive (count the hive's jobs or workers).",
		Claims: []string{"httpcomm", "failure"},
	},
	{
		Name: "queen-retries-timeouts", File: "internal/queen/httpx.go",
		Desc:   "the queen retries requests that timed out, multiplying the wait",
		Old:    "retry = !isTimeout(err) && (neverConnected(err) || (idempotent && connectionError(err)))",
		New:    "retry = neverConnected(err) || (idempotent && connectionError(err))",
		Catch:  "a hive that never answers must fail the job after about one timeout (bounded from above), not after retries+1 timeouts.",
		Claims: []string{"httpcomm"},
	},
	{
		Name: "queen-retries-exhausted-early", File: "internal/queen/httpx.go",
		Desc:   "the queen makes only half of the configured retries",
		Old:    "rc.RetryMax = h.retries",
		New:    "rc.RetryMax = h.retries / 2",
		Catch:  "a hive that refuses connections for a while must be retried retries times (narration 'attempt k/n' up to n) before the job fails.",
		Claims: []string{"httpcomm"},
	},
	{
		Name: "queen-infer-retry-accepted", File: "internal/queen/infer.go",
		Desc:   "an infer whose POST to a worker failed after connecting is tried on another worker (may run twice)",
		Old:    "return isConnRefused(err), fmt.Errorf(\"%s: %s\", name, cause)",
		New:    "return true, fmt.Errorf(\"%s: %s\", name, cause)",
		Catch:  "a worker that accepts an infer and then breaks the connection must not get the inference retried on another worker (count the generations on the workers).",
		Claims: []string{"failure", "httpcomm", "e2e"},
	},
	{
		Name: "relay-resume-duplicate", File: "internal/client/client.go",
		Desc:   "the queen's relay resumes a cut hive/worker stream with Last-Event-ID one too low (an event twice)",
		Old:    "req.Header.Set(\"Last-Event-ID\", strconv.Itoa(out.LastID))",
		New:    "req.Header.Set(\"Last-Event-ID\", strconv.Itoa(out.LastID-1))",
		Catch:  "cut the queen\u2194hive (or worker) stream mid-job: the queen's stream must still carry every event exactly once, in order.",
		Claims: []string{"httpcomm", "failure"},
	},

	// Job engine and SSE (queen, hive and worker share it).
	{
		Name: "sse-resume-skips-event", File: "internal/jobs/http.go",
		Desc:   "a stream resumed with Last-Event-ID: n starts after n+1 (an event is lost)",
		Old:    "\t\tafter = n\n",
		New:    "\t\tafter = n + 1\n",
		Catch:  "GET \u2026/stream with Last-Event-ID: n must start at event n+1 exactly.",
		Claims: []string{"httpcomm"},
	},
	{
		Name: "sse-resume-no-terminator", File: "internal/jobs/http.go",
		Desc:   "resuming a finished job at its terminator sends nothing: the client never sees the end",
		Old:    "\t\tafter = len(evs) - 1\n",
		New:    "\t\tafter = len(evs)\n",
		Catch:  "resuming a finished job with Last-Event-ID equal to its last event must still deliver the terminator.",
		Claims: []string{"httpcomm"},
	},
	{
		Name: "sse-keepalive-dropped", File: "internal/jobs/http.go",
		Desc:   "silent streams get no ': keepalive' comment on the wire",
		Old:    `sse.WriteComment(w, "keepalive")`,
		New:    `sse.WriteComment(io.Discard, "keepalive")`,
		Catch:  "a stream silent for longer than the keepalive interval must carry ': keepalive' comments, through the queen's relay too.",
		Claims: []string{"httpcomm"},
	},
	{
		Name: "jobs-terminator-doubled", File: "internal/jobs/jobs.go",
		Desc:   "a finished job records its terminator twice",
		Old:    "\tj.appendLocked(\"\", term)\n",
		New:    "\tj.appendLocked(\"\", term)\n\tj.appendLocked(\"\", term)\n",
		Catch:  "reading a finished job's stream to EOF must show exactly one terminator.",
		Claims: []string{"httpcomm", "failure"},
	},
	{
		Name: "jobs-cancel-not-propagated", File: "internal/jobs/jobs.go",
		Desc:   "DELETE marks a job cancelled but does not cancel its context: the work runs on",
		Old:    "\tj.cancelByUser = true\n\tj.mu.Unlock()\n\tj.cancel()\n",
		New:    "\tj.cancelByUser = true\n\tj.mu.Unlock()\n",
		Catch:  "DELETE of a running job must stop its work: the process or generation behind it stops (not only the state flips to cancelled).",
		Claims: []string{"httpcomm", "failure", "workerlifecycle"},
	},

	// Hive and worker.
	{
		Name: "hive-delete-no-kill", File: "internal/hive/workers.go",
		Desc:   "worker delete forgets the worker without stopping its process",
		Old:    "\ts.stopChild(c, s.cfg.StopGrace)\n\ts.mu.Lock()\n\tif s.children[id] == c {",
		New:    "\ts.mu.Lock()\n\tif s.children[id] == c {",
		Catch:  "after worker_process_delete the worker's process must be gone on the hive and its port closed.",
		Claims: []string{"workerlifecycle"},
	},
	{
		Name: "hive-spawn-device-ignored", File: "internal/hive/workers.go",
		Desc:   "the hive starts every worker on cpu:0, whatever device was asked for",
		Old:    "\t\t\"--device\", device,\n",
		New:    "\t\t\"--device\", \"cpu:0\",\n",
		Catch:  "a worker spawned on gpu:1 must report device gpu:1 in /v1/workers and its own /health.",
		Claims: []string{"workerlifecycle"},
	},
	{
		Name: "hive-heartbeat-interval-ignored", File: "internal/hive/hive.go",
		Desc:   "the hive heartbeats every 10 s whatever --heartbeat-interval says",
		Old:    "\tt := time.NewTicker(s.cfg.HeartbeatInterval)\n",
		New:    "\tt := time.NewTicker(DefaultHeartbeatInterval)\n",
		Catch:  "with a 200 ms heartbeat interval a hive's last_seen must advance within a few hundred ms.",
		Claims: []string{"heartbeat", "failure"},
	},
	{
		Name: "worker-heartbeat-interval-ignored", File: "internal/worker/worker.go",
		Desc:   "the worker heartbeats every 10 s whatever --heartbeat-interval says",
		Old:    "\tt := time.NewTicker(s.cfg.HeartbeatInterval)\n",
		New:    "\tt := time.NewTicker(DefaultHeartbeatInterval)\n",
		Catch:  "with a 200 ms heartbeat interval a worker's last_seen must advance within a few hundred ms.",
		Claims: []string{"heartbeat"},
	},
	{
		Name: "worker-token-unchecked", File: "internal/worker/worker.go",
		Desc:   "the worker accepts any bearer token, not only the configured one",
		Old:    "if !constantTimeEqual(got, want) {",
		New:    "if !strings.HasPrefix(got, \"Bearer \") && want != \"\" {",
		Catch:  "a worker started with a token must answer 401 to 'Authorization: Bearer wrong'.",
		Claims: []string{"security", "httpcomm"},
	},

	// Model downloads (hive catalog).
	{
		Name: "catalog-checksum-unverified", File: "internal/catalog/catalog.go",
		Desc:   "a downloaded model is not checked against the sha256 the hub announces",
		Old:    "if want != \"\" && got != want {",
		New:    "if false && want != \"\" && got != want {",
		Catch:  "a hub that serves bytes that do not match its announced sha256 must make model_download end [ERROR] checksum mismatch and leave no model.",
		Claims: []string{"e2e", "failure"},
	},
	{
		Name: "catalog-resume-offset-wrong", File: "internal/catalog/catalog.go",
		Desc:   "a resumed download asks the hub for the byte before the partial file's end (restarts from zero)",
		Old:    "req.Header.Set(\"Range\", fmt.Sprintf(\"bytes=%d-\", offset))",
		New:    "req.Header.Set(\"Range\", fmt.Sprintf(\"bytes=%d-\", offset-1))",
		Catch:  "a download interrupted after k bytes and started again must resume (206 from byte k, Resumed = k), not fetch the file again from zero.",
		Claims: []string{"failure", "e2e"},
	},
}
