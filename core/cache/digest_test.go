package cache_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-ci/tollgate/core/cache"
	"github.com/tollgate-ci/tollgate/core/errs"
)

const emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParseDigest(t *testing.T) {
	cases := []struct {
		in   string
		want cache.Digest
		ok   bool
	}{
		{emptyHash + "/0", cache.Digest{Hash: emptyHash, Size: 0}, true},
		{emptyHash + "/1234", cache.Digest{Hash: emptyHash, Size: 1234}, true},
		{emptyHash + "/1099511627776", cache.Digest{Hash: emptyHash, Size: 1 << 40}, true},
		{emptyHash + "/1099511627777", cache.Digest{}, false},
		{emptyHash, cache.Digest{}, false},
		{emptyHash + "/", cache.Digest{}, false},
		{emptyHash + "/-1", cache.Digest{}, false},
		{emptyHash + "/+1", cache.Digest{}, false},
		{emptyHash + "/01", cache.Digest{}, false},
		{emptyHash + "/1/2", cache.Digest{}, false},
		{emptyHash + "/1e3", cache.Digest{}, false},
		{strings.ToUpper(emptyHash) + "/0", cache.Digest{}, false},
		{emptyHash[:63] + "/0", cache.Digest{}, false},
		{emptyHash + "0/0", cache.Digest{}, false},
		{"sha256:" + emptyHash + "/0", cache.Digest{}, false},
		{"", cache.Digest{}, false},
	}
	for _, tc := range cases {
		got, err := cache.ParseDigest(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("ParseDigest(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if !tc.ok && !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("ParseDigest(%q) = %v, %v; want InvalidArgument", tc.in, got, err)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func TestDigestJSONAndSum(t *testing.T) {
	d := cache.DigestOf([]byte("hello"))
	if d.Size != 5 || d.Hash != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("DigestOf = %v", d)
	}
	r, err := cache.DigestReader(strings.NewReader("hello"))
	if err != nil || r != d {
		t.Fatalf("DigestReader = %v, %v", r, err)
	}
	b, _ := json.Marshal(map[string]cache.Digest{"d": d})
	if string(b) != `{"d":"`+d.String()+`"}` {
		t.Errorf("JSON = %s", b)
	}
	var back map[string]cache.Digest
	if err := json.Unmarshal(b, &back); err != nil || back["d"] != d {
		t.Errorf("round trip = %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"d":"nope"}`), &back); !errs.Is(err, errs.InvalidArgument) {
		t.Errorf("unmarshal of a bad digest: %v", err)
	}
	sum := d.Sum()
	if sum[0] != 0x2c || sum[31] != 0x24 {
		t.Errorf("Sum = %x", sum)
	}
}

func TestValidRefName(t *testing.T) {
	good := []string{"a", "build/linux/deps-3f2a", "A.b_c-d+e=f@g", "x/y/z/0/1", strings.Repeat("a", cache.MaxRefName)}
	bad := []string{"", "/a", "a/", "a//b", "a/./b", "a/../b", "..", ".", "a b", "a\nb", "a\\b", "a:b", "a?b", "a#b",
		"a%2e", "é", strings.Repeat("a", cache.MaxRefName+1)}
	for _, n := range good {
		if err := cache.ValidRefName(n); err != nil {
			t.Errorf("ValidRefName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if err := cache.ValidRefName(n); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("ValidRefName(%q) = %v, want InvalidArgument", n, err)
		}
	}
}

func TestOptions(t *testing.T) {
	d := cache.Options{}.WithDefaults()
	if d.MinHeadroom != 2e9 || d.MaxHeadroom != 10e9 || d.Validate() != nil {
		t.Errorf("defaults = %+v, %v", d, d.Validate())
	}
	for _, o := range []cache.Options{{MinHeadroom: 5, MaxHeadroom: 5}, {MinHeadroom: 6, MaxHeadroom: 5}, {MinHeadroom: -1, MaxHeadroom: 5},
		cache.Options{MinHeadroom: 20e9}.WithDefaults()} {
		if err := o.Validate(); !errs.Is(err, errs.InvalidArgument) {
			t.Errorf("Validate(%+v) = %v, want InvalidArgument", o, err)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errs.E(errs.Unavailable, "test", "broken") }

func TestCopyVerified(t *testing.T) {
	data := []byte("some content")
	d := cache.DigestOf(data)
	cases := []struct {
		name    string
		r       io.Reader
		code    errs.Code
		maxSent int
	}{
		{"exact", bytes.NewReader(data), errs.Unknown, len(data)},
		{"short", bytes.NewReader(data[:5]), errs.InvalidArgument, 5},
		{"long", io.MultiReader(bytes.NewReader(data), strings.NewReader("and more")), errs.InvalidArgument, len(data)},
		{"other", strings.NewReader("SOME CONTENT"), errs.InvalidArgument, len(data)},
		{"broken", io.MultiReader(bytes.NewReader(data[:3]), errReader{}), errs.Unavailable, 3},
	}
	for _, tc := range cases {
		var out bytes.Buffer
		err := cache.CopyVerified(&out, tc.r, d)
		if tc.code == errs.Unknown && err != nil || tc.code != errs.Unknown && !errs.Is(err, tc.code) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.code)
		}
		if out.Len() > tc.maxSent {
			t.Errorf("%s: the writer got %d bytes, more than %d", tc.name, out.Len(), tc.maxSent)
		}
	}
}

func TestVerifyingReader(t *testing.T) {
	data := []byte("content")
	d := cache.DigestOf(data)
	if b, err := io.ReadAll(cache.VerifyingReader(io.NopCloser(bytes.NewReader(data)), d)); err != nil || !bytes.Equal(b, data) {
		t.Errorf("good content: %q, %v", b, err)
	}
	for _, bad := range []string{"CONTENT", "conten", "content!"} {
		_, err := io.ReadAll(cache.VerifyingReader(io.NopCloser(strings.NewReader(bad)), d))
		if !errs.Is(err, errs.Unavailable) || errors.Is(err, io.EOF) {
			t.Errorf("content %q: %v, want Unavailable", bad, err)
		}
	}
}

func TestHistogramCutoff(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	h := cache.NewHistogram(time.Minute)
	// Minute 0: 10 bytes (2 objects), 1: 20, 3: 30, 5: 40 (at 5m30s), and one before 1970.
	h.Add(at(0), 4)
	h.Add(at(0).Add(30*time.Second), 6)
	h.Add(at(1), 20)
	h.Add(at(3), 30)
	h.Add(at(5).Add(30*time.Second), 40)
	if o, b := h.Totals(); o != 5 || b != 100 || h.Buckets() != 4 || !h.Oldest().Equal(at(0)) {
		t.Fatalf("totals %d %d, buckets %d, oldest %v", o, b, h.Buckets(), h.Oldest())
	}
	far := at(100)
	cases := []struct {
		need       int64
		limit      time.Time
		cutoff     time.Time
		objs, byts int64
		kept       time.Time
		short      bool
	}{
		{0, far, time.Time{}, 0, 0, at(0), false},
		{1, far, at(1), 2, 10, at(1), false},
		{10, far, at(1), 2, 10, at(1), false},
		{11, far, at(2), 3, 30, at(3), false},
		{60, far, at(4), 4, 60, at(5).Add(30 * time.Second), false},
		{61, far, at(6), 5, 100, time.Time{}, false},
		{101, far, at(6), 5, 100, time.Time{}, true},
		{61, at(5), at(4), 4, 60, at(5).Add(30 * time.Second), true},     // minute 5 is too recent
		{5, at(0).Add(59 * time.Second), time.Time{}, 0, 0, at(0), true}, // nothing is old enough
	}
	for i, tc := range cases {
		c := h.Cutoff(tc.need, tc.limit)
		if !c.Cutoff.Equal(tc.cutoff) || c.Objects != tc.objs || c.Bytes != tc.byts || !c.OldestKept.Equal(tc.kept) || c.Short != tc.short {
			t.Errorf("case %d: Cutoff(%d) = %+v", i, tc.need, c)
		}
	}
	neg := cache.NewHistogram(time.Minute)
	neg.Add(time.Unix(-90, 0), 1) // bucket -2: [-120s, -60s)
	if c := neg.Cutoff(1, time.Unix(0, 0)); !c.Cutoff.Equal(time.Unix(-60, 0)) {
		t.Errorf("before 1970: cutoff %v", c.Cutoff)
	}
}
