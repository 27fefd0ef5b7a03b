package sshx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/pkg/sftp"
)

// cleanupGrace is how long a cancelled upload may still use the connection
// to remove its temporary file.
const cleanupGrace = 5 * time.Second

// Upload writes src to remotePath atomically: it goes to a temporary name in
// the same directory, is chmodded to mode, synced where the server supports
// it, closed, then renamed over remotePath (posix-rename@openssh.com). On any
// failure, including ctx ending or CommandTimeout passing, the temporary file
// is removed (best effort), so remotePath is either the old file or the
// complete new one, never a partial one. A "~/" prefix means the remote home;
// missing parent directories are created.
func (c *Client) Upload(ctx context.Context, src io.Reader, remotePath string, mode os.FileMode) error {
	dst := ExpandHomePath(remotePath)
	if dst == "" || dst == "." || path.Base(dst) == "/" {
		return fmt.Errorf("ssh %s: upload: invalid remote path %q", c.label, remotePath)
	}
	tctx, cancel := context.WithTimeout(ctx, c.cfg.CommandTimeout)
	defer cancel()
	fail := func(step string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("ssh %s: upload %s: %s: %w", c.label, remotePath, step, ctx.Err())
		}
		if tctx.Err() != nil {
			return &TimeoutError{Op: "upload of " + remotePath, Label: c.label, After: c.cfg.CommandTimeout}
		}
		return fmt.Errorf("ssh %s: upload %s: %s: %w", c.label, remotePath, step, err)
	}

	sc, err := c.sftpClient(tctx)
	if err != nil {
		return fail("start sftp", err)
	}
	// Hard stop: if the server stops answering after ctx ended, closing the
	// SSH connection (after a grace period for cleanup) unblocks every call
	// below. Closing only the SFTP session is not enough: that writes to the
	// connection too, and on a stalled transport (a dead network with the
	// send buffer full of file data) the write blocks for as long as TCP
	// keeps retrying, and so would the upload.
	finished := make(chan struct{})
	defer func() {
		close(finished)
		sc.Close()
	}()
	go func() {
		select {
		case <-finished:
			return
		case <-tctx.Done():
		}
		select {
		case <-finished:
		case <-time.After(cleanupGrace):
			c.Close()
		}
	}()

	dir := path.Dir(dst)
	if err := sc.MkdirAll(dir); err != nil {
		return fail("create directory "+dir, err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(dir, "."+path.Base(dst)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fail("create "+tmp, err)
	}
	committed, copying := false, true
	defer func() {
		if committed {
			return
		}
		// While the copy goroutine may still sit in src.Read it holds the
		// file's lock, so the handle is left to sc.Close; unlinking by name
		// needs no handle.
		if !copying {
			f.Close()
		}
		_ = sc.Remove(tmp) // best effort; the hard stop bounds it
	}()

	// The mode is set before any data is written, so a secret (0600) is
	// never readable by others, not even while it is being copied.
	if err := f.Chmod(mode.Perm()); err != nil {
		copying = false
		return fail("chmod "+tmp, err)
	}
	// The copy runs apart so that a source blocked in Read cannot hold the
	// upload past ctx: on cancellation we return at once, remove the
	// temporary file and close the SFTP session, which fails the copy's
	// next write.
	copied := make(chan error, 1)
	go func() {
		_, err := f.ReadFrom(&ctxReader{ctx: tctx, r: src})
		copied <- err
	}()
	select {
	case err = <-copied:
		copying = false
	case <-tctx.Done():
		err = tctx.Err()
	}
	if err != nil {
		return fail("write "+tmp, err)
	}
	if err := f.Sync(); err != nil && !isUnsupported(err) {
		return fail("sync "+tmp, err)
	}
	if err := f.Close(); err != nil {
		return fail("close "+tmp, err)
	}
	if tctx.Err() != nil {
		return fail("rename", tctx.Err())
	}
	if err := sc.PosixRename(tmp, dst); err != nil {
		return fail("rename into place", err)
	}
	committed = true
	return nil
}

func isUnsupported(err error) bool {
	var se *sftp.StatusError
	return errors.Is(err, sftp.ErrSSHFxOpUnsupported) || (errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxOpUnsupported)
}

// sftpClient starts the sftp subsystem, giving up when ctx ends.
func (c *Client) sftpClient(ctx context.Context) (*sftp.Client, error) {
	type result struct {
		sc  *sftp.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		sc, err := sftp.NewClient(c.conn)
		ch <- result{sc, err}
	}()
	select {
	case r := <-ch:
		return r.sc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.sc != nil {
				r.sc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// ctxReader stops a copy between reads once ctx has ended.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
