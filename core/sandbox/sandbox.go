// Package sandbox runs a job's command isolated from the worker that runs
// it: under bubblewrap (bwrap), in new user, mount, pid, ipc, uts and
// network namespaces, as an unprivileged user, seeing only the system's
// read-only directories and its own work tree. The worker's files, its
// environment, its credentials and the cloud metadata server stay out of
// reach; the only ways out are the services the worker chooses to offer
// on the job's loopback (Job.Listen): the artifact cache and, unless the
// job type says `network: none`, a filtering egress proxy (EgressProxy).
//
// ModeNone runs commands directly, for machines without bwrap (macOS);
// it isolates nothing beyond the environment and says so.
//
// A program using this package must call Init first thing in main (and in
// TestMain): the sandbox re-executes the program to start bwrap with the
// right signal dispositions and to run the job's init inside it.
package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Mode says how jobs are isolated.
type Mode string

const (
	// ModeAuto is bwrap where it works, else none (with a warning).
	ModeAuto Mode = "auto"
	// ModeBwrap requires bubblewrap and user namespaces.
	ModeBwrap Mode = "bwrap"
	// ModeNone runs jobs as plain processes of the worker's user.
	ModeNone Mode = "none"
)

// ParseMode parses a --sandbox value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeBwrap, ModeNone:
		return m, nil
	}
	return "", fmt.Errorf("sandbox: want auto, bwrap or none, got %q", s)
}

// Network modes of a job (the job type's `network` key).
const (
	NetworkProxy = ""     // egress only through the worker's filtering proxy
	NetworkNone  = "none" // no network at all
)

// Options configure a Sandbox.
type Options struct {
	Mode Mode
	// Root is a directory of the worker's (its work directory) holding
	// the sandbox's own files: a copy of the init program and the
	// sockets of the job's services. Every path a job gets (work trees,
	// caches shared read-only) must be under a directory the sandbox user
	// can traverse: New checks Root.
	Root string
	// UID and GID are the host user and group jobs run as. Negative: the
	// worker's own, except that a worker running as root uses 65534
	// (nobody) — a job never runs as root.
	UID, GID int
	// ReadOnly lists more host paths jobs see read-only (toolchains
	// outside /usr and /opt). Missing paths are skipped.
	ReadOnly []string
	// Bwrap is the bwrap program (default: found in PATH).
	Bwrap string
}

// Sandbox starts jobs' commands. It is safe for concurrent use.
type Sandbox struct {
	o    Options
	mode Mode   // ModeBwrap or ModeNone
	init string // the init program, under Root
	uid  int    // -1: no switch
	gid  int
	why  string // ModeAuto that fell back to none: the reason
}

// systemDirs are bound read-only into every sandbox when they exist.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// InitPath is where the init program is inside a sandbox, and SockDir
// where the job's service sockets are.
const (
	InitPath = "/.tollgate/init"
	SockDir  = "/.tollgate/sock"
)

// New returns a Sandbox. ModeBwrap fails when bwrap is missing or cannot
// create namespaces here; ModeAuto then falls back to ModeNone (see Fallback).
func New(o Options) (*Sandbox, error) {
	if o.Mode == "" {
		o.Mode = ModeAuto
	}
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return nil, err
	}
	s := &Sandbox{o: o, mode: ModeNone, uid: -1, gid: -1}
	if o.Mode == ModeNone {
		return s, nil
	}
	err := s.setupBwrap()
	if err == nil {
		return s, nil
	}
	s.mode, s.uid, s.gid = ModeNone, -1, -1
	if o.Mode == ModeBwrap {
		return nil, err
	}
	s.why = err.Error()
	return s, nil
}

// Mode is the mode in effect: ModeBwrap or ModeNone.
func (s *Sandbox) Mode() Mode { return s.mode }

// Fallback is why ModeAuto runs jobs unsandboxed ("" if it does not).
func (s *Sandbox) Fallback() string { return s.why }

// UID is the host user jobs run as (-1: the worker's).
func (s *Sandbox) UID() (uid, gid int) { return s.uid, s.gid }

func (s *Sandbox) setupBwrap() error {
	bw := s.o.Bwrap
	if bw == "" {
		p, err := exec.LookPath("bwrap")
		if err != nil {
			return errors.New("sandbox: bwrap (bubblewrap) is not installed: apt-get install bubblewrap")
		}
		bw = p
	}
	s.o.Bwrap = bw
	s.uid, s.gid = s.o.UID, s.o.GID
	if os.Geteuid() == 0 {
		if s.uid < 0 {
			s.uid = 65534
		}
		if s.gid < 0 {
			s.gid = 65534
		}
	} else if s.uid >= 0 && s.uid != os.Geteuid() {
		return fmt.Errorf("sandbox: only a worker running as root can run jobs as uid %d", s.uid)
	} else {
		s.uid, s.gid = -1, -1
	}
	if s.o.Root == "" {
		return errors.New("sandbox: Options.Root is required")
	}
	root, err := filepath.Abs(s.o.Root)
	if err != nil {
		return err
	}
	s.o.Root = root
	if err := os.MkdirAll(filepath.Join(root, ".sandbox"), 0o711); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	if s.uid >= 0 {
		if err := Reachable(root, s.uid, s.gid); err != nil {
			return err
		}
	}
	if s.init, err = installInit(filepath.Join(root, ".sandbox")); err != nil {
		return err
	}
	// Prove it works here (user namespaces may be disabled).
	probe := filepath.Join(root, ".sandbox", "probe")
	if err := os.MkdirAll(probe, 0o755); err != nil {
		return err
	}
	if err := s.Chown(probe); err != nil {
		return err
	}
	s.mode = ModeBwrap // New resets it on failure
	j, err := s.NewJob(JobSpec{Dir: probe, Network: NetworkNone})
	if err != nil {
		return err
	}
	defer j.Close()
	cmd := j.Command([]string{"/bin/sh", "-c", "exit 0"}, []string{"PATH=/usr/bin:/bin"}, "")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sandbox: bwrap does not work on this machine (user namespaces disabled?): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Reachable checks that uid:gid can traverse every directory from / to
// dir: bwrap binds paths with the sandbox user's rights, so a work
// directory under a private home (/root is 0700) cannot be bound.
func Reachable(dir string, uid, gid int) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok {
			m := fi.Mode().Perm()
			var x bool
			switch {
			case int(st.Uid) == uid:
				x = m&0o100 != 0
			case int(st.Gid) == gid:
				x = m&0o010 != 0
			default:
				x = m&0o001 != 0
			}
			if !x {
				return fmt.Errorf("sandbox: jobs run as uid %d, which cannot reach %s: %s is %v; put the work directory where every user can traverse (e.g. /var/lib/tollgate/work) or chmod o+x %s", uid, dir, d, m, d)
			}
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// installInit copies the running program into dir, where the sandbox user
// can execute it (the program itself may sit in a private directory, as
// test binaries do), unless an identical copy is there already.
func installInit(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	defer src.Close()
	sfi, err := src.Stat()
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, "init")
	if dfi, err := os.Stat(dst); err == nil && dfi.Size() == sfi.Size() && dfi.ModTime().Equal(sfi.ModTime()) {
		return dst, nil
	}
	tmp, err := os.CreateTemp(dir, "init-*")
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return "", fmt.Errorf("sandbox: copy the init program: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", err
	}
	if err := os.Chtimes(tmp.Name(), sfi.ModTime(), sfi.ModTime()); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp.Name(), dst)
}

// JobSpec is one job's isolation.
type JobSpec struct {
	// Dir is the job's own directory, writable, at the same path inside.
	Dir string
	// Network is NetworkProxy or NetworkNone.
	Network string
	// ReadOnly lists host paths the job sees read-only at the same path
	// (e.g. the git object cache its work tree borrows objects from).
	ReadOnly []string
}

// Job is the isolation of one job: its command and the services it reaches.
type Job struct {
	s        *Sandbox
	spec     JobSpec
	sockDir  string         // host directory of the service sockets (bwrap)
	forwards map[int]string // port inside → socket name
	lns      []net.Listener
}

// NewJob prepares a job's isolation; Close it when the job ends.
func (s *Sandbox) NewJob(spec JobSpec) (*Job, error) {
	if spec.Network != NetworkProxy && spec.Network != NetworkNone {
		return nil, fmt.Errorf("sandbox: unknown network mode %q", spec.Network)
	}
	j := &Job{s: s, spec: spec, forwards: map[int]string{}}
	if s.mode == ModeBwrap {
		// Socket paths are limited to 108 bytes: keep them short, in a
		// directory of their own that is bound into the sandbox.
		d, err := os.MkdirTemp(shortTemp(), "tgs")
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
		j.sockDir = d
	}
	return j, nil
}

func shortTemp() string {
	if d := os.TempDir(); len(d) < 40 {
		return d
	}
	return "/tmp"
}

// Listen returns a listener for a service the job reaches at the
// returned address ("127.0.0.1:port"). Under bwrap the job reaches it at
// 127.0.0.1:port of its own network namespace, forwarded to a socket of
// the worker's; without a sandbox it is a loopback port of the worker's
// (port is then only a hint and the returned address tells the real one).
// Call Listen before Command.
func (j *Job) Listen(port int) (net.Listener, string, error) {
	if j.s.mode != ModeBwrap {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, "", err
		}
		j.lns = append(j.lns, ln)
		return ln, ln.Addr().String(), nil
	}
	name := strconv.Itoa(port) + ".sock"
	p := filepath.Join(j.sockDir, name)
	ln, err := net.Listen("unix", p)
	if err != nil {
		return nil, "", fmt.Errorf("sandbox: %w", err)
	}
	// The sandbox user connects to it.
	if err := os.Chmod(p, 0o666); err != nil {
		ln.Close()
		return nil, "", err
	}
	j.lns = append(j.lns, ln)
	j.forwards[port] = name
	return ln, "127.0.0.1:" + strconv.Itoa(port), nil
}

// Command returns the job's command, ready to Start: argv with exactly
// env, in dir (default: the job's Dir). Under bwrap the returned command
// is bwrap's, and the init looks argv[0] up in env's PATH inside; stop it
// with signals to its process group like any job: SIGTERM reaches the
// job's processes (bwrap and the init ignore it) and SIGKILL ends the
// whole pid namespace. Without a sandbox its Path is argv[0] as given: the
// caller resolves it.
func (j *Job) Command(argv, env []string, dir string) *exec.Cmd {
	if dir == "" {
		dir = j.spec.Dir
	}
	if j.s.mode != ModeBwrap {
		return &exec.Cmd{Path: argv[0], Args: argv, Env: env, Dir: dir}
	}
	args := []string{launchArg, strconv.Itoa(j.s.uid), strconv.Itoa(j.s.gid), j.s.o.Bwrap,
		"--unshare-all", "--die-with-parent", "--hostname", "tollgate-job",
		"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run", "--tmpfs", "/var/tmp"}
	for _, d := range append(append([]string(nil), systemDirs...), j.s.o.ReadOnly...) {
		args = append(args, "--ro-bind-try", d, d)
	}
	for _, d := range j.spec.ReadOnly {
		args = append(args, "--ro-bind", d, d)
	}
	args = append(args, "--bind", j.spec.Dir, j.spec.Dir,
		"--ro-bind", j.s.init, InitPath,
		"--ro-bind", j.sockDir, SockDir,
		"--chdir", dir, "--clearenv")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		args = append(args, "--setenv", k, v)
	}
	args = append(args, "--", InitPath, initArg)
	for port, name := range j.forwards {
		args = append(args, "--forward", strconv.Itoa(port)+"="+SockDir+"/"+name)
	}
	args = append(args, "--")
	args = append(args, argv...)
	// The launcher runs as the worker (it must reach bwrap and drop to the
	// sandbox user itself); its environment is not the job's.
	return &exec.Cmd{Path: j.s.init, Args: append([]string{j.s.init}, args...),
		Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}, Dir: "/"}
}

// Close stops the job's services and removes their sockets.
func (j *Job) Close() {
	for _, ln := range j.lns {
		ln.Close()
	}
	if j.sockDir != "" {
		os.RemoveAll(j.sockDir)
	}
}

// Chown gives the sandbox user a tree the worker made for the job (a
// no-op when jobs run as the worker's user).
func (s *Sandbox) Chown(dir string) error {
	if s.uid < 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, s.uid, s.gid)
	})
}
