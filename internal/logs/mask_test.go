package logs_test

import (
	"strings"
	"testing"

	"github.com/cycloneci/cyclone/internal/logs"
)

func TestMaskerStream(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		writes  []string
		want    string
	}{
		{"no secrets", nil, []string{"plain ", "text\n"}, "plain text\n"},
		{"whole secret", []string{"secret"}, []string{"a secret here\n"}, "a ******** here\n"},
		{"split across two writes", []string{"secret"}, []string{"sec", "ret\n"}, "********\n"},
		{"split in every byte", []string{"hunter2"}, strings.Split("pw=hunter2!\n", ""), "pw=********!\n"},
		{"prefix that is not a secret", []string{"secret"}, []string{"se", "cure sec", "tor\n"}, "secure sector\n"},
		{"secret at the very end", []string{"secret"}, []string{"x sec", "ret"}, "x ********"},
		{"multi-line secret", []string{"multi\nline-secret"}, []string{"multi\n", "line-secret\n"}, "********\n"},
		{"each long line of a multi-line secret", []string{"first-line\nsecond-line"}, []string{"see second-line\n"}, "see ********\n"},
		{"trimmed secret", []string{"  tok-123\n"}, []string{"token tok-123\n"}, "token ********\n"},
		{"several occurrences", []string{"ab12"}, []string{"ab12ab", "12 ab1", "2\n"}, "**************** ********\n"},
		{"longest of overlapping secrets", []string{"cd", "abcdef"}, []string{"ab", "cd", "ef"}, "********"},
		{"shorter secret when the longer does not complete", []string{"cd", "abcdef"}, []string{"ab", "cd", "eX"}, "ab********eX"},
		{"two secrets", []string{"alpha-key", "beta-key"}, []string{"alpha-", "key beta", "-key\n"}, "******** ********\n"},
		{"binary around a secret", []string{"s3cr3t"}, []string{"\x00\xffs3c", "r3t\xfe"}, "\x00\xff********\xfe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := logs.NewMasker(tt.secrets)
			var got strings.Builder
			for _, w := range tt.writes {
				got.Write(m.Write([]byte(w)))
			}
			got.Write(m.Flush())
			if got.String() != tt.want {
				t.Fatalf("masked %q, want %q", got.String(), tt.want)
			}
		})
	}
}

func TestMaskString(t *testing.T) {
	got := logs.MaskString("git fetch https://bot:tok-1@host failed: tok-1", []string{"tok-1", ""})
	if got != "git fetch https://bot:********@host failed: ********" {
		t.Fatalf("masked %q", got)
	}
	if got := logs.MaskString("nothing", nil); got != "nothing" {
		t.Fatalf("masked %q", got)
	}
}

func TestMaskerHoldsBackLittle(t *testing.T) {
	m := logs.NewMasker([]string{"secret"})
	out := m.Write([]byte("line one\nline two se"))
	if string(out) != "line one\nline two " {
		t.Fatalf("released %q; only the possible start of a secret may be held", out)
	}
}
