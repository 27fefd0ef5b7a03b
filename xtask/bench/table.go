package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Table is one section of the report: a title, a header row, data rows and
// notes printed under it.
type Table struct {
	Title  string
	Header []string
	Rows   [][]string
	Notes  []string
}

// Add appends a row; cells beyond the header are kept, missing cells are empty.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Text writes t as aligned plain text for a terminal.
func (t Table) Text(w io.Writer) error {
	if t.Title != "" {
		if _, err := fmt.Fprintf(w, "\n%s\n", t.Title); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.Header, "\t"))
	for _, r := range t.Rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range t.Notes {
		if _, err := fmt.Fprintf(w, "  %s\n", n); err != nil {
			return err
		}
	}
	return nil
}

// Markdown renders t as a GitHub table under a level-3 heading, notes as a
// list. Pipes and newlines in cells are escaped so a cell cannot break the
// table.
func (t Table) Markdown() string {
	var b strings.Builder
	if t.Title != "" {
		fmt.Fprintf(&b, "### %s\n\n", t.Title)
	}
	cols := len(t.Header)
	for _, r := range t.Rows {
		cols = max(cols, len(r))
	}
	if cols > 0 {
		row := func(cells []string) {
			b.WriteString("|")
			for i := 0; i < cols; i++ {
				c := ""
				if i < len(cells) {
					c = mdCell(cells[i])
				}
				b.WriteString(" " + c + " |")
			}
			b.WriteString("\n")
		}
		row(t.Header)
		b.WriteString("|")
		for i := 0; i < cols; i++ {
			b.WriteString("---|")
		}
		b.WriteString("\n")
		for _, r := range t.Rows {
			row(r)
		}
	}
	if len(t.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range t.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "<br>")
}

// Secs formats seconds for a table: "1.23 s", "45 ms", "n/a" for NaN.
func Secs(s float64) string {
	switch {
	case math.IsNaN(s) || math.IsInf(s, 0):
		return "n/a"
	case math.Abs(s) >= 1:
		return fmt.Sprintf("%.2f s", s)
	case math.Abs(s) < 0.01:
		return fmt.Sprintf("%.2f ms", s*1000)
	default:
		return fmt.Sprintf("%.0f ms", s*1000)
	}
}

// Spread formats the range of a sample of seconds: "1.10–1.40 s".
func Spread(st Stats) string {
	if st.N == 0 {
		return "n/a"
	}
	if math.Abs(st.Min) >= 1 || math.Abs(st.Max) >= 1 {
		return fmt.Sprintf("%.2f–%.2f s", st.Min, st.Max)
	}
	return fmt.Sprintf("%.0f–%.0f ms", st.Min*1000, st.Max*1000)
}

// IQR formats the interquartile range of a sample of seconds.
func IQR(st Stats) string {
	if st.N == 0 {
		return "n/a"
	}
	return Spread(Stats{N: st.N, Min: st.P25, Max: st.P75})
}

// Times formats a ratio: "0.62×", "n/a" for NaN.
func Times(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", r)
}

// Rate formats a per-second rate with thousands separators: "12 345/s".
func Rate(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "n/a"
	}
	return group(int64(math.Round(r))) + "/s"
}

// MiB formats bytes as mebibytes with one decimal.
func MiB(b float64) string {
	if math.IsNaN(b) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", b/(1<<20))
}

// Dur formats a duration rounded for a table.
func Dur(d time.Duration) string {
	switch {
	case d >= time.Minute:
		return d.Round(time.Second).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}

func group(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
