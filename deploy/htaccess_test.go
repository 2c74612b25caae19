package deploy

import (
	"os"
	"strings"
	"testing"
)

// The README shows exactly the block install writes by default (and every
// fcgishim block it shows is that block), so a reader copying it by hand
// gets the same deny rules.
func TestReadmeShowsInstallBlock(t *testing.T) {
	want, err := Render("htaccess-fcgid", Params{})
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	rest := string(readme)
	for {
		i := strings.Index(rest, BlockBegin+"\n")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], BlockEnd+"\n")
		if j < 0 {
			t.Fatalf("README: %q without %q", BlockBegin, BlockEnd)
		}
		got := rest[i : i+j+len(BlockEnd)+1]
		if got != want {
			t.Errorf("README block %d differs from what install writes:\n--- README\n%s--- install\n%s", blocks+1, got, want)
		}
		blocks++
		rest = rest[i+j:]
	}
	if blocks == 0 {
		t.Fatalf("README shows no %q block; install writes:\n%s", BlockBegin, want)
	}
}
