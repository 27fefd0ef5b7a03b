package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/rbee-dev/rbee/internal/api"
)

// Require wraps next so that only requests signed with the verifier's key,
// inside its window and never seen before reach it; the rest get 401 with a
// JSON error naming the cause. The body (at most api.MaxBodyBytes; more is
// 413) is read to check its hash and handed to next unchanged.
func (v *Verifier) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		if _, err := v.Verify(r, body); err != nil {
			Refuse(w, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.Body == nil {
		return nil, true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, api.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, api.CodePayloadTooLarge, "request body over 1 MiB")
			return nil, false
		}
		writeError(w, http.StatusBadRequest, api.CodeInvalidRequest, "reading body: "+err.Error())
		return nil, false
	}
	return body, true
}

// Refuse answers 401 for a failed verification.
func Refuse(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", `RbeeHMAC realm="rbee"`)
	writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg}})
}
