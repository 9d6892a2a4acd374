package cache

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/tollgate-ci/tollgate/core/errs"
)

// Exit codes of RunCommand.
const (
	ExitOK       = 0
	ExitError    = 1
	ExitUsage    = 2
	ExitNotFound = 3 // get or resolve-ref found nothing: a cache miss, for scripts
)

const commandUsage = `usage: tollgate cache COMMAND [ARGS]

Talks to the cache the worker gives the job through $TOLLGATE_CACHE_URL.

  digest FILE...                     print the digest (hash/size) of each file
  put [-ref NAME] FILE               upload FILE unless present, print its digest;
                                     with -ref, point the ref NAME at it
  get [-o FILE] DIGEST               download an object to FILE (default: stdout)
  get -ref NAME [-o FILE]            download the object a ref points at
  find-missing [DIGEST...]           print the digests the cache does not have
                                     (without arguments: read them from stdin)
  set-ref NAME DIGEST                point the ref NAME at an object in the cache
  resolve-ref NAME                   print the digest NAME points at

Exit status: 0 done, 1 error, 2 usage, 3 not in the cache (get, resolve-ref).
`

// RunCommand runs `tollgate cache ARGS...` (args without "cache") and
// returns the exit status. getenv is os.Getenv outside tests; find-missing
// without arguments reads digests from stdin.
func RunCommand(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, commandUsage)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("tollgate cache "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, commandUsage) }
	ref := ""
	out := ""
	switch cmd {
	case "put":
		fs.StringVar(&ref, "ref", "", "point this ref at the object")
	case "get":
		fs.StringVar(&ref, "ref", "", "download the object this ref points at")
		fs.StringVar(&out, "o", "", "write to this file instead of stdout")
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	pos := fs.Args()
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "tollgate cache %s: %s\n", cmd, msg)
		return ExitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "tollgate cache %s: %v\n", cmd, err)
		if errs.Is(err, errs.NotFound) {
			return ExitNotFound
		}
		return ExitError
	}

	if cmd == "digest" {
		if len(pos) == 0 {
			return usage("name at least one file")
		}
		for _, p := range pos {
			d, err := digestFile(p)
			if err != nil {
				return fail(err)
			}
			fmt.Fprintln(stdout, d)
		}
		return ExitOK
	}

	switch cmd {
	case "put":
		if len(pos) != 1 {
			return usage("name one file")
		}
		if ref != "" {
			if err := ValidRefName(ref); err != nil {
				return fail(err)
			}
		}
	case "get":
		if ref == "" && len(pos) != 1 || ref != "" && len(pos) != 0 {
			return usage("name one digest, or a ref with -ref")
		}
	case "find-missing":
	case "set-ref":
		if len(pos) != 2 {
			return usage("name a ref and a digest")
		}
	case "resolve-ref":
		if len(pos) != 1 {
			return usage("name one ref")
		}
	default:
		fmt.Fprintf(stderr, "tollgate cache: unknown command %q\n\n%s", cmd, commandUsage)
		return ExitUsage
	}

	c, err := HTTPClientFromEnv(getenv)
	if err != nil {
		return fail(err)
	}
	switch cmd {
	case "put":
		d, err := putFile(ctx, c, pos[0])
		if err != nil {
			return fail(err)
		}
		if ref != "" {
			if err := c.SetRef(ctx, ref, d); err != nil {
				return fail(err)
			}
		}
		fmt.Fprintln(stdout, d)
	case "get":
		var d Digest
		if ref != "" {
			d, err = c.ResolveRef(ctx, ref)
		} else {
			d, err = ParseDigest(pos[0])
		}
		if err != nil {
			return fail(err)
		}
		if err := getTo(ctx, c, d, out, stdout); err != nil {
			return fail(err)
		}
	case "find-missing":
		if len(pos) == 0 {
			b, err := io.ReadAll(stdin)
			if err != nil {
				return fail(err)
			}
			pos = strings.Fields(string(b))
		}
		ds, err := parseDigests(pos)
		if err != nil {
			return fail(err)
		}
		missing, err := c.FindMissing(ctx, ds)
		if err != nil {
			return fail(err)
		}
		for _, d := range missing {
			fmt.Fprintln(stdout, d)
		}
	case "set-ref":
		d, err := ParseDigest(pos[1])
		if err != nil {
			return fail(err)
		}
		if err := c.SetRef(ctx, pos[0], d); err != nil {
			return fail(err)
		}
	case "resolve-ref":
		d, err := c.ResolveRef(ctx, pos[0])
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(stdout, d)
	}
	return ExitOK
}

func parseDigests(ss []string) ([]Digest, error) {
	ds := make([]Digest, len(ss))
	for i, s := range ss {
		d, err := ParseDigest(s)
		if err != nil {
			return nil, err
		}
		ds[i] = d
	}
	return ds, nil
}

func digestFile(p string) (Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	return DigestReader(f)
}

// putFile uploads the file at p unless the cache has it, and returns its digest.
func putFile(ctx context.Context, a Access, p string) (Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	d, err := DigestReader(f)
	if err != nil {
		return Digest{}, err
	}
	missing, err := a.FindMissing(ctx, []Digest{d})
	if err != nil {
		return Digest{}, err
	}
	if len(missing) == 0 {
		return d, nil // FindMissing counted as a use
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Digest{}, err
	}
	return d, a.Put(ctx, d, f)
}

// getTo downloads d to the file out (written whole or not at all), or to
// stdout when out is empty.
func getTo(ctx context.Context, a Access, d Digest, out string, stdout io.Writer) error {
	rc, err := a.Get(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	if out == "" {
		_, err := io.Copy(stdout, rc)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
