package setup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"

	"github.com/rbee-dev/rbee/xtask/dockerx"
)

// BaseTag is the base image every service image and the fault helper build on.
const BaseTag = "rbee-test/base:bookworm"

// Service image tags; the compose files name these as
// rbee-test/<name>:${RBEE_IMAGE_TAG:-latest}. Setting RBEE_IMAGE_TAG builds
// and tests a second set of images (another build of rbee, a mutant) beside
// the normal ones without replacing them.
var (
	QueenTag  = "rbee-test/queen:" + ImageTag()
	HiveTag   = "rbee-test/hive:" + ImageTag()
	WorkerTag = "rbee-test/worker:" + ImageTag()
	HubTag    = "rbee-test/hub:" + ImageTag()
)

// ImageTag is the tag of the service images: RBEE_IMAGE_TAG, or "latest".
// A value that is not a valid Docker tag falls back to "latest" here; Config
// validation (CheckImageTag) reports it to the user.
func ImageTag() string {
	t := os.Getenv("RBEE_IMAGE_TAG")
	if CheckImageTag(t) != nil || t == "" {
		return "latest"
	}
	return t
}

// CheckImageTag reports whether t (RBEE_IMAGE_TAG) is a usable Docker tag:
// empty (meaning "latest"), or 1–128 of [A-Za-z0-9_.-] not starting with '.' or '-'.
func CheckImageTag(t string) error {
	if t == "" {
		return nil
	}
	if len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return fmt.Errorf("RBEE_IMAGE_TAG=%q: not a Docker tag (1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("RBEE_IMAGE_TAG=%q: not a Docker tag (1-128 of A-Z a-z 0-9 _ . -, not starting with . or -)", t)
		}
	}
	return nil
}

// ctxFile is one file of a build context.
type ctxFile struct {
	Name string // slash path inside the context (mirrors the repository layout)
	Src  string // file on this machine
	Mode int64
}

// imageSpec describes one image build.
type imageSpec struct {
	Tag        string
	Dockerfile string            // context path of the Dockerfile
	Files      []ctxFile         // everything the Dockerfile COPYs, plus itself
	Args       map[string]string // build args that shape the content (hashed)
	HostArgs   map[string]string // build args that only say where to fetch from (not hashed)
	Parent     string            // image ID of the FROM image (hashed)
}

// serviceSpecs are the images built on top of the base image.
func serviceSpecs(root string) []imageSpec {
	bin := func(name string) ctxFile {
		return ctxFile{Name: "build/bin/" + name, Src: ProgramPath(root, name), Mode: 0o755}
	}
	repo := func(rel string, mode int64) ctxFile {
		return ctxFile{Name: rel, Src: filepath.Join(root, filepath.FromSlash(rel)), Mode: mode}
	}
	return []imageSpec{
		{Tag: QueenTag, Dockerfile: "docker/Dockerfile.queen", Files: []ctxFile{
			repo("docker/Dockerfile.queen", 0o644),
			bin("queen-rbee"), bin("rbee-keeper"), bin("rbee-hive"),
		}},
		{Tag: HiveTag, Dockerfile: "docker/Dockerfile.hive", Files: []ctxFile{
			repo("docker/Dockerfile.hive", 0o644),
			repo("docker/hive/entrypoint.sh", 0o755),
			repo("docker/hive/healthcheck.sh", 0o755),
			repo("docker/hive/sshd_config", 0o644),
			bin("rbee-hive"), bin("llm-worker-rbee"),
		}},
		{Tag: WorkerTag, Dockerfile: "docker/Dockerfile.worker", Files: []ctxFile{
			repo("docker/Dockerfile.worker", 0o644),
			repo("docker/worker/entrypoint.sh", 0o755),
			bin("llm-worker-rbee"),
		}},
		{Tag: HubTag, Dockerfile: "docker/Dockerfile.hub", Files: []ctxFile{
			repo("docker/Dockerfile.hub", 0o644),
			bin("rbee-model-hub"),
		}},
	}
}

// Images builds the base image and every service image whose inputs exist.
// Unchanged images (same content hash label) are not rebuilt. Afterwards it
// prunes dangling images that carry the project label.
func Images(ctx context.Context, cfg Config) error {
	if err := CheckImageTag(os.Getenv("RBEE_IMAGE_TAG")); err != nil {
		return err
	}
	cli, err := dockerx.Connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	baseID, err := baseImage(ctx, cli, cfg)
	if err != nil {
		return err
	}
	var failed []string
	for _, spec := range serviceSpecs(cfg.Root) {
		spec.Parent = baseID
		if missing := missingInputs(spec); len(missing) > 0 {
			cfg.logf("image %s: skipped, missing %s (run `go run mage.go build`)", spec.Tag, strings.Join(missing, ", "))
			failed = append(failed, spec.Tag)
			continue
		}
		if _, err := buildImage(ctx, cli, cfg, spec); err != nil {
			return err
		}
	}
	pruneDangling(ctx, cli, cfg)
	if len(failed) > 0 {
		return fmt.Errorf("images not built (inputs missing): %s", strings.Join(failed, ", "))
	}
	return nil
}

func missingInputs(spec imageSpec) []string {
	var out []string
	for _, f := range spec.Files {
		if _, err := os.Stat(f.Src); err != nil {
			out = append(out, f.Src)
		}
	}
	return out
}

// contentHash is the sha256 over the context files (name, mode, content),
// the content-shaping build args and the parent image ID.
func contentHash(spec imageSpec) (string, error) {
	h := sha256.New()
	files := append([]ctxFile(nil), spec.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	for _, f := range files {
		fh := sha256.New()
		r, err := os.Open(f.Src)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(fh, r)
		r.Close()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "file %s %o %x\n", f.Name, f.Mode, fh.Sum(nil))
	}
	keys := make([]string, 0, len(spec.Args))
	for k := range spec.Args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "arg %s=%s\n", k, spec.Args[k])
	}
	fmt.Fprintf(h, "dockerfile %s\nparent %s\n", spec.Dockerfile, spec.Parent)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildImage builds spec unless an image with its tag and content hash
// exists. It returns the image ID.
func buildImage(ctx context.Context, cli client.APIClient, cfg Config, spec imageSpec) (string, error) {
	hash, err := contentHash(spec)
	if err != nil {
		return "", fmt.Errorf("image %s: hashing inputs: %w", spec.Tag, err)
	}
	if ins, err := cli.ImageInspect(ctx, spec.Tag); err == nil && ins.Config != nil &&
		ins.Config.Labels[ContentHashLabel] == hash {
		cfg.vlogf("image %s: up to date (%.12s)", spec.Tag, hash)
		return ins.ID, nil
	}
	start := time.Now()
	cfg.logf("image %s: building …", spec.Tag)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, spec.Files)) }()
	args := map[string]*string{}
	for _, m := range []map[string]string{spec.Args, spec.HostArgs} {
		for k, v := range m {
			args[k] = &v
		}
	}
	res, err := cli.ImageBuild(ctx, pr, client.ImageBuildOptions{
		Tags:        []string{spec.Tag},
		Dockerfile:  spec.Dockerfile,
		BuildArgs:   args,
		Labels:      map[string]string{dockerx.LabelProject: dockerx.ProjectValue, ContentHashLabel: hash},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		pr.CloseWithError(err)
		return "", fmt.Errorf("image %s: %w", spec.Tag, err)
	}
	defer res.Body.Close()
	if _, err := readStream(res.Body, cfg.out(), cfg.Verbose); err != nil {
		return "", fmt.Errorf("image %s: build failed: %w", spec.Tag, err)
	}
	ins, err := cli.ImageInspect(ctx, spec.Tag)
	if err != nil {
		return "", fmt.Errorf("image %s: built but not found: %w", spec.Tag, err)
	}
	cfg.logf("image %s: built in %s (%d MB)", spec.Tag, since(start), ins.Size/1e6)
	return ins.ID, nil
}

// writeContext streams the build context as a tar with fixed times and
// owners, so the classic builder's cache depends on content only.
func writeContext(w io.Writer, files []ctxFile) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	for _, f := range files {
		st, err := os.Stat(f.Src)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: f.Name, Mode: f.Mode, Size: st.Size(), ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		r, err := os.Open(f.Src)
		if err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		r.Close()
		if err != nil {
			return err
		}
		if n != st.Size() {
			return fmt.Errorf("%s changed while building the context", f.Src)
		}
	}
	return tw.Close()
}

// pruneDangling removes untagged images with the project label (the
// previous build of a tag); errors only matter with -v. Only those older
// than an hour: while the classic builder runs, the layer of its last step
// is dangling too (no child yet, no tag), and a setup or mutation build of
// another tag on the same engine must not prune it from under that build
// ("unknown parent image ID").
func pruneDangling(ctx context.Context, cli client.APIClient, cfg Config) {
	f := dockerx.Filter(dockerx.Project).Add("dangling", "true").Add("until", "1h")
	res, err := cli.ImagePrune(ctx, client.ImagePruneOptions{Filters: f})
	if err != nil {
		cfg.vlogf("prune: %v", err)
		return
	}
	if n := len(res.Report.ImagesDeleted); n > 0 {
		cfg.vlogf("prune: removed %d dangling layers, %d MB", n, res.Report.SpaceReclaimed/1e6)
	}
}
