// Command skjold-oci-image writes a single-layer OCI image archive (the layout `ctr images
// import` reads) from files on this machine, without Docker or a registry. The archive is
// byte-for-byte reproducible: entries are sorted, owned by root and dated 1970, so an unchanged
// input gives the same digests and the caller can cache by them.
//
//	skjold-oci-image --out img.tar --name localhost/skjold/busybox:e2e \
//	  --file /usr/bin/busybox:/bin/busybox:0755 --symlink /bin/sh:busybox \
//	  --entrypoint /bin/busybox [--cmd sh] [--env K=V] [--workdir /] [--user 1337]
//
// It prints the manifest digest on stdout.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

type entry struct {
	name   string // path inside the image, without leading "/"
	mode   int64
	source string // host file, for regular files
	link   string // symlink target
	dir    bool
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func main() {
	var files, links, env, entrypoint, cmd list
	out := flag.String("out", "", "the OCI archive to write")
	name := flag.String("name", "", "the image reference, e.g. localhost/skjold/pause:e2e")
	workdir := flag.String("workdir", "/", "the working directory")
	user := flag.String("user", "", "the default user")
	flag.Var(&files, "file", "host:image[:mode] (repeatable); mode is octal, default the host file's")
	flag.Var(&links, "symlink", "image-path:target (repeatable)")
	flag.Var(&env, "env", "K=V (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable, in order)")
	flag.Var(&cmd, "cmd", "cmd argument (repeatable, in order)")
	flag.Parse()
	if *out == "" || *name == "" || !strings.Contains(*name, ":") {
		fmt.Fprintln(os.Stderr, "skjold-oci-image: --out and --name repo:tag are required")
		os.Exit(2)
	}
	digest, err := build(*out, *name, files, links, env, entrypoint, cmd, *workdir, *user)
	if err != nil {
		fmt.Fprintln(os.Stderr, "skjold-oci-image:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

func build(out, name string, files, links, env, entrypoint, cmd list, workdir, user string) (string, error) {
	entries := map[string]entry{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
			entries[d] = entry{name: d, mode: 0o755, dir: true}
		}
	}
	for _, f := range files {
		parts := strings.Split(f, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return "", fmt.Errorf("--file %q: want host:image[:mode]", f)
		}
		st, err := os.Stat(parts[0])
		if err != nil {
			return "", fmt.Errorf("--file %q: %v", f, err)
		}
		mode := int64(st.Mode().Perm())
		if len(parts) == 3 {
			m, err := strconv.ParseInt(parts[2], 8, 64)
			if err != nil {
				return "", fmt.Errorf("--file %q: mode %q is not octal", f, parts[2])
			}
			mode = m
		}
		p := strings.TrimPrefix(path.Clean(parts[1]), "/")
		addParents(p)
		entries[p] = entry{name: p, mode: mode, source: parts[0]}
	}
	for _, l := range links {
		parts := strings.SplitN(l, ":", 2)
		if len(parts) != 2 {
			return "", fmt.Errorf("--symlink %q: want image-path:target", l)
		}
		p := strings.TrimPrefix(path.Clean(parts[0]), "/")
		addParents(p)
		entries[p] = entry{name: p, mode: 0o777, link: parts[1]}
	}
	// Directories every container needs to exist as mount points.
	for _, d := range []string{"tmp", "etc", "proc", "sys", "dev", "var/run", "var/lib"} {
		addParents(d + "/x")
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := entries[n]
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		var body []byte
		switch {
		case e.dir:
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			b, err := os.ReadFile(e.source)
			if err != nil {
				return "", err
			}
			body = b
			h.Typeflag, h.Size = tar.TypeReg, int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
		if _, err := tw.Write(body); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	blobs := map[string][]byte{}
	add := func(b []byte) (string, int64) {
		s := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(s[:])
		blobs[d] = b
		return d, int64(len(b))
	}
	layerDigest, layerSize := add(layer.Bytes())
	if env == nil {
		env = list{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config": map[string]any{
			"Entrypoint": []string(entrypoint), "Cmd": []string(cmd), "Env": []string(env),
			"WorkingDir": workdir, "User": user,
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	}
	cb, _ := json.Marshal(config)
	configDigest, configSize := add(cb)
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: configDigest, Size: configSize},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: layerSize}},
	}
	mb, _ := json.Marshal(manifest)
	manifestDigest, manifestSize := add(mb)
	tag := name[strings.LastIndex(name, ":")+1:]
	index := map[string]any{
		"schemaVersion": 2,
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: manifestDigest, Size: manifestSize,
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
		}},
	}
	ib, _ := json.Marshal(index)
	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	put := func(n string, b []byte) error {
		if err := aw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := aw.Write(b)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return "", err
	}
	if err := put("index.json", ib); err != nil {
		return "", err
	}
	digests := make([]string, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		if err := put("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d]); err != nil {
			return "", err
		}
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, archive.Bytes(), 0o644); err != nil {
		return "", err
	}
	return manifestDigest, os.Rename(tmp, out)
}
