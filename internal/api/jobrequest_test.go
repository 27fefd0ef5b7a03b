package api

import (
	"errors"
	"strings"
	"testing"
)

var testSpecs = OpSpecs{
	OpStatus:      {},
	OpHiveInstall: {Required: []string{"alias"}, Optional: []string{"force"}},
	OpInfer:       {Required: []string{"model", "prompt"}, Optional: []string{"max_tokens", "temperature", "seed", "hive_id"}},
}

func TestDecodeJobRequestGood(t *testing.T) {
	req, err := DecodeJobRequest([]byte(`{"operation":"infer","model":"m","prompt":"hi","max_tokens":5,"seed":7,"temperature":0.5}`), testSpecs)
	if err != nil {
		t.Fatal(err)
	}
	if req.Operation != OpInfer || req.Model != "m" || req.MaxTokens != 5 || *req.Seed != 7 || *req.Temperature != 0.5 {
		t.Fatalf("decoded %+v", req)
	}
	if _, err := DecodeJobRequest([]byte(`{"operation":"status"}`), testSpecs); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeJobRequestBad(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"malformed", `{"operation":`, "malformed JSON"},
		{"not object", `[1,2]`, "malformed JSON"},
		{"null", `null`, "JSON object"},
		{"missing op", `{}`, `missing field "operation"`},
		{"op not string", `{"operation":5}`, `"operation" must be a string`},
		{"unknown op", `{"operation":"fly"}`, `unknown operation "fly"`},
		{"unknown field", `{"operation":"status","alias":"x"}`, `unknown field "alias"`},
		{"missing required", `{"operation":"hive_install"}`, `missing field "alias"`},
		{"null required", `{"operation":"hive_install","alias":null}`, `missing field "alias"`},
		{"empty required", `{"operation":"hive_install","alias":"  "}`, `"alias" must not be empty`},
		{"ill-typed", `{"operation":"hive_install","alias":"a","force":"yes"}`, `field "force" must be bool`},
		{"ill-typed int", `{"operation":"infer","model":"m","prompt":"p","max_tokens":"many"}`, `"max_tokens" must be int`},
		{"negative seed", `{"operation":"infer","model":"m","prompt":"p","seed":-1}`, `"seed" must be uint64`},
		{"trailing", `{"operation":"status"} {}`, "malformed JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJobRequest([]byte(tc.body), testSpecs)
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want *RequestError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func FuzzDecodeJobRequest(f *testing.F) {
	for _, s := range []string{`{"operation":"status"}`, `{"operation":"infer","model":"m","prompt":"p","max_tokens":3}`,
		`{"operation":"hive_install","alias":"a","force":true}`, `{`, `null`, `{"operation":"x"}`, `{"operation":"status","a":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeJobRequest(body, testSpecs)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("non-request error %T: %v", err, err)
			}
			return
		}
		if _, ok := testSpecs[req.Operation]; !ok {
			t.Fatalf("accepted unknown operation %q", req.Operation)
		}
	})
}
