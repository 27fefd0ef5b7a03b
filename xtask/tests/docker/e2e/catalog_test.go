//go:build docker

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/xtask/checks"
	"github.com/rbee-dev/rbee/xtask/integration"
	"github.com/rbee-dev/rbee/xtask/modelhub"
	"github.com/rbee-dev/rbee/xtask/suite"
)

// bigSize is the size of the hub's suite.BigModel: slow enough, with
// RBEE_HUB_RATE, to act on while it downloads.
const bigSize = modelhub.BigSize

// startCatalog brings up the queen, hive-1 and the model hub with the
// hub's environment (RBEE_HUB_*), and waits until hive-1 is online.
func startCatalog(t *testing.T, hubEnv map[string]string) (*integration.Harness, *client.Client) {
	t.Helper()
	opts := []integration.Option{integration.WithServices("queen", "hive-1", "hub")}
	if len(hubEnv) > 0 {
		opts = append(opts, integration.WithEnv(hubEnv))
	}
	h := integration.Start(t, integration.FullStack, opts...)
	q := h.MustQueen(t)
	awaitOnline(t, q, "hive-1")
	return h, q
}

// modelDir is where hive-1's catalog keeps model id (org/repo:file) on its
// disk: <data-dir>/models/<org--repo--file>.
func modelDir(id string) string {
	org, rest, _ := strings.Cut(id, "/")
	repo, file, _ := strings.Cut(rest, ":")
	return suite.HiveDataDir + "/models/" + org + "--" + repo + "--" + file
}

// exists reports whether path exists on svc's disk (test -e, as the rbee
// user that owns the catalog).
func exists(t *testing.T, h *integration.Harness, svc, path string) bool {
	t.Helper()
	r := h.MustExec(t, svc, []string{"test", "-e", path}, integration.AsUser("rbee"))
	switch r.ExitCode {
	case 0:
		return true
	case 1:
		return false
	}
	t.Fatalf("test -e %s on %s: exit %d: %s", path, svc, r.ExitCode, r.Stderr)
	return false
}

// fileSize is the size of path on svc's disk, -1 when it does not exist.
func fileSize(ctx context.Context, h *integration.Harness, svc, path string) (int64, error) {
	r, err := h.Exec(ctx, svc, []string{"stat", "-c", "%s", path}, integration.AsUser("rbee"))
	if err != nil {
		return 0, err
	}
	if r.ExitCode != 0 {
		return -1, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(r.Stdout), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat %s on %s: %q", path, svc, r.Stdout)
	}
	return n, nil
}

// diskSHA256 is the sha256 of path on svc's disk.
func diskSHA256(t *testing.T, h *integration.Harness, svc, path string) string {
	t.Helper()
	r := h.MustExec(t, svc, []string{"sha256sum", path}, integration.AsUser("rbee"))
	f := strings.Fields(r.Stdout)
	if r.ExitCode != 0 || len(f) == 0 {
		t.Fatalf("sha256sum %s on %s: %q (exit %d) %s", path, svc, r.Stdout, r.ExitCode, r.Stderr)
	}
	return f[0]
}

// catalogIDs is hive-1's model_list, as ids.
func catalogIDs(t *testing.T, hist *checks.History, q *client.Client) []string {
	t.Helper()
	l := suite.Result[api.ModelList](t, opTimeout, q, hist, api.JobRequest{Operation: api.OpModelList, HiveID: "hive-1"})
	ids := []string{}
	for _, m := range l.Models {
		ids = append(ids, m.ID)
	}
	return ids
}

func has(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// hubBody downloads model from the hub (from the test host) and returns
// the sha256 of the bytes it serves.
func hubBody(t *testing.T, h *integration.Harness, path string) (sha string, size int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.MustURL(t, "hub", 8080)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET hub %s: %v", path, err)
	}
	defer resp.Body.Close()
	hs := sha256.New()
	n, err := io.Copy(hs, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET hub %s: %s after %d bytes: %v", path, resp.Status, n, err)
	}
	return hex.EncodeToString(hs.Sum(nil)), n
}

// model_delete through the queen removes the model from the catalog and
// its directory (model.bin, metadata.json) from the hive's disk.
func TestModelDeleteRemovesFiles(t *testing.T) {
	t.Parallel()
	h, q := startCatalog(t, nil)
	var hist checks.History
	dir := modelDir(suite.TinyModel)

	m := suite.Result[api.Model](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.TinyModel})
	// Negative control: the disk check below looks where the catalog
	// really keeps the model.
	if m.Path != dir+"/model.bin" {
		t.Fatalf("model_download put %s at %q; want %s/model.bin", suite.TinyModel, m.Path, dir)
	}
	if !exists(t, h, "hive-1", dir+"/model.bin") || !exists(t, h, "hive-1", dir+"/metadata.json") {
		t.Fatalf("after model_download, %s has no model.bin or metadata.json", dir)
	}
	if ids := catalogIDs(t, &hist, q); !has(ids, suite.TinyModel) {
		t.Fatalf("model_list after the download: %v; want %s in it", ids, suite.TinyModel)
	}

	del := suite.Result[api.Model](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDelete, HiveID: "hive-1", Model: suite.TinyModel})
	if del.ID != suite.TinyModel || del.Size != m.Size || del.SHA256 != m.SHA256 {
		t.Fatalf("model_delete result %+v; want the downloaded entry %+v", del, m)
	}
	if ids := catalogIDs(t, &hist, q); has(ids, suite.TinyModel) {
		t.Fatalf("model_list after model_delete: %v; %s is still in it", ids, suite.TinyModel)
	}
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelGet, HiveID: "hive-1", Model: suite.TinyModel}), suite.TinyModel, "is not on hive-1")
	if exists(t, h, "hive-1", dir) {
		r := h.MustExec(t, "hive-1", []string{"ls", "-la", dir}, integration.AsUser("rbee"))
		t.Fatalf("after model_delete, %s is still on hive-1's disk:\n%s", dir, r.Stdout)
	}
	// Nothing left to delete a second time.
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDelete, HiveID: "hive-1", Model: suite.TinyModel}), suite.TinyModel, "is not on hive-1")

	suite.NothingLost(t, opTimeout, q, &hist)
}

// model_delete of a model that is being downloaded is refused, naming the
// download; the download is not disturbed and ends [DONE] with the whole,
// checksum-verified file in the catalog.
func TestModelDeleteWhileDownloading(t *testing.T) {
	t.Parallel()
	// 8 MiB at 512 KiB/s: the download takes 16 s at the least (the hub
	// paces it), a window the model_delete below lands in by construction.
	const rate = 512 << 10
	h, q := startCatalog(t, map[string]string{"RBEE_HUB_RATE": strconv.Itoa(rate)})
	var hist checks.History
	hubSHA, hubSize, _ := hubChecksum(t, h, suite.BigModel)
	if hubSize != bigSize {
		t.Fatalf("the hub announces %d bytes for %s; want %d", hubSize, suite.BigModel, bigSize)
	}
	partial := modelDir(suite.BigModel) + "/model.bin.partial"

	dctx, dcancel := context.WithTimeout(t.Context(), 3*opTimeout)
	defer dcancel()
	_, done := suite.Submit(dctx, t, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.BigModel}, nil)

	// The download has started writing: its partial file has bytes.
	var size int64
	if err := checks.Await(t.Context(), stateTimeout, "bytes in "+partial, func(ctx context.Context) (bool, string, error) {
		n, err := fileSize(ctx, h, "hive-1", partial)
		size = n
		return n > 0, fmt.Sprintf("%s is %d bytes (-1: absent)", partial, n), err
	}); err != nil {
		t.Fatal(err)
	}

	del := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDelete, HiveID: "hive-1", Model: suite.BigModel})
	after, err := fileSize(t.Context(), h, "hive-1", partial)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("model_delete at %d bytes of %d ended %s; the partial file then had %d bytes", size, hubSize, del.Terminator(), after)
	suite.MustError(t, del, suite.BigModel, "being downloaded")
	// The refusal changed nothing on disk: the partial file is still there
	// and still short of the whole (so the download was running all along).
	if after < size || after >= hubSize {
		t.Fatalf("after the refused model_delete %s is %d bytes; want between %d and %d", partial, after, size, hubSize-1)
	}

	out := suite.Ended(t, done, 3*opTimeout, "model_download after the refused delete")
	if _, err := checks.EndedDone(out, nil); err != nil {
		t.Fatalf("model_download after the refused delete: %v%s", err, suite.NarrationText(out))
	}
	m := suite.ResultOf[api.Model](t, out)
	if m.ID != suite.BigModel || m.Size != hubSize || m.SHA256 != hubSHA {
		t.Fatalf("model_download result %+v; the hub announces sha256 %s, %d bytes", m, hubSHA, hubSize)
	}
	if ids := catalogIDs(t, &hist, q); !has(ids, suite.BigModel) {
		t.Fatalf("model_list after the download: %v; want %s", ids, suite.BigModel)
	}
	if got := diskSHA256(t, h, "hive-1", m.Path); got != hubSHA {
		t.Fatalf("%s on hive-1's disk has sha256 %s; the hub's is %s", m.Path, got, hubSHA)
	}
	if n, err := fileSize(t.Context(), h, "hive-1", m.Path); err != nil || n != hubSize {
		t.Fatalf("%s on hive-1's disk is %d bytes (%v); want %d", m.Path, n, err, hubSize)
	}
	if exists(t, h, "hive-1", partial) {
		t.Fatalf("%s is left beside the finished model", partial)
	}

	suite.NothingLost(t, opTimeout, q, &hist)
}

// A hub that serves bytes which do not match the sha256 it announces makes
// model_download end [ERROR] checksum mismatch, and leaves nothing behind:
// not in model_list, no model.bin or partial file on the hive's disk. A
// model the same hub announces correctly downloads (the control).
func TestModelDownloadChecksumMismatch(t *testing.T) {
	t.Parallel()
	h, q := startCatalog(t, map[string]string{"RBEE_HUB_WRONG_SHA256": suite.Ngram4Model})
	var hist checks.History

	// The hub's announcement is wrong: its header is not the sha256 of the
	// bytes it serves.
	announced, size, path := hubChecksum(t, h, suite.Ngram4Model)
	served, n := hubBody(t, h, path)
	if n != size || served == announced {
		t.Fatalf("hub serves %d bytes with sha256 %s for %s and announces %s, %d bytes; want the same size and another sha256", n, served, suite.Ngram4Model, announced, size)
	}

	out := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.Ngram4Model})
	suite.MustError(t, out, suite.Ngram4Model, "checksum mismatch", served, announced)
	if ids := catalogIDs(t, &hist, q); has(ids, suite.Ngram4Model) {
		t.Fatalf("model_list after the checksum mismatch: %v; %s is in it", ids, suite.Ngram4Model)
	}
	suite.MustError(t, suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelGet, HiveID: "hive-1", Model: suite.Ngram4Model}), suite.Ngram4Model, "is not on hive-1")
	dir := modelDir(suite.Ngram4Model)
	for _, p := range []string{dir + "/model.bin", dir + "/model.bin.partial", dir + "/metadata.json", dir} {
		if exists(t, h, "hive-1", p) {
			r := h.MustExec(t, "hive-1", []string{"ls", "-laR", suite.HiveDataDir + "/models"}, integration.AsUser("rbee"))
			t.Fatalf("after the checksum mismatch %s is on hive-1's disk:\n%s", p, r.Stdout)
		}
	}

	// Control: a correctly announced model from the same hub is accepted,
	// and lands where the checks above looked.
	tinySHA, tinySize, tinyPath := hubChecksum(t, h, suite.TinyModel)
	if s, _ := hubBody(t, h, tinyPath); s != tinySHA {
		t.Fatalf("the hub announces %s for %s but serves %s", tinySHA, suite.TinyModel, s)
	}
	m := suite.Result[api.Model](t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.TinyModel})
	if m.SHA256 != tinySHA || m.Size != tinySize || m.Path != modelDir(suite.TinyModel)+"/model.bin" {
		t.Fatalf("model_download %s: %+v; want sha256 %s, %d bytes at %s/model.bin", suite.TinyModel, m, tinySHA, tinySize, modelDir(suite.TinyModel))
	}
	if got := diskSHA256(t, h, "hive-1", m.Path); got != tinySHA {
		t.Fatalf("%s on hive-1's disk has sha256 %s; want %s", m.Path, got, tinySHA)
	}

	suite.NothingLost(t, opTimeout, q, &hist)
}

// A download cut after k bytes keeps its partial file of k bytes, and the
// next model_download resumes it: the hub's log shows the second GET asking
// Range bytes=k- and answered 206 with the remaining bytes only, the hive
// narrates resuming at byte k (the catalog's Resumed), and the finished
// file has the hub's sha256.
func TestModelDownloadResumesAtPartialSize(t *testing.T) {
	t.Parallel()
	// The hub cuts every GET without a Range header after 16 KiB, about a
	// third of ngram-4; a Range request is never cut.
	h, q := startCatalog(t, map[string]string{"RBEE_HUB_CUT_AFTER": "16k"})
	var hist checks.History
	hubSHA, hubSize, hubPath := hubChecksum(t, h, suite.Ngram4Model)
	partial := modelDir(suite.Ngram4Model) + "/model.bin.partial"

	first := suite.Try(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.Ngram4Model})
	suite.MustError(t, first, suite.Ngram4Model, "partial file is kept")
	k, err := fileSize(t.Context(), h, "hive-1", partial)
	if err != nil {
		t.Fatal(err)
	}
	var cut []hubRequest
	for _, r := range hubRequests(t, h) {
		if r.Method == http.MethodGet && r.Path == hubPath {
			cut = append(cut, r)
		}
	}
	// What the hub sent before it cut bounds what the hive kept.
	if len(cut) != 1 || !cut[0].Cut || cut[0].Range != "" || cut[0].Bytes <= 0 || cut[0].Bytes >= hubSize {
		t.Fatalf("hub's GETs of %s after the first download: %+v; want one plain GET cut short of %d bytes", hubPath, cut, hubSize)
	}
	if k <= 0 || k > cut[0].Bytes {
		t.Fatalf("after the cut download %s is %d bytes (-1: absent); the hub sent %d", partial, k, cut[0].Bytes)
	}
	t.Logf("first download cut by the hub after %d bytes; hive-1 kept %d of %d", cut[0].Bytes, k, hubSize)

	second := suite.Run(t, opTimeout, q, &hist, api.JobRequest{Operation: api.OpModelDownload, HiveID: "hive-1", Model: suite.Ngram4Model})
	m := suite.ResultOf[api.Model](t, second)
	if m.SHA256 != hubSHA || m.Size != hubSize {
		t.Fatalf("resumed download: %+v; the hub announces sha256 %s, %d bytes", m, hubSHA, hubSize)
	}
	if got := diskSHA256(t, h, "hive-1", m.Path); got != hubSHA {
		t.Fatalf("%s on hive-1's disk has sha256 %s; want %s", m.Path, got, hubSHA)
	}

	// The catalog resumed at byte k (its Resumed, as the hive narrates it).
	wantResume := fmt.Sprintf("resuming %s at byte %d", suite.Ngram4Model, k)
	var resumes []string
	for _, n := range suite.Narrations(t, second) {
		if n.Action == "download_resume" {
			resumes = append(resumes, n.Message)
		}
	}
	if len(resumes) != 1 || resumes[0] != wantResume {
		t.Fatalf("download_resume narration %q; want exactly %q%s", resumes, wantResume, suite.NarrationText(second))
	}

	// The hub saw exactly one more GET: Range bytes=k-, answered 206 with
	// the rest of the file.
	var after []hubRequest
	for _, r := range hubRequests(t, h) {
		if r.Method == http.MethodGet && r.Path == hubPath {
			after = append(after, r)
		}
	}
	wantRange := fmt.Sprintf("bytes=%d-", k)
	if len(after) != 2 || after[1].Range != wantRange || after[1].Status != http.StatusPartialContent || after[1].Bytes != hubSize-k || after[1].Cut {
		t.Fatalf("hub's GETs of %s: %+v; want the cut one, then one with Range %q answered 206 with %d bytes", hubPath, after, wantRange, hubSize-k)
	}

	suite.NothingLost(t, opTimeout, q, &hist)
}
