package agent

import "testing"

func TestIncompleteTail(t *testing.T) {
	cases := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"abc", 0},
		{"a\xe2", 1},         // first byte of a 3-byte character
		{"a\xe2\x82", 2},     // two of three
		{"a\xe2\x82\xac", 0}, // complete €
		{"\xf0\x9f\x98", 3},  // three of a 4-byte emoji
		{"\xf0\x9f\x98\x80", 0},
		{"a\xc3", 1}, // first of a 2-byte character
		{"a\xff", 0}, // never starts a character: not held back
		{"a\xc0", 0}, // overlong lead byte: not held back
		{"a\x82", 0}, // a lone continuation byte
		{"\xe2\x82\xac\xe2", 1},
	}
	for _, tc := range cases {
		if got := incompleteTail([]byte(tc.in)); got != tc.want {
			t.Errorf("incompleteTail(%q) = %d; want %d", tc.in, got, tc.want)
		}
	}
}
