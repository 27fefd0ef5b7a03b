package config

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// maxFileBytes bounds what the parsers accept. Real configs are a few hundred
// bytes; anything this large is the wrong file.
const maxFileBytes = 256 << 10

// maxKeysPerTable bounds the keys (and sub-tables) of one table. go-toml
// checks for duplicates with a linear scan per key, so a table with a huge
// number of keys costs quadratic time; no real config comes near this.
const maxKeysPerTable = 256

// Error is one problem in a configuration file. Line is 1-based; 0 means the
// problem concerns the file as a whole (empty file, missing top-level key).
type Error struct {
	File string // name given to the parser, usually the path
	Line int
	Key  string // dotted key ("ssh.connect_timeout", "hive[1].alias"); may be empty
	Msg  string // full message without the "file:line: " prefix
}

// Error formats as "file:line: msg", the form editors and humans jump to.
func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// document is a parsed TOML file: go-toml's generic decoding (which enforces
// every TOML rule: duplicate keys, table redefinition, value syntax) plus an
// index from dotted key path to the line it was written on, so that semantic
// checks done afterwards can still name a line.
type document struct {
	name  string
	root  map[string]any
	lines map[string]int // "ssh.connect_timeout" -> 12; "hive[0]" -> line of its [[hive]]
	errs  []error
}

// parseDocument decodes data; any syntax or TOML-level error is returned as a
// single *Error.
func parseDocument(data []byte, name string) (*document, error) {
	if len(data) > maxFileBytes {
		return nil, &Error{File: name, Msg: fmt.Sprintf("file is %d bytes; refusing more than %d", len(data), maxFileBytes)}
	}
	d := &document{name: name, lines: map[string]int{}}
	// The index walk runs first: it finds duplicate keys with their full
	// dotted path, which go-toml's message ("key x is already defined") lacks.
	if err := d.index(data); err != nil {
		return nil, err
	}
	var root map[string]any
	if err := toml.Unmarshal(data, &root); err != nil {
		return nil, d.fromTOMLError(err)
	}
	if root == nil {
		root = map[string]any{}
	}
	d.root = root
	return d, nil
}

// fromTOMLError turns a go-toml error into an *Error with line and key.
func (d *document) fromTOMLError(err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		key := strings.Join(de.Key(), ".")
		if strings.Contains(msg, "already defined") || strings.Contains(msg, "already exists") {
			return &Error{File: d.name, Line: line, Key: key, Msg: "duplicate key or table: " + msg}
		}
		return &Error{File: d.name, Line: line, Key: key, Msg: "syntax error: " + msg}
	}
	return &Error{File: d.name, Msg: "syntax error: " + err.Error()}
}

// index walks the raw expression stream and records the line of every key and
// table header under its resolved dotted path. It stops quietly at a syntax
// error (toml.Unmarshal reports those with better context); it reports
// duplicate keys and duplicate [table] headers itself.
func (d *document) index(data []byte) error {
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // resolved array-of-tables path -> element count
	headers := map[string]int{}
	current := ""

	// Line starts are computed once: asking the parser for the shape of
	// every key rescans the document each time, quadratic on large input.
	starts := []int{0}
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	line := func(n *unstable.Node) int {
		return sort.SearchInts(starts, int(n.Raw.Offset)+1)
	}
	// resolve maps header key parts to a path that names the current
	// element of every array of tables on the way ("hive[2].sub").
	resolve := func(parts []string) string {
		r := ""
		for _, part := range parts {
			r = joinKey(r, part)
			if n, ok := arrays[r]; ok && n > 0 {
				r = fmt.Sprintf("%s[%d]", r, n-1)
			}
		}
		return r
	}
	children := map[string]int{}
	count := func(path string, at int) error {
		parent := ""
		if i := strings.LastIndexByte(path, '.'); i >= 0 {
			parent = path[:i]
		}
		children[parent]++
		if children[parent] > maxKeysPerTable {
			return &Error{File: d.name, Line: at, Key: path,
				Msg: fmt.Sprintf("too many keys in table %q (more than %d)", parent, maxKeysPerTable)}
		}
		return nil
	}
	dup := func(path string, first, at int) error {
		return &Error{File: d.name, Line: at, Key: path,
			Msg: fmt.Sprintf("duplicate key %q (first defined on line %d)", path, first)}
	}
	var walkValue func(prefix string, v *unstable.Node) error
	var walkKV func(prefix string, kv *unstable.Node) error
	walkKV = func(prefix string, kv *unstable.Node) error {
		it := kv.Key()
		path := prefix
		first := 0
		for it.Next() {
			k := it.Node()
			if first == 0 {
				first = line(k)
			}
			path = joinKey(path, string(k.Data))
		}
		if l, ok := d.lines[path]; ok {
			return dup(path, l, first)
		}
		if err := count(path, first); err != nil {
			return err
		}
		d.lines[path] = first
		return walkValue(path, kv.Value())
	}
	walkValue = func(prefix string, v *unstable.Node) error {
		switch v.Kind {
		case unstable.InlineTable:
			it := v.Children()
			for it.Next() {
				if c := it.Node(); c.Kind == unstable.KeyValue {
					if err := walkKV(prefix, c); err != nil {
						return err
					}
				}
			}
		case unstable.Array:
			it := v.Children()
			i := 0
			for it.Next() {
				c := it.Node()
				if c.Kind == unstable.Comment {
					continue
				}
				elem := fmt.Sprintf("%s[%d]", prefix, i)
				if c.Raw.Length > 0 {
					d.lines[elem] = line(c)
				}
				if err := walkValue(elem, c); err != nil {
					return err
				}
				i++
			}
		}
		return nil
	}

	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			var parts []string
			at := 0
			it := e.Key()
			for it.Next() {
				k := it.Node()
				if at == 0 {
					at = line(k)
				}
				parts = append(parts, string(k.Data))
			}
			if len(parts) == 0 {
				continue
			}
			parent := resolve(parts[:len(parts)-1])
			path := joinKey(parent, parts[len(parts)-1])
			if e.Kind == unstable.Table {
				if l, ok := headers[path]; ok {
					return &Error{File: d.name, Line: at, Key: path,
						Msg: fmt.Sprintf("duplicate table [%s] (first defined on line %d)", path, l)}
				}
				headers[path] = at
				current = path
			} else {
				arrays[path]++
				current = fmt.Sprintf("%s[%d]", path, arrays[path]-1)
			}
			if _, ok := d.lines[path]; !ok {
				if err := count(path, at); err != nil {
					return err
				}
				d.lines[path] = at
			}
			d.lines[current] = at
		case unstable.KeyValue:
			if err := walkKV(current, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// line returns the line of path, or of its closest indexed ancestor.
func (d *document) line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// fail records a problem about path.
func (d *document) fail(path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.name, Line: d.line(path), Key: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns every recorded problem sorted by line, joined, or nil.
func (d *document) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	sort.SliceStable(d.errs, func(i, j int) bool {
		return d.errs[i].(*Error).Line < d.errs[j].(*Error).Line
	})
	if len(d.errs) == 1 {
		return d.errs[0]
	}
	return errors.Join(d.errs...)
}

// table is one TOML table being read against a fixed set of keys.
type table struct {
	doc  *document
	path string // dotted path of the table; "" for the root
	m    map[string]any
	seen map[string]bool
}

func (d *document) table(path string, m map[string]any) *table {
	return &table{doc: d, path: path, m: m, seen: map[string]bool{}}
}

// sub returns the sub-table key (nil if absent). A non-table value is an error.
func (t *table) sub(key string) *table {
	t.seen[key] = true
	v, ok := t.m[key]
	if !ok {
		return nil
	}
	path := joinKey(t.path, key)
	m, ok := v.(map[string]any)
	if !ok {
		t.doc.fail(path, "key %q: want a table ([%s]), got %s", path, path, kindOf(v))
		return nil
	}
	return t.doc.table(path, m)
}

// get marks key as known and returns its value.
func (t *table) get(key string) (any, string, bool) {
	t.seen[key] = true
	v, ok := t.m[key]
	return v, joinKey(t.path, key), ok
}

func (t *table) str(key string, dst *string) bool {
	v, path, ok := t.get(key)
	if !ok {
		return false
	}
	s, isStr := v.(string)
	if !isStr {
		t.doc.fail(path, "key %q: want a string, got %s", path, kindOf(v))
		return false
	}
	if strings.TrimSpace(s) == "" {
		t.doc.fail(path, "key %q: must not be empty", path)
		return false
	}
	*dst = s
	return true
}

func (t *table) boolean(key string, dst *bool) bool {
	v, path, ok := t.get(key)
	if !ok {
		return false
	}
	b, isBool := v.(bool)
	if !isBool {
		t.doc.fail(path, "key %q: want a boolean (true or false), got %s", path, kindOf(v))
		return false
	}
	*dst = b
	return true
}

// integer reads an integer in [lo, hi].
func (t *table) integer(key string, lo, hi int64, dst *int) bool {
	v, path, ok := t.get(key)
	if !ok {
		return false
	}
	n, isInt := v.(int64)
	if !isInt {
		t.doc.fail(path, "key %q: want an integer, got %s", path, kindOf(v))
		return false
	}
	if n < lo || n > hi {
		t.doc.fail(path, "key %q: %d is out of range %d..%d", path, n, lo, hi)
		return false
	}
	*dst = int(n)
	return true
}

func (t *table) port(key string, dst *int) bool {
	v, path, ok := t.get(key)
	if !ok {
		return false
	}
	if n, isInt := v.(int64); isInt && (n < 1 || n > 65535) {
		t.doc.fail(path, "key %q: port %d is out of range 1..65535", path, n)
		return false
	}
	return t.integer(key, 1, 65535, dst)
}

// duration reads a positive Go duration string ("30s").
func (t *table) duration(key string, dst *Duration) bool {
	v, path, ok := t.get(key)
	if !ok {
		return false
	}
	s, isStr := v.(string)
	if !isStr {
		t.doc.fail(path, "key %q: want a duration string like \"30s\", got %s", path, kindOf(v))
		return false
	}
	d, err := ParseDuration(s)
	if err != nil {
		t.doc.fail(path, "key %q: %v", path, err)
		return false
	}
	if d == 0 {
		t.doc.fail(path, "key %q: duration must be greater than zero", path)
		return false
	}
	*dst = d
	return true
}

// httpURL reads an absolute http(s) URL with a host.
func (t *table) httpURL(key string, dst *string) bool {
	var s string
	if !t.str(key, &s) {
		return false
	}
	path := joinKey(t.path, key)
	if err := checkHTTPURL(s); err != nil {
		t.doc.fail(path, "key %q: %v", path, err)
		return false
	}
	*dst = s
	return true
}

// match reads a string that must match re (described by what).
func (t *table) match(key string, re *regexp.Regexp, what string, dst *string) bool {
	var s string
	if !t.str(key, &s) {
		return false
	}
	if !re.MatchString(s) {
		path := joinKey(t.path, key)
		t.doc.fail(path, "key %q: %q is not %s", path, s, what)
		return false
	}
	*dst = s
	return true
}

// unknown reports every key of the table that no reader asked for, with a
// suggestion when a known key is a likely typo.
func (t *table) unknown(extra string) {
	var keys []string
	for k := range t.m {
		if !t.seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := joinKey(t.path, k)
		what := "key"
		if _, isTable := t.m[k].(map[string]any); isTable {
			what = "table"
		}
		msg := fmt.Sprintf("unknown %s %q", what, path)
		if s := t.suggest(k); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", joinKey(t.path, s))
		}
		if extra != "" {
			msg += extra
		}
		t.doc.fail(path, "%s", msg)
	}
}

func (t *table) suggest(k string) string {
	best, bestD := "", 3
	for known := range t.seen {
		if _, present := t.m[known]; present {
			continue
		}
		if d := editDistance(k, known); d < bestD || (d == bestD && known < best) {
			best, bestD = known, d
		}
	}
	return best
}

func (t *table) require(keys ...string) {
	for _, k := range keys {
		if _, ok := t.m[k]; !ok {
			where := "the file"
			if t.path != "" {
				where = t.path
			}
			t.doc.errs = append(t.doc.errs, &Error{File: t.doc.name, Line: t.doc.line(t.path), Key: joinKey(t.path, k),
				Msg: fmt.Sprintf("missing required key %q in %s", k, where)})
		}
	}
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time, toml.LocalDate, toml.LocalDateTime, toml.LocalTime:
		return "a date/time"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("invalid URL %q", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("URL %q must start with http:// or https://", s)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("URL %q has no host", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("URL %q: port out of range 1..65535", s)
		}
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("URL %q must not carry user info, query or fragment", s)
	}
	return nil
}
