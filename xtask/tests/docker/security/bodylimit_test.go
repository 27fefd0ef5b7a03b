//go:build docker

package security

import (
	"bytes"
	"testing"

	"github.com/rbee-dev/rbee/internal/api"
)

// The signed endpoints read at most api.MaxBodyBytes of a body before they
// verify it: an unsigned body 64 KiB over the limit gets 413 (the size is
// refused before the signature is looked at), while an unsigned body just
// under the limit gets 401 (the negative control: the 413 is about the
// size). Checked on the queen's two heartbeat endpoints and the hive's job
// API. 64 KiB over stays under what a Go server drains after refusing a
// body, so the answer reaches the client on a loaded machine too.
func TestSignedEndpointsRefuseOversizedBody(t *testing.T) {
	t.Parallel()
	e := boundsStart(t)
	hc := boundsHTTP()
	body := func(n int) []byte {
		b := append([]byte(`{"worker_id":"`), bytes.Repeat([]byte("x"), n)...)
		b = append(b, []byte(`"}`)...)
		return b[:n]
	}
	over, under := body(api.MaxBodyBytes+64<<10), body(api.MaxBodyBytes-4096)
	for _, u := range []string{e.queenURL + "/v1/worker-heartbeat", e.queenURL + "/v1/hive-heartbeat", e.hiveURL + "/v1/jobs"} {
		code, msg, err := boundsPost(hc, u, over)
		if err != nil {
			t.Errorf("POST %s with %d bytes: %v; want HTTP 413", u, len(over), err)
		} else if code != 413 {
			t.Errorf("POST %s with %d bytes (limit %d): HTTP %d %q; want 413", u, len(over), api.MaxBodyBytes, code, msg)
		}
		code, msg, err = boundsPost(hc, u, under)
		if err != nil || code != 401 {
			t.Errorf("POST %s with %d unsigned bytes (under the limit): HTTP %d %q %v; want 401", u, len(under), code, msg, err)
		}
	}
	boundsRealJobs(t, e)
}
