#!/usr/bin/env bash
# Pack what a bare GPU machine needs to run our CUDA code (tools/gpu_check.sh there) into one
# compressed tarball, built from this machine's cached Caffe build (tools/setup.sh):
#   bin/      caffe and dmpn_test (our layers' gtest suite, GPU cases included)
#   lib/      libcaffe and every library `ldd` lists for them and for pycaffe, stripped, except
#             glibc, libstdc++/libgcc (the target's own, newer ones serve), cuBLAS and cuRAND
#             (hundreds of MiB; the target has them, gpu_check.sh finds them there). CUDA's
#             runtime travels: it must be the one the kernels were built with
#   python/   this venv's CPython (stdlib without tests/GUI) with the site-packages the bench,
#             make_lmdb and pycaffe import, and pycaffe itself: the target's Python is another
#             minor version, which pycaffe's extension and boost.python cannot load
# The bundle is checked here before it is written: every binary resolves its libraries from the
# bundle alone, and the bundled Python runs make_lmdb.py and bench_propagation.py. Then:
#   bash tools/gpu_bundle.sh            # -> build/gpu-bundle/dmpn-gpu-bundle.tar.xz
# copy the repository with that file to the GPU machine and run there, from its root:
#   bash tools/gpu_check.sh build/gpu-bundle/dmpn-gpu-bundle.tar.xz OUT_DIR
# Usage: tools/gpu_bundle.sh [OUT_DIR]   (default build/gpu-bundle; MAX_MB=60 caps the size,
#        XZ_LEVEL=6 the compression: 0 is fast, for tests)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-$REPO/build/gpu-bundle}
MAX_MB=${MAX_MB:-60}
XZ_LEVEL=${XZ_LEVEL:-6}
say() { printf '[gpu_bundle] %s\n' "$*" >&2; }
die() { printf '[gpu_bundle] error: %s\n' "$*" >&2; exit 1; }

bash "$REPO/tools/setup.sh"
CAFFE_BIN=$(grep -o '"[^"]*/bin/caffe"' "$REPO/.venv/bin/caffe" | tr -d '"')
INSTALL=$(dirname "$(dirname "$CAFFE_BIN")")
[[ -x $INSTALL/bin/dmpn_test && -f $INSTALL/python/caffe/_caffe.so ]] || die "no complete Caffe install at $INSTALL"
ldd "$INSTALL/lib/libcaffe.so" | grep -q libcudart || die "$INSTALL is a CPU-only build (DMPN_CPU_ONLY): nothing to run on a GPU"
PY=$REPO/.venv/bin/python
PYHOME=$("$PY" -c 'import sys; print(sys.base_prefix)')
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
B=$STAGE/dmpn-gpu-bundle
mkdir -p "$B"/{bin,lib,python/lib/python$PYVER,python/site}

# ---- binaries and their libraries -------------------------------------------------------------
cp "$INSTALL/bin/caffe" "$INSTALL/bin/dmpn_test" "$B/bin/"
cp -P "$INSTALL"/lib/libcaffe.so* "$B/lib/"
cp -r "$INSTALL/python/caffe" "$B/python/site/"
cp -L "$PYHOME/bin/python$PYVER" "$B/python/bin-python" 2>/dev/null || die "no python$PYVER in $PYHOME/bin"
# Left to the target: glibc, the C++ runtime, and CUDA's libraries (matched to its driver).
SKIP='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s|libcublas|libcublasLt|libcurand|libcuda)\.so'
# (and the stdlib extension modules the tools load whose libraries a bare machine may lack)
for f in "$B/bin/caffe" "$B/bin/dmpn_test" "$B/python/site/caffe/_caffe.so" "$B/python/bin-python" \
         $(find "$SITE/lmdb" -name '*.so') \
         $(find "$PYHOME/lib/python$PYVER/lib-dynload" \( -name '_bz2*.so' -o -name '_lzma*.so' \
           -o -name '_ctypes*.so' -o -name 'zlib*.so' \)); do
  ldd "$f" | awk '/=> \//{print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $SKIP ]] && continue
  [[ -e $B/lib/$name ]] || cp -L "$path" "$B/lib/$name"
done

# ---- Python: stdlib and the packages the GPU checks import -------------------------------------
(cd "$PYHOME/lib/python$PYVER" && tar --exclude=site-packages --exclude=test --exclude=tests \
   --exclude=idlelib --exclude=tkinter --exclude=turtledemo --exclude=ensurepip --exclude=lib2to3 \
   --exclude='config-*' --exclude=__pycache__ -cf - .) | tar -xf - -C "$B/python/lib/python$PYVER"
PACKAGES=(numpy numpy.libs scipy scipy.libs skimage lazy_loader imageio PIL pillow.libs tifffile
          lmdb google tqdm packaging six.py)
# scipy's subpackages that nothing here imports (the check below runs the real workloads).
SCIPY_UNUSED=(io signal integrate stats odr datasets misc fftpack cluster optimize interpolate)
# Their distributions' metadata too (imageio looks its own up when it loads a plugin).
for d in numpy scipy scikit_image lazy_loader imageio pillow tifffile lmdb protobuf tqdm packaging six; do
  PACKAGES+=($(cd "$SITE" && ls -d "$d"-*.dist-info))
done
for p in "${PACKAGES[@]}"; do
  [[ -e $SITE/$p ]] || die "site-package $p missing from $SITE (tools/setup.sh installs it)"
  (cd "$SITE" && tar --exclude=__pycache__ --exclude=tests "${SCIPY_UNUSED[@]/#/--exclude=scipy/}" \
     -cf - "$p") | tar -xf - -C "$B/python/site"
done
# Wheels' own libraries (numpy.libs, ...) were patched by auditwheel: stripping breaks them.
find "$B/lib" "$B/python/lib/python$PYVER/lib-dynload" -type f -name '*.so*' \
  -exec strip --strip-unneeded {} + 2>/dev/null || true
strip --strip-unneeded "$B/bin/caffe" "$B/bin/dmpn_test" "$B/python/bin-python" 2>/dev/null || true

# What the bundle was built from: gpu_check.sh prints it, so a run shows which code it measured.
{ echo "git: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$REPO" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet 2>/dev/null || echo ', uncommitted changes'))"
  echo "install: $INSTALL"; } > "$B/REVISION"

# The environment gpu_check.sh sets up on the target; here it proves the bundle is complete
# (CUDA's libraries taken from this machine's build cache instead of the target's).
cat > "$B/env.sh" <<EOF
# source with DMPN_BUNDLE=<unpacked bundle>, DMPN_REPO=<repository root> and
# CUDA_LIBS=<folders with libcublas/libcublasLt/libcurand, :-separated>
export LD_LIBRARY_PATH="\$DMPN_BUNDLE/lib:\${CUDA_LIBS:-}"
export PYTHONHOME="\$DMPN_BUNDLE/python"
export PYTHONPATH="\$DMPN_BUNDLE/python/site"
export PYTHONNOUSERSITE=1
export PATH="\$DMPN_BUNDLE/bin:\$PATH"
export DMPN_PYTHON="\$DMPN_BUNDLE/python/bin-python"
# The repository's Python package as setup.py lays it out (layers/ is dmpn.layers), copied in
# so that the bundle runs the working tree it travels with.
rm -rf "\$DMPN_BUNDLE/python/site/dmpn"
cp -r "\$DMPN_REPO/dmpn" "\$DMPN_BUNDLE/python/site/dmpn"
cp -r "\$DMPN_REPO/layers" "\$DMPN_BUNDLE/python/site/dmpn/layers"
EOF
CUDA_HERE=$(dirname "$(ldd "$INSTALL/lib/libcaffe.so" | awk '/libcudart/{print $3}')")
(
  export DMPN_BUNDLE=$B CUDA_LIBS=$CUDA_HERE DMPN_REPO=$REPO
  # shellcheck disable=SC1091
  source "$B/env.sh"
  for f in "$B/bin/caffe" "$B/bin/dmpn_test" "$B/python/site/caffe/_caffe.so"; do
    if ldd "$f" | grep -q 'not found'; then
      die "$(basename "$f") misses libraries in the bundle: $(ldd "$f" | grep 'not found' | tr -s ' \t' ' ')"
    fi
  done
  cd "$STAGE"  # no repo-relative imports by accident, except DMPN_REPO on PYTHONPATH
  # What gpu_check.sh runs with the bundled Python, in miniature and on the CPU.
  "$DMPN_PYTHON" "$REPO/tools/make_lmdb.py" --out "$STAGE/lmdb" --preset demo --synthetic 3 \
    --test-originals 1 --bg-per-original 1 --rotations 1 >"$STAGE/check.log" 2>&1 \
    && "$DMPN_PYTHON" "$REPO/tools/bench_propagation.py" --size 24x32 --batch 2x16x16 --repeats 1 \
       >>"$STAGE/check.log" 2>&1 \
    || { tail -20 "$STAGE/check.log" >&2; die "the bundled Python cannot run make_lmdb.py and bench_propagation.py"; }
  rm -rf "$STAGE/lmdb" "$B/python/site/dmpn"
  dmpn_test --gtest_list_tests >/dev/null || die "the bundled dmpn_test does not start"
)

mkdir -p "$OUT_DIR"
tmp=$OUT_DIR/.dmpn-gpu-bundle.tar.xz.tmp
tar -C "$STAGE" -cf - dmpn-gpu-bundle | xz -T0 -"$XZ_LEVEL" > "$tmp"
mb=$(( $(stat -c %s "$tmp") / 1048576 ))
if (( mb > MAX_MB )); then rm -f "$tmp"; die "bundle is $mb MiB, over MAX_MB=$MAX_MB"; fi
mv "$tmp" "$OUT_DIR/dmpn-gpu-bundle.tar.xz"
say "wrote $OUT_DIR/dmpn-gpu-bundle.tar.xz ($mb MiB, unpacked $(du -sm "$B" | cut -f1) MiB) from $INSTALL"
