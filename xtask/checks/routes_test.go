package checks

import (
	"slices"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
	"github.com/rbee-dev/rbee/internal/client"
)

func TestRoutes(t *testing.T) {
	route := func(w, h string) api.Narration {
		return api.Narration{Actor: "queen", Action: "schedule", Hive: h, Message: "routing inference for m to worker " + w + " on " + h + " (0 in flight)"}
	}
	retry := api.Narration{Actor: "queen", Action: "schedule", Hive: "hive-1", Message: "worker w-1: connection refused; trying another worker"}
	cases := []struct {
		name    string
		events  []api.Narration
		want    []Route
		wantErr string
	}{
		{name: "none"},
		{name: "every attempt in order", events: []api.Narration{route("w-1", "hive-1"), retry, route("w-2", "hive-2"), retry, route("w-1", "hive-1")},
			want: []Route{{"w-1", "hive-1"}, {"w-2", "hive-2"}, {"w-1", "hive-1"}}},
		{name: "other actors ignored", events: []api.Narration{{Actor: "hive", Action: "schedule", Message: "routing inference for m to worker w-9 on hive-9 (0 in flight)"}}},
		{name: "hive field disagrees", events: []api.Narration{{Actor: "queen", Action: "schedule", Hive: "hive-2", Message: "routing inference for m to worker w-1 on hive-1 (0 in flight)"}}, wantErr: "hive field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := client.Outcome{JobID: "job-x"}
			for i, n := range c.events {
				o.Events = append(o.Events, narrationEvent(t, i+1, n))
			}
			got, err := Routes(o)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v; want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("Routes = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
