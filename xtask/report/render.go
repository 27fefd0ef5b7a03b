package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// File names of a test's report, in its artifacts directory.
const (
	HTMLName = "report.html"
	JSONName = "timeline.json"
)

// Write writes tl as dir/timeline.json and dir/report.html, linking every
// other file of dir (logs, inspect JSON, capture.pcap, …) and tl.Links. It
// returns the report's path.
func Write(dir string, tl *Timeline) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	links := append([]Link(nil), tl.Links...)
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if n := e.Name(); !e.IsDir() && n != HTMLName && n != JSONName && !strings.HasSuffix(n, ".png") {
				links = append(links, Link{Name: n, Href: n})
			}
		}
	}
	for _, e := range tl.Events {
		if e.Link != "" && !slices.ContainsFunc(links, func(l Link) bool { return l.Href == e.Link }) {
			links = append(links, Link{Name: e.Text, Href: e.Link})
		}
	}
	links = append(links, Link{Name: JSONName + " (this report's data)", Href: JSONName})
	if err := writeJSON(filepath.Join(dir, JSONName), tl); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(256<<10 + 220*len(tl.Logs))
	if err := Render(&buf, tl, links); err != nil {
		return "", err
	}
	out := filepath.Join(dir, HTMLName)
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	return out, nil
}

func writeJSON(path string, tl *Timeline) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 256<<10)
	err = json.NewEncoder(w).Encode(tl)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

type laneState struct {
	Lane, Container, State string
}

type pageData struct {
	TL                 *Timeline
	Result             string
	HasFail            bool
	Fail               Event
	Active             []Span
	Awaiting           []Check
	States             []laneState
	OpenJobs, ErrJobs  int
	Timeline, Latency  template.HTML
	LogRows            template.HTML
	WinFrom, WinTo     float64
	Links              []Link
	Dropped            string
	Generated          string
	FaultCount, Events int
}

// Render writes the HTML page of tl, with links.
func Render(w io.Writer, tl *Timeline, links []Link) error {
	fail, has := tl.Failure()
	d := pageData{TL: tl, HasFail: has, Fail: fail, Links: links, LogRows: logRows(tl.Logs), FaultCount: len(tl.Faults), Events: len(tl.Events),
		Generated: time.Now().UTC().Format(time.RFC3339)}
	d.Result = "passed"
	if tl.Failed {
		d.Result = "FAILED"
	}
	at := tl.Duration
	if has {
		at = fail.T
		d.Active = tl.ActiveAt(at)
	}
	d.WinFrom, d.WinTo = math.Max(0, at-6), at+1.5
	for _, c := range tl.Checks {
		if c.Start <= at+0.05 && (!c.Done || c.End >= at-1.5) {
			d.Awaiting = append(d.Awaiting, c)
		}
	}
	if len(d.Awaiting) > 4 {
		d.Awaiting = d.Awaiting[len(d.Awaiting)-4:]
	}
	for _, l := range tl.Lanes {
		st := laneState{Lane: l}
		for _, e := range tl.Events {
			if e.Lane != l || e.T > at+0.05 {
				continue
			}
			switch e.Kind {
			case KindLifecycle:
				st.Container = e.Text
			case KindState:
				st.State = e.Text
			}
		}
		d.States = append(d.States, st)
	}
	for _, j := range tl.Jobs {
		if j.Submit <= at && (!j.Ended || j.End > at) {
			d.OpenJobs++
		}
		if j.Ended && j.End <= at+0.05 && termClass(j) == "error" {
			d.ErrJobs++
		}
	}
	var dropped []string
	for k, n := range tl.Dropped {
		dropped = append(dropped, fmt.Sprintf("%s: %d", k, n))
	}
	sort.Strings(dropped)
	d.Dropped = strings.Join(dropped, ", ")
	d.Timeline = timelineSVG(tl, fail, has)
	d.Latency = latencySVG(tl)
	if err := pageTmpl.Execute(w, d); err != nil {
		return fmt.Errorf("report: render: %w", err)
	}
	return nil
}

// logRows are the log table's rows, written directly: a template range
// over thousands of lines would be most of the report's render time.
func logRows(logs []LogLine) template.HTML {
	var b strings.Builder
	b.Grow(len(logs) * 200)
	for _, l := range logs {
		fmt.Fprintf(&b, `<tr data-t="%.3f"><td class="lt">%s</td><td class="ll">%s</td><td class="lx">%s</td></tr>`+"\n", l.T, fmtT(l.T), esc(l.Lane), esc(l.Text))
	}
	return template.HTML(b.String())
}

var funcs = template.FuncMap{
	"t":     fmtT,
	"dur":   fmtDur,
	"f3":    func(f float64) string { return fmt.Sprintf("%.3f", f) },
	"until": endText,
}

var pageTmpl = template.Must(template.New("page").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Result}}: {{.TL.Test}}</title>
<style>` + css + `</style></head>
<body>
<header><h1><span class="result {{if .TL.Failed}}failed{{else}}passed{{end}}">{{.Result}}</span> {{.TL.Test}}</h1>
<p class="meta">topology {{.TL.Topology}} · stack {{.TL.Run}} · started {{.TL.Start.UTC.Format "2006-01-02 15:04:05.000"}} UTC · {{t .TL.Duration}} recorded · {{.FaultCount}} faults · {{len .TL.Jobs}} jobs · {{.Events}} events{{if .Dropped}} · beyond the bounds: {{.Dropped}}{{end}}</p></header>
<section id="summary">
{{if .HasFail}}<div id="failure"><b>✗ failure at <a href="#" class="jump" data-t="{{f3 .Fail.T}}">{{t .Fail.T}}</a>:</b> <span id="failure-text">{{.Fail.Text}}</span></div>{{else}}<div id="failure" class="none">no failure recorded</div>{{end}}
<div id="faults-at-failure"><b>Faults in force {{if .HasFail}}at the failure{{else}}at the end{{end}}:</b>
{{if .Active}}<ul>{{range .Active}}<li class="active-fault"><b>{{.Text}}</b> since {{t .Start}} (until {{until .}}){{if .Rules}}<details><summary>rules</summary><pre>{{.Rules}}</pre></details>{{end}}</li>{{end}}</ul>{{else}}<span class="none">none</span>{{end}}</div>
<div class="cols">
<div><b>Awaiting:</b> {{if .Awaiting}}<ul>{{range .Awaiting}}<li class="{{if not .Done}}running{{else if .OK}}ok{{else}}failed{{end}}">{{.What}} — {{if not .Done}}still waiting{{else if .OK}}held at {{t .End}}{{else}}failed at {{t .End}}: {{.Err}}{{end}}</li>{{end}}</ul>{{else}}<span class="none">nothing</span>{{end}}</div>
<div><b>Services then:</b><ul>{{range .States}}<li><b>{{.Lane}}</b>: {{if .Container}}container {{.Container}}{{else}}no container event{{end}}{{if .State}}; the queen says {{.State}}{{end}}</li>{{end}}</ul>
<b>Jobs then:</b> {{.OpenJobs}} in flight, {{.ErrJobs}} ended [ERROR] so far</div>
</div></section>
<section><h2>Timeline <small>(click to move the log window; hover for details)</small></h2>
<div class="legend"><span class="k fault"></span>fault in force <span class="k hb"></span>heartbeat seen by the queen <span class="k state"></span>state change <span class="k lc"></span>container event <span class="k check"></span>await (green held, red failed, grey waiting) <span class="k job"></span>job ([DONE] green, [ERROR] red, unfinished orange) <span class="k fail"></span>failure</div>
<div class="scroll">{{.Timeline}}</div></section>
<section><h2>Job latency</h2><div class="scroll">{{.Latency}}</div></section>
<section id="logpane"><h2>Logs <small>window <input id="from" type="number" step="0.1" value="{{f3 .WinFrom}}"> s to <input id="to" type="number" step="0.1" value="{{f3 .WinTo}}"> s
<button id="win-fail" data-t="{{if .HasFail}}{{f3 .Fail.T}}{{else}}{{f3 .TL.Duration}}{{end}}">around the failure</button> <button id="win-all">all</button> <span id="logcount"></span></small></h2>
<div id="logbox"><table id="logs"><tbody>
{{.LogRows}}</tbody></table></div></section>
<section id="links"><h2>Files</h2><ul>{{range .Links}}<li><a href="{{.Href}}">{{.Name}}</a></li>{{end}}</ul>
<p class="meta">generated {{.Generated}} by the rbee Docker harness; the data is in timeline.json.</p></section>
<script>` + script + `</script>
</body></html>
`))

const css = `
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 16px 24px;color:#1f2937;background:#fff}
h1{font-size:18px;margin:10px 0 2px}h2{font-size:14px;margin:14px 0 4px}h2 small{font-weight:normal;color:#4b5563}
.meta{color:#6b7280;margin:0 0 6px}.none{color:#6b7280}
.result{padding:1px 8px;border-radius:4px;color:#fff}.result.failed{background:#dc2626}.result.passed{background:#16a34a}
#summary{border:1px solid #e5e7eb;border-left:5px solid #dc2626;padding:6px 10px;background:#fffbf5}
#failure{font-size:14px;margin-bottom:4px}#failure-text{font-family:ui-monospace,monospace;white-space:pre-wrap}
#faults-at-failure ul,#summary ul{margin:2px 0 4px 18px;padding:0}.active-fault b{color:#b45309}
.cols{display:flex;gap:40px}.cols>div{flex:1}
li.failed{color:#b91c1c}li.ok{color:#15803d}li.running{color:#4b5563}
pre{margin:2px 0;font-size:11px;background:#f3f4f6;padding:4px;max-height:160px;overflow:auto}
.scroll{overflow-x:auto}
svg text{font-size:11px;fill:#374151}.lane-label{font-weight:600}.tick{fill:#6b7280;font-size:10px}
.grid{stroke:#e5e7eb}.axis{stroke:#9ca3af}
.fault-span{fill:#f59e0b;fill-opacity:.30;stroke:#d97706;stroke-width:1}.fault-label{fill:#92400e;font-weight:600;font-size:10px}
.fault-band{fill:#f59e0b;fill-opacity:.15}
.hb{stroke:#2563eb;stroke-width:1.2}
.state{stroke:#111827;stroke-width:.6}.state.good{fill:#16a34a}.state.bad{fill:#dc2626}.state.other{fill:#6b7280}.state-label{font-size:9px}
.ev-lifecycle{stroke:#111827;stroke-width:.8}.ev-lifecycle.good{fill:#86efac}.ev-lifecycle.bad{fill:#ef4444}.ev-lifecycle.paused{fill:#a78bfa}.ev-lifecycle.other{fill:#d1d5db}
.check.ok{fill:#86efac}.check.failed{fill:#f87171}.check.running{fill:#d1d5db}
.note{stroke:#7c3aed;fill:#c4b5fd}
.job{stroke-width:4;stroke-linecap:round}.job.done,.lat.done{stroke:#16a34a;fill:#16a34a}.job.error,.lat.error{stroke:#dc2626;fill:#dc2626}
.job.cancelled,.lat.cancelled{stroke:#6b7280;fill:#6b7280}.job.open,.lat.open{stroke:#f97316;fill:#f97316;stroke-dasharray:4 2}
#failure-marker line{stroke:#dc2626;stroke-width:2}#failure-marker text{fill:#dc2626;font-weight:700}
.failure-event{fill:#fca5a5;stroke:#dc2626}
#window{fill:#3b82f6;fill-opacity:.10;stroke:#3b82f6;stroke-dasharray:3 2;pointer-events:none}
.legend{color:#4b5563;font-size:11px;margin-bottom:2px}.legend .k{display:inline-block;width:12px;height:10px;margin:0 3px 0 10px;vertical-align:middle}
.k.fault{background:#fbbf24}.k.hb{background:#2563eb;width:2px}.k.state{background:#16a34a;transform:rotate(45deg);width:8px;height:8px}
.k.lc{background:#ef4444;border-radius:50%}.k.check{background:#86efac}.k.job{background:#16a34a;height:4px}.k.fail{background:#dc2626;width:2px;height:14px}
#logbox{max-height:420px;overflow:auto;border:1px solid #e5e7eb}
#logs{border-collapse:collapse;font:11px/1.35 ui-monospace,Menlo,monospace;width:100%}
#logs td{padding:0 6px;vertical-align:top;border-bottom:1px solid #f3f4f6}#logs tr.hidden{display:none}
.lt{color:#6b7280;text-align:right;white-space:nowrap}.ll{color:#1d4ed8;white-space:nowrap}.lx{white-space:pre-wrap;word-break:break-all}
#logs tr.near td{background:#fef2f2}
input[type=number]{width:70px}
`

// script moves the log window: a click on the timeline centres it there,
// the inputs set it exactly; rows outside it are hidden.
const script = `
(function(){
var svg=document.getElementById('timeline'),from=document.getElementById('from'),to=document.getElementById('to');
var rows=[].slice.call(document.querySelectorAll('#logs tr')),win=document.getElementById('window');
var left=+svg.dataset.left,width=+svg.dataset.width,dur=+svg.dataset.dur;
var fm=document.getElementById('failure-marker'),ft=fm?+fm.dataset.t:null;
function apply(){var a=+from.value,b=+to.value,n=0,first=null;
 rows.forEach(function(r){var t=+r.dataset.t,on=t>=a&&t<=b;r.classList.toggle('hidden',!on);
  r.classList.toggle('near',ft!==null&&Math.abs(t-ft)<0.5);if(on){n++;if(!first)first=r;}});
 document.getElementById('logcount').textContent=n+' of '+rows.length+' lines';
 var x1=left+Math.max(0,Math.min(a,dur))/dur*width,x2=left+Math.max(0,Math.min(b,dur))/dur*width;
 win.setAttribute('x',x1);win.setAttribute('width',Math.max(1,x2-x1));}
function centre(t){from.value=(Math.max(0,t-3)).toFixed(2);to.value=(t+3).toFixed(2);apply();}
svg.addEventListener('click',function(ev){var p=svg.createSVGPoint();p.x=ev.clientX;p.y=ev.clientY;
 var q=p.matrixTransform(svg.getScreenCTM().inverse());if(q.x<left)return;centre((q.x-left)/width*dur);});
from.addEventListener('input',apply);to.addEventListener('input',apply);
document.getElementById('win-all').addEventListener('click',function(){from.value=0;to.value=dur.toFixed(2);apply();});
document.getElementById('win-fail').addEventListener('click',function(){var t=+this.dataset.t;from.value=Math.max(0,t-6).toFixed(2);to.value=(t+1.5).toFixed(2);apply();});
[].forEach.call(document.querySelectorAll('a.jump'),function(a){a.addEventListener('click',function(e){e.preventDefault();centre(+a.dataset.t);});});
apply();
})();
`
