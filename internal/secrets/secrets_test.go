package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cycloneci/cyclone/internal/secrets"
)

func box(t *testing.T, seed byte) *secrets.Box {
	t.Helper()
	b, err := secrets.New(bytes.Repeat([]byte{seed}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	b := box(t, 1)
	sealed, err := b.Seal("token", "projects/1/scm.token")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("token")) {
		t.Fatal("sealed value holds the plaintext")
	}
	again, _ := b.Seal("token", "projects/1/scm.token")
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of the same value are equal: the nonce is not random")
	}
	if got, err := b.Open(sealed, "projects/1/scm.token"); err != nil || got != "token" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	for name, open := range map[string]func() (string, error){
		"other document": func() (string, error) { return b.Open(sealed, "projects/2/scm.token") },
		"other field":    func() (string, error) { return b.Open(sealed, "projects/1/scm.password") },
		"other key":      func() (string, error) { return box(t, 2).Open(sealed, "projects/1/scm.token") },
		"tampered": func() (string, error) {
			s := bytes.Clone(sealed)
			s[len(s)-1] ^= 1
			return b.Open(s, "projects/1/scm.token")
		},
		"truncated": func() (string, error) { return b.Open(sealed[:5], "projects/1/scm.token") },
	} {
		if got, err := open(); !errors.Is(err, secrets.ErrOpen) || got != "" {
			t.Errorf("%s: Open = %q, %v; want ErrOpen and nothing", name, got, err)
		}
	}
}

func TestParseKey(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	for _, s := range []string{hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key), base64.RawURLEncoding.EncodeToString(key) + "\n"} {
		if got, err := secrets.ParseKey(s); err != nil || !bytes.Equal(got, key) {
			t.Errorf("ParseKey(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "short", hex.EncodeToString(key[:16])} {
		if _, err := secrets.ParseKey(s); err == nil {
			t.Errorf("ParseKey(%q) accepted", s)
		}
	}
}

func TestKeyFileIsCreatedOnceAndPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir", "secret.key")
	first, err := secrets.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	second, err := secrets.LoadOrCreateKeyFile(path)
	if err != nil || !bytes.Equal(first, second) {
		t.Fatalf("key changed between loads: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", info.Mode(), err)
	}
}
