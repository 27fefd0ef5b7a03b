package dockerx

import (
	"archive/tar"
	"context"
	"fmt"
	"io"

	"github.com/moby/moby/client"
)

// ReadFile calls read with the regular file at path in container id (a
// stopped container's too: it goes through the archive API, not an exec),
// its size, and returns read's error.
func ReadFile(ctx context.Context, d client.APIClient, id, path string, read func(r io.Reader, size int64) error) error {
	res, err := d.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		return err
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	hdr, err := tr.Next()
	if err != nil {
		return fmt.Errorf("%s: reading the copied archive: %w", path, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return fmt.Errorf("%s: not a regular file (type %c)", path, hdr.Typeflag)
	}
	return read(tr, hdr.Size)
}
