package docker

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/cycloneci/cyclone/internal/executor"
)

var _ executor.ImageBuilder = (*Executor)(nil)

// extraDockerfile is the name an inline Dockerfile, or one outside the context
// directory, takes in the build context (as the docker CLI does).
const extraDockerfile = ".cyclone.Dockerfile"

// workspaceOf is the record's workspace as Setup made it: derived from the record's
// ID rather than taken from env, so a build reads nothing outside a workspace.
func (e *Executor) workspaceOf(env executor.Environment) (string, error) {
	dir, err := e.recordDir(env.Record.ID)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "workspace"), nil
}

// localPath checks that a user-given path stays inside the workspace and returns it
// cleaned, with slashes ("." for the workspace itself).
func localPath(field, p string) (string, error) {
	if p == "" {
		return ".", nil
	}
	c := path.Clean(filepath.ToSlash(p))
	if c == "." {
		return c, nil
	}
	if !filepath.IsLocal(filepath.FromSlash(c)) {
		return "", executor.Failed("%s %q is not inside the workspace", field, p)
	}
	return c, nil
}

// BuildImage builds spec.Tag with the engine's classic builder from a tar of the
// context directory, streaming the build's output to out.
func (e *Executor) BuildImage(ctx context.Context, env executor.Environment, spec executor.BuildSpec, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	if spec.Tag == "" {
		return errors.New("docker executor: build: no tag")
	}
	ws, err := e.workspaceOf(env)
	if err != nil {
		return err
	}
	ctxDir, err := localPath("contextDir", spec.ContextDir)
	if err != nil {
		return err
	}
	wsRoot, err := os.OpenRoot(ws)
	if err != nil {
		return fmt.Errorf("docker executor: open workspace: %w", err)
	}
	defer wsRoot.Close()
	ctxRoot, err := wsRoot.OpenRoot(filepath.FromSlash(ctxDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || isNotDir(err) {
			return executor.Failed("contextDir %q is not a directory of the workspace", spec.ContextDir)
		}
		return executor.Failed("contextDir %q: %v", spec.ContextDir, err)
	}
	defer ctxRoot.Close()

	// Where the Dockerfile comes from: a file of the context, or content added to it.
	dockerfileName, extra, err := dockerfileOf(wsRoot, ctxDir, spec)
	if err != nil {
		return err
	}

	pr, pw := io.Pipe()
	wrote := make(chan error, 1)
	go func() {
		err := writeContext(pw, ctxRoot, extra)
		wrote <- err
		pw.CloseWithError(err)
	}()
	// contextErr ends the upload and tells whether reading the context failed.
	contextErr := func() error {
		pr.Close()
		if err := <-wrote; err != nil {
			if _, ok := executor.IsFailed(err); ok {
				return err
			}
		}
		return nil
	}
	defer pr.Close()

	fmt.Fprintf(out, "Building image %s\n", spec.Tag)
	resp, err := e.cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        []string{spec.Tag},
		Dockerfile:  dockerfileName,
		Labels:      spec.Labels,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1, // the classic builder needs no session
	})
	if err != nil {
		if cerr := contextErr(); cerr != nil {
			return cerr
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("docker executor: build %s cancelled: %w", spec.Tag, ctx.Err())
		case cerrdefs.IsInvalidArgument(err):
			return executor.Failed("build of %s refused: %v", spec.Tag, err)
		}
		return fmt.Errorf("docker executor: build %s: %w", spec.Tag, err)
	}
	defer resp.Body.Close()
	if err := copyMessages(resp.Body, out); err != nil {
		if cerr := contextErr(); cerr != nil {
			return cerr
		}
		if fe, ok := executor.IsFailed(err); ok {
			return executor.Failed("build of %s failed: %s", spec.Tag, fe.Message)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("docker executor: build %s cancelled: %w", spec.Tag, ctx.Err())
		}
		return fmt.Errorf("docker executor: build %s: %w", spec.Tag, err)
	}
	if _, err := e.cli.ImageInspect(ctx, spec.Tag); err != nil {
		return fmt.Errorf("docker executor: image %s missing after its build: %w", spec.Tag, err)
	}
	return nil
}

func isNotDir(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "not a directory"
}

// dockerfileOf returns the Dockerfile's name in the build context and, when it is not
// a file of the context, its content to add under that name.
func dockerfileOf(ws *os.Root, ctxDir string, spec executor.BuildSpec) (name string, extra []byte, err error) {
	if spec.Dockerfile != "" {
		return extraDockerfile, []byte(spec.Dockerfile), nil
	}
	p := spec.DockerfilePath
	if p == "" {
		p = path.Join(ctxDir, "Dockerfile")
	}
	p, err = localPath("dockerfilePath", p)
	if err != nil {
		return "", nil, err
	}
	data, err := ws.ReadFile(filepath.FromSlash(p))
	if err != nil {
		return "", nil, executor.Failed("the Dockerfile %s is not in the workspace (%v)", p, unwrapPathErr(err))
	}
	if rel, err := filepath.Rel(filepath.FromSlash(ctxDir), filepath.FromSlash(p)); err == nil && filepath.IsLocal(rel) {
		return filepath.ToSlash(rel), nil, nil
	}
	return extraDockerfile, data, nil
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// writeContext writes the tar of the context directory (without following symbolic
// links, which stay links), then extra as extraDockerfile when given.
func writeContext(w io.Writer, root *os.Root, extra []byte) error {
	tw := tar.NewWriter(w)
	fsys := root.FS()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." || (extra != nil && p == extraDockerfile) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = fs.ReadLink(fsys, p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil // sockets, devices, pipes: not build material
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = p
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // read only
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		if errors.Is(err, io.ErrClosedPipe) {
			return err // the engine stopped reading: its answer says why
		}
		return executor.Failed("read the build context: %w", err)
	}
	if extra != nil {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: extraDockerfile, Mode: 0o644, Size: int64(len(extra)), ModTime: time.Now(), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(extra); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyMessages decodes the engine's JSON message stream (of a build or a push),
// writing its text to out. An error message in the stream is a *FailedError: the
// engine got to work and the job itself failed.
func copyMessages(r io.Reader, out io.Writer) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if m.Error != nil {
			fmt.Fprintf(out, "ERROR: %s\n", m.Error.Message)
			return executor.Failed("%s", m.Error.Message)
		}
		switch {
		case m.Stream != "":
			_, _ = io.WriteString(out, m.Stream)
		case m.Status != "" && m.Progress == nil:
			// Push progress bars would flood the log; their final status lines stay.
			if m.ID != "" {
				fmt.Fprintf(out, "%s: %s\n", m.ID, m.Status)
			} else {
				fmt.Fprintln(out, m.Status)
			}
		}
	}
}
