package dockerx

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// RemoveByLabel removes exactly the containers, networks and volumes that
// carry every given label: a running container is killed and waited for
// before its removal (never removed while it runs), a paused one unpaused
// first, one removed by someone else meanwhile counts as removed, a refused
// removal is reported by name, and nothing without all the labels is
// touched.
func TestRemoveByLabel(t *testing.T) {
	f := newFakeEngine(t)
	run := func(r string) map[string]string { return map[string]string{LabelProject: ProjectValue, LabelRun: r} }
	add := func(id, state string, labels map[string]string) {
		f.containers[id] = &fakeObject{id: id, name: "rbee-" + id, state: state, labels: labels}
	}
	add("c-running", "running", run("r1"))
	add("c-paused", "paused", run("r1"))
	add("c-exited", "exited", run("r1"))
	add("c-vanished", "exited", run("r1")) // removed by someone else between list and remove
	add("c-refused", "exited", run("r1"))
	add("c-other-run", "running", run("r2"))
	add("c-no-project", "running", map[string]string{LabelRun: "r1"})
	f.failRemove["c-vanished"] = http.StatusNotFound
	f.failRemove["c-refused"] = http.StatusInternalServerError
	f.networks["n1"] = &fakeObject{id: "n1", name: "rbee-r1_default", labels: run("r1")}
	f.networks["n2"] = &fakeObject{id: "n2", name: "rbee-r2_default", labels: run("r2")}
	f.volumes["v1"] = &fakeObject{id: "v1", labels: run("r1")}
	f.volumes["v2"] = &fakeObject{id: "v2", labels: run("r2")}
	t.Setenv("DOCKER_HOST", f.host)
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	d, err := Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	n, err := RemoveByLabel(context.Background(), d, Project, LabelRun+"=r1")
	if err == nil || !strings.Contains(err.Error(), "remove container rbee-c-refused") {
		t.Errorf("err = %v; want the refused removal of rbee-c-refused reported", err)
	}
	if want := (Removed{Containers: 4, Networks: 1, Volumes: 1}); n != want {
		t.Errorf("removed %+v, want %+v", n, want)
	}
	f.mu.Lock()
	var left []string
	for id := range f.containers {
		left = append(left, id)
	}
	_, n2 := f.networks["n2"]
	_, v2 := f.volumes["v2"]
	nets, vols := len(f.networks), len(f.volumes)
	f.mu.Unlock()
	slices.Sort(left)
	if want := []string{"c-no-project", "c-other-run", "c-refused"}; !slices.Equal(left, want) {
		t.Errorf("containers left %v, want %v", left, want)
	}
	if nets != 1 || !n2 || vols != 1 || !v2 {
		t.Errorf("left %d networks (n2 %v), %d volumes (v2 %v); want only r2's", nets, n2, vols, v2)
	}

	calls := f.called()
	at := func(call string) int { return slices.Index(calls, call) }
	for _, id := range []string{"c-running", "c-paused"} {
		kill, wait, del := at("POST /containers/"+id+"/kill"), at("POST /containers/"+id+"/wait"), at("DELETE /containers/"+id)
		if kill < 0 || wait < 0 || del < 0 || !(kill < wait && wait < del) {
			t.Errorf("%s: kill at %d, wait at %d, remove at %d; want kill, then wait, then remove", id, kill, wait, del)
		}
	}
	if u, k := at("POST /containers/c-paused/unpause"), at("POST /containers/c-paused/kill"); u < 0 || u > k {
		t.Errorf("paused container: unpause at %d, kill at %d; want unpause first", u, k)
	}
	for _, c := range calls {
		for _, other := range []string{"c-other-run", "c-no-project", "n2", "v2"} {
			if strings.HasSuffix(c, "/"+other) || strings.Contains(c, "/"+other+"/") {
				t.Errorf("%s touched (%s): it lacks one of the labels", other, c)
			}
		}
	}
	if slices.Contains(calls, "POST /containers/c-exited/kill") {
		t.Error("an exited container was killed; only running ones need stopping")
	}

	// Nothing left with the labels: a second sweep removes nothing and fails on nothing but the refusal.
	n, err = RemoveByLabel(context.Background(), d, Project, LabelRun+"=r1")
	if want := (Removed{}); n != want || err == nil || !strings.Contains(err.Error(), "rbee-c-refused") {
		t.Errorf("second sweep: removed %+v, err %v; want nothing removed and only the refusal again", n, err)
	}
}
