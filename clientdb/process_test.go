//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package clientdb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestHelperReaderProcess is not a test: run as a child process with
// helperEnv set, it is a reader in another process. It looks up each client
// ID read from stdin and answers "ok <id>", "deleted <id>", "missing <id>"
// or "error <id>: <cause>", one line each.
func TestHelperReaderProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for the cross-process tests")
	}
	r, err := OpenReader(path)
	if err != nil {
		fmt.Printf("error opening: %v\n", err)
		os.Exit(2)
	}
	defer r.Close()

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		id := in.Text()
		_, err := r.Lookup(id)
		switch {
		case err == nil:
			fmt.Printf("ok %s\n", id)
		case errors.Is(err, ErrDeleted):
			fmt.Printf("deleted %s\n", id)
		case errors.Is(err, ErrNotFound):
			fmt.Printf("missing %s\n", id)
		default:
			fmt.Printf("error %s: %v\n", id, err)
		}
	}
}

// readerProcess is a running TestHelperReaderProcess.
type readerProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr strings.Builder

	mu    sync.Mutex
	lines []string
	eof   chan struct{}
}

// startReaderProcess starts the test binary as a reader of the database at
// path, optionally as another user.
func startReaderProcess(t *testing.T, bin, path string,
	cred *syscall.Credential) *readerProcess {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	p := &readerProcess{eof: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, bin,
		"-test.run=^TestHelperReaderProcess$")
	p.cmd.Env = append(os.Environ(), helperEnv+"="+path)
	p.cmd.Stderr = &p.stderr
	if cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	err = p.cmd.Start()
	if cred != nil && (errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.EINVAL)) {
		// A container may forbid switching to, or not map, the user.
		t.Skipf("cannot start a process as uid %d: %v", cred.Uid, err)
	}
	if err != nil {
		t.Fatalf("starting reader process: %v", err)
	}

	go func() {
		defer close(p.eof)
		out := bufio.NewScanner(stdout)
		for out.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, out.Text())
			p.mu.Unlock()
		}
	}()
	return p
}

// answered returns how many lines the process has written so far.
func (p *readerProcess) answered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// finish closes stdin, waits for the process to exit and returns all it
// wrote. The testing framework's own "PASS" follows the answers.
func (p *readerProcess) finish(t *testing.T) []string {
	t.Helper()
	p.stdin.Close()
	<-p.eof
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("reader process: %v\nstdout %q\nstderr:\n%s",
			err, p.lines, p.stderr.String())
	}
	return p.lines
}

// TestCrossProcessReaderSeesAcknowledgedWrites checks the promise the
// handler's 201 rests on: once Update returns, a reader in another process
// finds the client, even while further writes commit.
func TestCrossProcessReaderSeesAcknowledgedWrites(t *testing.T) {
	const writers, perWriter = 8, 25
	w, path := newWriter(t)
	p := startReaderProcess(t, os.Args[0], path, nil)

	// sent is the order in which IDs went to the reader, which answers
	// in the same order.
	var mu sync.Mutex
	var sent []string
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range perWriter {
				id := fmt.Sprintf("w%d-%03d", i, j)
				err := w.Update(context.Background(), func(tx Tx) error {
					return tx.Create(testClient(id))
				})
				if err != nil {
					t.Errorf("Update %s: %v", id, err)
					return
				}
				mu.Lock()
				sent = append(sent, id)
				_, err = fmt.Fprintln(p.stdin, id)
				mu.Unlock()
				if err != nil {
					t.Errorf("sending %s to the reader: %v", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d answers came while writes went on",
		p.answered(), writers*perWriter)
	lines := p.finish(t)

	if len(sent) != writers*perWriter {
		t.Fatalf("%d writes acknowledged, want %d",
			len(sent), writers*perWriter)
	}
	if len(lines) < len(sent) {
		t.Fatalf("%d answers for %d IDs: %q", len(lines), len(sent), lines)
	}
	for i, id := range sent {
		if lines[i] != "ok "+id {
			t.Errorf("answer %d = %q, want %q", i, lines[i], "ok "+id)
		}
	}
}

// TestReaderAsOtherUser runs the reader as a user that may not write any of
// the store's files, which is how a separate service reads Caddy's store.
// Permissions bind only non-root users, so the test needs root to switch.
func TestReaderAsOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user; " +
			"TestReaderReadOnlyFiles covers this user")
	}
	const nobody = 65534

	// The other user needs to reach the binary and the store; temporary
	// directories are private to their owner.
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "clientdb.test")
	copyFile(t, os.Args[0], bin, 0o755)

	path := filepath.Join(dir, "clients.db")
	w, err := NewWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	store(t, w, testClient("a"))
	for _, name := range []string{path, path + ".gate", path + ".lock"} {
		if err := os.Chmod(name, 0o444); err != nil {
			t.Fatal(err)
		}
	}

	p := startReaderProcess(t, bin, path,
		&syscall.Credential{Uid: nobody, Gid: nobody})
	fmt.Fprintln(p.stdin, "a")
	fmt.Fprintln(p.stdin, "b")
	lines := p.finish(t)

	want := []string{"ok a", "missing b"}
	if len(lines) < len(want) ||
		lines[0] != want[0] || lines[1] != want[1] {
		t.Errorf("answers %q, want %q first\nstderr:\n%s",
			lines, want, p.stderr.String())
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// lockTaken reports whether any open file holds a lock on the lock file
// name that conflicts with an exclusive one. It probes without waiting.
func lockTaken(t *testing.T, name string) bool {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true
	}
	if err != nil {
		t.Fatalf("probing %s: %v", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	return false
}

// TestLockGateQueuesReaders checks the point of the gate: once the writer
// waits for readers to leave, new readers wait behind it, so a stream of
// readers cannot starve it.
func TestLockGateQueuesReaders(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"))
	first := openReader(t, path)
	second := openReader(t, path)
	bg := newBackground(t)

	view := bg.holdView(first, func(Tx) error { return nil })
	update := bg.update(w, func(tx Tx) error {
		return tx.Create(testClient("b"))
	})

	// The writer holds the gate for as long as it waits for the lock.
	deadline := time.Now().Add(eventually)
	for !lockTaken(t, path+".gate") {
		if time.Now().After(deadline) {
			t.Fatal("writer never took the gate")
		}
		time.Sleep(time.Millisecond)
	}

	var seen error = errors.New("View function did not run")
	late := bg.view(second, func(tx Tx) error {
		_, seen = tx.Client("b")
		return nil
	})
	notDone(t, late, "View behind a waiting writer")

	view.release()
	finished(t, view.done, "first View")
	finished(t, update, "Update")
	finished(t, late, "second View")
	if seen != nil {
		t.Errorf("second View ran before the waiting writer: %v", seen)
	}
}

// TestReaderConcurrentViews checks that one Reader's Views each hold the
// shared lock: when one View ends, another still running must keep the
// writer out. flock(2) locks belong to an open file, so Views sharing one
// would release the lock under each other.
func TestReaderConcurrentViews(t *testing.T) {
	w, path := newWriter(t)
	store(t, w, testClient("a"))
	r := openReader(t, path)
	bg := newBackground(t)

	first := bg.holdView(r, func(Tx) error { return nil })
	second := bg.holdView(r, func(Tx) error { return nil })
	first.release()
	finished(t, first.done, "first View")

	if !lockTaken(t, path+".lock") {
		t.Error("lock free while a View is still running")
	}
	second.release()
	finished(t, second.done, "second View")
	if lockTaken(t, path+".lock") {
		t.Error("lock still taken after every View ended")
	}
}

// TestLockFilesHeld checks the protocol as other processes see it: the
// data lock file is locked while a reader reads and while the writer
// commits, and nothing stays locked afterwards. bbolt's own lock on the
// database would hide a missing protocol lock from the tests above, but
// not from a reader in another language that relies on the protocol.
func TestLockFilesHeld(t *testing.T) {
	tests := []struct {
		name string
		hold func(*background, *Writer, *Reader) (done <-chan error,
			release func())
	}{
		{
			name: "reader in View",
			hold: func(bg *background, _ *Writer, r *Reader) (
				<-chan error, func()) {
				v := bg.holdView(r, func(Tx) error { return nil })
				return v.done, v.release
			},
		},
		{
			name: "writer in commit",
			hold: func(bg *background, w *Writer, _ *Reader) (
				<-chan error, func()) {
				inside := make(chan struct{})
				enter := sync.OnceFunc(func() { close(inside) })
				wait, release := bg.gate()
				done := bg.update(w, func(tx Tx) error {
					enter()
					wait()
					return tx.Put(testClient("b"))
				})
				select {
				case <-inside:
				case <-time.After(eventually):
					bg.t.Fatal("Update did not start")
				}
				return done, release
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, path := newWriter(t)
			store(t, w, testClient("a"))
			r := openReader(t, path)
			bg := newBackground(t)

			done, release := tc.hold(bg, w, r)
			if !lockTaken(t, path+".lock") {
				t.Errorf("%s.lock free during the operation", path)
			}
			if lockTaken(t, path+".gate") {
				t.Errorf("%s.gate held during the operation", path)
			}
			release()
			finished(t, done, tc.name)
			for _, name := range []string{path + ".lock", path + ".gate"} {
				if lockTaken(t, name) {
					t.Errorf("%s still locked afterwards", name)
				}
			}
		})
	}
}
