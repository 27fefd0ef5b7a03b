package setup

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// MirrorEnv overrides the Debian mirror found in the host's apt sources.
const MirrorEnv = "RBEE_APT_MIRROR"

// aptSource is one deb source: its URIs, suites and components.
type aptSource struct {
	uris, suites, components []string
}

// AptMirror returns the Debian mirror that the host's apt sources use for the
// bookworm main suite (RBEE_APT_MIRROR wins). etcDir is normally /etc.
func AptMirror(etcDir string) (string, error) {
	if m := os.Getenv(MirrorEnv); m != "" {
		return strings.TrimRight(m, "/"), nil
	}
	var files []string
	files = append(files, filepath.Join(etcDir, "apt", "sources.list"))
	for _, pat := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(etcDir, "apt", "sources.list.d", pat))
		sort.Strings(m)
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822(string(data))
		} else {
			srcs = parseOneLine(string(data))
		}
		if m := pickMirror(srcs); m != "" {
			return m, nil
		}
	}
	return "", fmt.Errorf("no 'bookworm main' deb source in %s/apt/sources.list{,.d/}: set %s=http://<mirror>/debian",
		etcDir, MirrorEnv)
}

func pickMirror(srcs []aptSource) string {
	for _, s := range srcs {
		if slices.Contains(s.suites, "bookworm") && slices.Contains(s.components, "main") && len(s.uris) > 0 {
			return strings.TrimRight(s.uris[0], "/")
		}
	}
	return ""
}

// parseOneLine reads the classic "deb [opts] URI suite comp..." format.
func parseOneLine(data string) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") { // options, possibly spanning fields
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) < 3 {
			continue
		}
		out = append(out, aptSource{uris: []string{f[0]}, suites: []string{f[1]}, components: f[2:]})
	}
	return out
}

// parseDeb822 reads the stanza format of *.sources files.
func parseDeb822(data string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	flush := func() {
		if len(fields) == 0 {
			return
		}
		types := strings.Fields(fields["types"])
		enabled := strings.ToLower(strings.TrimSpace(fields["enabled"]))
		if slices.Contains(types, "deb") && enabled != "no" && enabled != "false" {
			out = append(out, aptSource{
				uris:       strings.Fields(fields["uris"]),
				suites:     strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]),
			})
		}
		fields = map[string]string{}
	}
	last := ""
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
			last = ""
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t': // continuation
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}
