package checks

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
	"github.com/rbee-dev/rbee/internal/sse"
)

func narrationEvent(t *testing.T, id int, n api.Narration) sse.Event {
	t.Helper()
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return sse.Event{ID: id, Name: api.EventNarration, Data: string(b)}
}

func TestRoutedTo(t *testing.T) {
	route := func(w, h string) api.Narration {
		return api.Narration{Actor: "queen", Action: "schedule", Hive: h, Message: "routing inference for rbee/tiny-ngram:model.bin to worker " + w + " on " + h + " (0 in flight)"}
	}
	token := sse.Event{ID: 9, Name: api.EventToken, Data: `{"t":"a","i":0}`}
	cases := []struct {
		name    string
		events  []api.Narration
		want    Route
		wantErr string
	}{
		{name: "one route", events: []api.Narration{route("w-1", "hive-1")}, want: Route{"w-1", "hive-1"}},
		{name: "retry: the last route served", events: []api.Narration{
			route("w-1", "hive-1"),
			{Actor: "queen", Action: "schedule", Hive: "hive-1", Message: "worker w-1: connection refused; trying another worker"},
			route("w-2", "hive-2"),
		}, want: Route{"w-2", "hive-2"}},
		{name: "no narration", wantErr: "no schedule narration"},
		{name: "other actors ignored", events: []api.Narration{{Actor: "hive", Action: "schedule", Message: "routing inference for m to worker w-9 on hive-9 (0 in flight)"}}, wantErr: "no schedule narration"},
		{name: "hive field disagrees", events: []api.Narration{{Actor: "queen", Action: "schedule", Hive: "hive-2", Message: "routing inference for m to worker w-1 on hive-1 (0 in flight)"}}, wantErr: "hive field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := client.Outcome{JobID: "job-x"}
			for i, n := range c.events {
				o.Events = append(o.Events, narrationEvent(t, i+1, n))
			}
			o.Events = append(o.Events, token)
			got, err := RoutedTo(o)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v; want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("RoutedTo = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
	t.Run("routes in order", func(t *testing.T) {
		o := client.Outcome{JobID: "job-x", Events: []sse.Event{narrationEvent(t, 1, route("w-1", "hive-1")), token, narrationEvent(t, 2, route("w-2", "hive-2"))}}
		rs, err := Routes(o)
		if err != nil || len(rs) != 2 || rs[0] != (Route{"w-1", "hive-1"}) || rs[1] != (Route{"w-2", "hive-2"}) {
			t.Fatalf("Routes = %+v, %v", rs, err)
		}
		o.Events = append(o.Events, sse.Event{ID: 3, Name: api.EventNarration, Data: "{"})
		if _, err := Routes(o); err == nil || !strings.Contains(err.Error(), "job-x") {
			t.Fatalf("a torn narration: %v", err)
		}
	})
}
