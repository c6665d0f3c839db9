// Package secrets encrypts credentials at rest (SCM tokens and passwords, registry
// passwords, ...) with AES-256-GCM.
//
// Every sealed value is bound to where it is stored through the associated data (the
// document ID and field), so a ciphertext copied into another document or field does
// not open. A wrong key is an error; there is never a plaintext fallback.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the length of a key in bytes (AES-256).
const KeySize = 32

// version prefixes every sealed value so the format can change later.
const version byte = 1

// ErrOpen is returned when a sealed value cannot be decrypted: wrong key, or the value
// was tampered with or moved.
var ErrOpen = errors.New("secrets: cannot decrypt value (wrong secret key or tampered data)")

// Box seals and opens values with one key.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secrets: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// ParseKey decodes a key given as 64 hex digits or as standard/URL base64.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == KeySize {
			return b, nil
		}
	}
	return nil, fmt.Errorf("secrets: the secret key must be %d bytes as 64 hex digits or base64", KeySize)
}

// LoadOrCreateKeyFile reads the key kept in path, creating a random one (mode 0600)
// when the file does not exist. Dev mode keeps its key this way in the data dir.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		return ParseKey(string(data))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// Seal encrypts plaintext bound to the associated data ad (e.g. "projects/<id>/scm.token").
func (b *Box) Seal(plaintext, ad string) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{version}, nonce...)
	return b.aead.Seal(out, nonce, []byte(plaintext), []byte(ad)), nil
}

// Open decrypts a value made by Seal with the same associated data.
func (b *Box) Open(sealed []byte, ad string) (string, error) {
	n := b.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != version {
		return "", ErrOpen
	}
	plain, err := b.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(ad))
	if err != nil {
		return "", ErrOpen
	}
	return string(plain), nil
}
