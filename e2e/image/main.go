// Command image writes a container image as a `docker save` tarball, without a
// daemon: one layer holding the given files (and, with -libs, the shared libraries
// the ELF files among them load), /etc/passwd and /etc/group for a non-root user,
// and a config with the entrypoint and user. `ctr images import` loads it.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	ref := flag.String("ref", "", "image reference, e.g. lameduck/sidecar:0.1.0")
	out := flag.String("out", "", "tarball to write")
	entrypoint := flag.String("entrypoint", "", "entrypoint path")
	user := flag.String("user", "65532:65532", "user:group the image runs as")
	libs := flag.Bool("libs", false, "add the shared libraries of every ELF file added")
	var adds, env list
	flag.Var(&adds, "add", "DEST=SOURCE: a file from this machine at DEST in the image (repeatable)")
	flag.Var(&env, "env", "NAME=VALUE in the image's environment (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" || len(adds) == 0 {
		fail(fmt.Errorf("-ref, -out and at least one -add are needed"))
	}
	files := map[string]string{}
	for _, add := range adds {
		dest, source, ok := strings.Cut(add, "=")
		if !ok || !path.IsAbs(dest) {
			fail(fmt.Errorf("-add %q: expected /DEST=SOURCE", add))
		}
		files[dest] = source
	}
	if *libs {
		for _, source := range sortedValues(files) {
			for _, lib := range sharedLibraries(source) {
				files[lib] = lib
			}
		}
	}
	layer, err := layerOf(files)
	if err != nil {
		fail(err)
	}
	image, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		fail(err)
	}
	config := v1.Config{User: *user, WorkingDir: "/", Env: append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, env...)}
	if *entrypoint != "" {
		config.Entrypoint = []string{*entrypoint}
	}
	image, err = mutate.Config(image, config)
	if err != nil {
		fail(err)
	}
	image, err = mutate.ConfigFile(image, withPlatform(image))
	if err != nil {
		fail(err)
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		fail(err)
	}
	if err := tarball.WriteToFile(*out, tag, image); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "image: %v\n", err)
	os.Exit(1)
}

func withPlatform(image v1.Image) *v1.ConfigFile {
	file, err := image.ConfigFile()
	if err != nil {
		fail(err)
	}
	file = file.DeepCopy()
	file.OS, file.Architecture = "linux", "amd64"
	return file
}

func sortedValues(m map[string]string) []string {
	values := make([]string, 0, len(m))
	for _, v := range m {
		values = append(values, v)
	}
	sort.Strings(values)
	return values
}

var libraryLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// sharedLibraries lists what `ldd` says an ELF file loads (nothing for a static one).
func sharedLibraries(file string) []string {
	output, err := exec.Command("ldd", file).Output()
	if err != nil {
		return nil
	}
	var found []string
	for _, line := range strings.Split(string(output), "\n") {
		if m := libraryLine.FindStringSubmatch(line); m != nil {
			found = append(found, m[1])
		}
	}
	return found
}

// layerOf is one tar layer: the files, their directories, and the user database.
func layerOf(files map[string]string) (v1.Layer, error) {
	var buffer bytes.Buffer
	writer := tar.NewWriter(&buffer)
	dirs := map[string]bool{}
	addDirs := func(p string) error {
		var parents []string
		for d := path.Dir(p); d != "/" && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			dirs[d] = true
			if err := writer.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	users := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
		"/etc/group":  "root:x:0:\nnonroot:x:65532:\nnobody:x:65534:\n",
	}
	var names []string
	for dest := range files {
		names = append(names, dest)
	}
	for dest := range users {
		names = append(names, dest)
	}
	sort.Strings(names)
	for _, dest := range names {
		if err := addDirs(dest); err != nil {
			return nil, err
		}
		var content []byte
		mode := int64(0o644)
		if text, ok := users[dest]; ok {
			content = []byte(text)
		} else {
			source := files[dest]
			info, err := os.Stat(source)
			if err != nil {
				return nil, err
			}
			if content, err = os.ReadFile(source); err != nil {
				return nil, err
			}
			mode = int64(info.Mode().Perm())
		}
		header := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dest, "/"), Mode: mode, Size: int64(len(content))}
		if err := writer.WriteHeader(header); err != nil {
			return nil, err
		}
		if _, err := writer.Write(content); err != nil {
			return nil, err
		}
	}
	if err := writer.Close(); err != nil {
		return nil, err
	}
	data := buffer.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
