package sandbox

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// The program re-executes itself in two roles, named by its first argument.
const (
	// launchArg: outside the sandbox, as the worker. Ignores the stop
	// signals (bwrap inherits that, so a SIGTERM to the job's process
	// group reaches the job's processes without killing bwrap, whose
	// death would SIGKILL them at once), drops to the sandbox user and
	// execs bwrap.
	launchArg = "__tollgate_sandbox_launch"
	// initArg: inside the sandbox, the job's init. Forwards the job's
	// loopback ports to the worker's service sockets, runs the command
	// and exits with its status.
	initArg = "__tollgate_sandbox_init"
)

// stopSignals are ignored by bwrap and restored for the job.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}

// Init runs the sandbox's roles when the program was started in one of
// them, and returns otherwise. Call it first thing in main and TestMain.
func Init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case launchArg:
		os.Exit(launch(os.Args[2:]))
	case initArg:
		os.Exit(runInit(os.Args[2:]))
	}
}

// launch: UID GID BWRAP ARGS...
func launch(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "tollgate sandbox: launch: missing arguments")
		return 125
	}
	uid, err1 := strconv.Atoi(args[0])
	gid, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "tollgate sandbox: launch: bad uid or gid")
		return 125
	}
	signal.Ignore(stopSignals...)
	if uid >= 0 {
		// Groups first: after setuid the process may no longer change them.
		if err := syscall.Setgroups(nil); err != nil {
			fmt.Fprintf(os.Stderr, "tollgate sandbox: setgroups: %v\n", err)
			return 125
		}
		if err := syscall.Setgid(gid); err != nil {
			fmt.Fprintf(os.Stderr, "tollgate sandbox: setgid %d: %v\n", gid, err)
			return 125
		}
		if err := syscall.Setuid(uid); err != nil {
			fmt.Fprintf(os.Stderr, "tollgate sandbox: setuid %d: %v\n", uid, err)
			return 125
		}
	}
	bwrap := args[2]
	err := syscall.Exec(bwrap, append([]string{bwrap}, args[3:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "tollgate sandbox: exec %s: %v\n", bwrap, err)
	return 125
}

// runInit: [--forward PORT=SOCKET]... -- ARGV...
func runInit(args []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "tollgate sandbox: "+format+"\n", a...)
		return 125
	}
	for len(args) > 0 && args[0] != "--" {
		if args[0] != "--forward" || len(args) < 2 {
			return fail("init: bad argument %q", args[0])
		}
		port, sock, ok := strings.Cut(args[1], "=")
		if !ok {
			return fail("init: bad --forward %q", args[1])
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			return fail("init: %v", err)
		}
		go forward(ln, sock)
		args = args[2:]
	}
	if len(args) < 2 {
		return fail("init: no command")
	}
	argv := args[1:]
	// Handled (not ignored) signals are reset to their defaults by exec:
	// the job gets SIGTERM like any process. The init itself outlives it,
	// so the job's output and status are still collected.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, stopSignals...)
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "tollgate sandbox: %v\n", err)
		if errors.Is(err, os.ErrPermission) {
			return 126
		}
		return 127
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: os.Environ(), Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "tollgate sandbox: %v\n", err)
		if errors.Is(err, os.ErrPermission) {
			return 126
		}
		return 127
	}
	go func() {
		for range sigs {
			// The signal went to the whole process group, the job's
			// processes included: nothing to forward.
		}
	}()
	_ = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// forward relays each connection to ln to the unix socket sock.
func forward(ln net.Listener, sock string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("unix", sock)
			if err != nil {
				return
			}
			defer u.Close()
			relay(c, u)
		}()
	}
}

// relay copies both ways until both directions are done, passing on
// half-closes so request/response protocols end cleanly.
func relay(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
