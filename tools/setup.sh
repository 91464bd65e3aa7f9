#!/usr/bin/env bash
# One set-up for both README commands (main job and tests). Idempotent; the second run takes
# seconds. It
#   1. installs the Debian build dependencies that are missing (as root; a clear message otherwise),
#   2. creates .venv/ and installs our Python package (setup.py) with its dependencies,
#   3. builds BVLC Caffe with our layers (CMakeLists.txt), cached in $DMPN_CACHE and keyed by
#      everything that goes into it: source checksum, patches, our layer sources, options,
#      compilers, build tools, system libraries and the compiler environment (see "The key"),
#   4. puts the stock `caffe` tool in .venv/bin and pycaffe on the venv's path.
#
# Environment (all optional):
#   DMPN_CPU_ONLY=1          build without CUDA (default: CUDA when nvcc is found)
#   DMPN_CUDA_ARCH="90"      CUDA architectures (CUDA 13 compiles for 75 and newer)
#   CAFFE_SOURCE_TARBALL=F   local BVLC 99bd997 tarball (Debian's orig or GitHub's archive)
#   CAFFE_SOURCE_DIR=D       local BVLC checkout at 99bd997
#   DMPN_CACHE=D             build cache (default ~/.cache/deepmattepropnet)
#   PYTHON=python3           interpreter for .venv (a shared-libpython CPython 3.9+)
#   JOBS=N                   parallel compile jobs (default: number of cores)
#   DMPN_PRINT_KEY=1         print the build's keys (what names its build and install folders) and
#                            stop before building
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
t0=$(date +%s)

# ---- 1. Debian packages -------------------------------------------------------------------
# What the Caffe build compiles with and links against (their versions are in its key) ...
BUILD_DEBS=(build-essential cmake patch pkg-config libboost-system-dev libboost-thread-dev
            libboost-filesystem-dev libboost-python-dev libgoogle-glog-dev libgflags-dev
            libprotobuf-dev protobuf-compiler libhdf5-dev liblmdb-dev libopenblas-dev python3-dev)
# ... and the rest.
DEBS=("${BUILD_DEBS[@]}"
      xz-utils  # xz: tools/gpu_bundle.sh
      python3-venv)  # Debian's python3 makes no venv with pip without python3-venv
[[ -z ${CAFFE_SOURCE_TARBALL:-}${CAFFE_SOURCE_DIR:-} ]] && DEBS+=(debian-archive-keyring)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    die "missing Debian packages: ${missing[*]}. Install them as root: apt-get install ${missing[*]}"
  fi
  say "installing Debian packages: ${missing[*]}"
  # apt-get fails at once on a lock held by another apt (first-boot upgrades, a set-up in another
  # clone) unless told to wait
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- 2. virtual environment ---------------------------------------------------------------
VENV=$REPO/.venv
# One set-up at a time in this clone (main job and tests started together share the venv).
exec 8>"$REPO/.dmpn-setup.lock"
flock -n 8 || { say "waiting for another set-up in this clone to finish"; flock 8; }
PY=$VENV/bin/python
# PYTHON given: a venv made by another interpreter is made again with it.
if [[ -n ${PYTHON:-} && -x $PY ]]; then
  which_python='import sys; print(sys.base_prefix, sys.version)'
  want=$("$PYTHON" -c "$which_python" 2>/dev/null) || die "PYTHON=$PYTHON does not run"
  have=$("$PY" -c "$which_python" 2>/dev/null || true)
  if [[ $want != "$have" ]]; then
    say "$VENV was made by another Python: making it again with $PYTHON"
    rm -rf "$VENV"
  fi
fi
PYTHON=${PYTHON:-python3}
pip_stamp=$VENV/.dmpn-pip-$(sha256sum setup.py | cut -c1-16)
has_pip() { "$PY" -m pip --version >/dev/null 2>&1; }
# A venv counts once it has pip: one interrupted while being made, or made by a Python whose
# venv module lacks ensurepip (Debian without python3-venv), is made again. (Probed only when
# pip is about to be used: a stamped venv had it.)
if [[ ! -x $PY ]] || { [[ ! -e $pip_stamp ]] && ! has_pip; }; then
  rm -rf "$VENV"
  say "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (on Debian: apt-get install python3-venv)"
  has_pip || { rm -rf "$VENV"; die "the venv made by $PYTHON has no pip"; }
fi
pip_install() {  # pip's own status counts; its output is shown only when it fails
  local log=$VENV/.pip-install.log
  "$PY" -m pip install -q "$@" > "$log" 2>&1 \
    || { grep -v '^WARNING: Location' "$log" | tail -30 >&2; die "pip install $* failed (log: $log)"; }
}
if [[ ! -e $pip_stamp ]]; then
  say "installing Python packages into .venv"
  pip_install --upgrade pip
  pip_install -e ".[test]"
  # From / so that the package is imported from the venv, not from this folder.
  (cd / && "$PY" -c "import dmpn.layers, numpy, scipy, skimage, png, lmdb, google.protobuf, tqdm, pymatting, matplotlib, h5py, pytest") \
    || die "Python packages failed to install"
  "$PY" -m pip check >&2 || die "the venv's packages do not fit together (pip check)"
  rm -f "$VENV"/.dmpn-pip-*
  touch "$pip_stamp"
fi
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# ---- 3. Caffe build (cached) ----------------------------------------------------------------
# In canonical form: CMake normalises the paths it is given (//, ., .., relative), and the
# folders it records (the CUDA link folder an install uses) are compared with ours below.
CACHE=$(realpath -m -- "${DMPN_CACHE:-$HOME/.cache/deepmattepropnet}")
mkdir -p "$CACHE" || die "cannot create the build cache $CACHE (set DMPN_CACHE to a writable folder)"
[[ -w $CACHE ]] || die "the build cache $CACHE is not writable (set DMPN_CACHE to a writable folder)"
# The cache is shared by every clone: one set-up at a time from here on, so that the keys are
# computed from the sources that are then copied and built, and nothing is pruned under a build.
exec 9>"$CACHE/.lock"
flock -n 9 || { say "waiting for another set-up using $CACHE (a Caffe build takes minutes)"; flock 9; }
case ${DMPN_CPU_ONLY:-} in
  1|ON|on|On|TRUE|true|True|YES|yes|Yes) CPU_ONLY=1 ;;
  0|OFF|off|Off|FALSE|false|False|NO|no|No) CPU_ONLY=0 ;;
  '') CPU_ONLY= ;;
  *) die "DMPN_CPU_ONLY=$DMPN_CPU_ONLY: use 1 (CPU only) or 0 (CUDA)" ;;
esac
if [[ -z $CPU_ONLY ]]; then
  if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then CPU_ONLY=0; else
    say "no nvcc found: building CPU-only (set DMPN_CPU_ONLY=0 and put nvcc on PATH for CUDA)"
    CPU_ONLY=1
  fi
fi
CUDA_ARCH=${DMPN_CUDA_ARCH:-90}
cmake_opts=(-DCMAKE_BUILD_TYPE=Release -DDMPN_CPU_ONLY=$([[ $CPU_ONLY == 1 ]] && echo ON || echo OFF)
            "-DPYTHON_EXECUTABLE=$PY")
mapfile -t pyinfo < <("$PY" - <<'EOF'
import sysconfig, numpy
v = sysconfig.get_config_vars()
print(sysconfig.get_paths()["include"])
print(v["LIBDIR"] + "/" + v["LDLIBRARY"])
print(numpy.get_include())
print(v.get("Py_ENABLE_SHARED"))
EOF
)
((${#pyinfo[@]} == 4)) || die "$PY could not report its include and library paths"
[[ ${pyinfo[3]} == 1 ]] || die "$PYTHON has no shared libpython (needed to embed Python in caffe); use a CPython built with --enable-shared"
# numpy's headers from a copy in the cache keyed by their content: the compile flags then name
# no path of this clone, and another clone's build recompiles only the sources that differ.
numpy_key=$(cd "${pyinfo[2]}" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
NUMPY_INC=$CACHE/numpy-include-$numpy_key
if [[ ! -d $NUMPY_INC ]]; then
  rm -rf "$CACHE"/.numpy-include.*  # an interrupted copy's
  tmp=$(mktemp -d "$CACHE/.numpy-include.XXXXXX")
  cp -r "${pyinfo[2]}/." "$tmp/"
  chmod 755 "$tmp"
  mv -T "$tmp" "$NUMPY_INC"
fi
cmake_opts+=("-DPYTHON_INCLUDE_DIR=${pyinfo[0]}" "-DPYTHON_LIBRARY=${pyinfo[1]}" "-DNUMPY_INCLUDE_DIR=$NUMPY_INC"
             "-DNUMPY_VERSION=$("$PY" -c 'import numpy; print(numpy.__version__)')")
[[ -n ${CAFFE_SOURCE_TARBALL:-} ]] && cmake_opts+=("-DCAFFE_SOURCE_TARBALL=$(realpath "$CAFFE_SOURCE_TARBALL")")
[[ -n ${CAFFE_SOURCE_DIR:-} ]] && cmake_opts+=("-DCAFFE_SOURCE_DIR=$(realpath "$CAFFE_SOURCE_DIR")")
cmake_opts+=("-DCAFFE_DOWNLOAD_DIR=$CACHE/download")

if [[ $CPU_ONLY == 0 ]]; then
  # The toolkit root: $CUDA_HOME, /usr/local/cuda, or the folder above nvcc's real path.
  CUDA_ROOT=${CUDA_HOME:-/usr/local/cuda}
  if [[ ! -x $CUDA_ROOT/bin/nvcc || ! -e $CUDA_ROOT/include/cuda_runtime.h ]]; then
    command -v nvcc >/dev/null || die "CUDA asked for (DMPN_CPU_ONLY=0) but no nvcc: not on PATH" \
      "nor in ${CUDA_HOME:-/usr/local/cuda}/bin with its include/cuda_runtime.h (set CUDA_HOME)"
    CUDA_ROOT=$(dirname "$(dirname "$(realpath "$(command -v nvcc)")")")
  fi
  NVCC=$CUDA_ROOT/bin/nvcc
  cuda_major=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  extra=()
  if [[ ! -e $CUDA_ROOT/include/cublas_v2.h || ! -e $CUDA_ROOT/include/curand.h ]]; then
    # nvcc's toolkit lacks cuBLAS/cuRAND: take NVIDIA's wheels, kept in the cache.
    wheels=$CACHE/cuda-wheels-cu$cuda_major
    if [[ ! -e $wheels/.complete ]]; then
      say "installing cuBLAS and cuRAND (NVIDIA's wheels) into $wheels"
      rm -rf "$wheels" "$wheels.part"
      # Into a side folder, moved into place once complete and checked (a full disk or a lost
      # connection must not leave a folder that later runs trust).
      pip_install --target "$wheels.part" "nvidia-cublas==${cuda_major}.*" "nvidia-curand"
      for need in cublas_v2.h curand.h; do
        [[ -s $(find "$wheels.part" -name "$need" -print -quit) ]] \
          || die "NVIDIA's wheels in $wheels.part lack a complete $need (disk full?)"
      done
      mv -T "$wheels.part" "$wheels"
      touch "$wheels/.complete"
    fi
    for d in "$wheels"/nvidia/cu"$cuda_major" "$wheels"/nvidia/*; do [[ -d $d/include ]] && extra+=("$d"); done
  fi
  cmake_opts+=("-DDMPN_CUDA_ROOT=$CUDA_ROOT" "-DDMPN_CUDA_ARCH=$CUDA_ARCH"
               "-DDMPN_CUDA_LINK_ROOT=$CACHE/cuda-root-cu$cuda_major"
               "-DDMPN_CUDA_EXTRA_ROOTS=$(IFS=';'; echo "${extra[*]:-}")")
fi

# The key: everything that goes into the build. The build folder is keyed by what forces a
# full rebuild (source, patches, options, compilers, tools, system libraries); the install
# folder by that plus our layer sources, so make rebuilds only what a layer change touches.
# Paths of this clone are left out of the key (a Python and numpy of the same versions build
# the same thing), so clones share one build folder and recompile only what differs.
# A changed compiler, library or flag gives a new key, so a fresh build: a build folder
# configured with the old one would keep it (CMake caches the compiler it found), and an
# install linked against the old library is not what this machine would build now.
#
# What CMake reads from the environment at configure time, and what the compilers read at
# each call (gcc: CPATH, LIBRARY_PATH...; nvcc: NVCC_*_FLAGS), BVLC's find modules included.
BUILD_ENV=(CC CXX CFLAGS CXXFLAGS CPPFLAGS LDFLAGS CUDAHOSTCXX CUDACXX CUDAFLAGS NVCC_PREPEND_FLAGS
           NVCC_APPEND_FLAGS NVCC_CCBIN CPATH C_INCLUDE_PATH CPLUS_INCLUDE_PATH LIBRARY_PATH
           CMAKE_PREFIX_PATH CMAKE_INCLUDE_PATH CMAKE_LIBRARY_PATH CMAKE_PROGRAM_PATH CMAKE_TOOLCHAIN_FILE
           PKG_CONFIG_PATH BOOST_ROOT BOOSTROOT OpenBLAS_HOME OpenBLAS LMDB_DIR LEVELDB_ROOT)
# The library families Caffe links (the -dev packages above are partly metapackages, whose
# version does not move when the library does): their installed packages and versions.
LIB_DEBS=('libboost*' 'libgoogle-glog*' 'libgflags*' 'libprotobuf*' 'libprotoc*' 'libhdf5*' 'liblmdb*'
          'libleveldb*' 'libsnappy*' 'libopenblas*' 'libc6-dev' 'libpython3*-dev')
compiler_id() {  # $1: a compiler as CMake takes it from CC/CXX (a command, maybe with arguments)
  local exe
  read -r exe _ <<<"$1"
  printf '%s\n' "compiler $1"
  exe=$(command -v "$exe") || { echo "not found"; return 0; }
  # Where it leads (c++ -> g++-12) and its content: a wrapper script at the same path counts.
  realpath "$exe"; sha256sum < "$exe"
  "$exe" --version 2>&1 | sed -n 1,3p || true
}
cuda_link_inputs() {  # what the folder of CUDA links (CMakeLists.txt) links to, and how they stand
  local files=() r
  for r in "$CUDA_ROOT" "${extra[@]}"; do
    files+=("$r"/* "$r"/include/* "$r"/lib64/lib* "$r"/lib/lib*)
  done
  ((${#files[@]})) || return 0
  realpath -m -- "${files[@]}"
  stat -L -c '%s %Y %n' -- "${files[@]}" 2>/dev/null || true  # (a dangling link is named above)
  [[ -z ${wheels:-} ]] || printf '%s\n' "$wheels"/*.dist-info  # the wheels' versions
}
key_inputs() {  # (run in a subshell: the locale set here keeps --version texts untranslated)
  export LC_ALL=C
  echo "bvlc e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"
  sha256sum patches/*.patch CMakeLists.txt tools/fetch_bvlc_source.sh | cut -c1-64
  local o
  for o in "${cmake_opts[@]}"; do  # (not sed: a path may hold its pattern's characters)
    o=${o//"$VENV"/<venv>}
    printf '%s\n' "${o//"$REPO"/<repo>}"
  done
  "$PY" -c 'import sys, numpy; print(sys.version, numpy.__version__)'
  local v
  for v in "${BUILD_ENV[@]}"; do [[ -z ${!v+set} ]] || printf 'env %s=%s\n' "$v" "${!v}"; done
  compiler_id "${CXX:-c++}"  # CMake's first choices when CXX / CC are not set
  compiler_id "${CC:-cc}"
  cmake --version | sed -n 1p; protoc --version
  dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' "${BUILD_DEBS[@]}" "${LIB_DEBS[@]}" \
    2>/dev/null | grep '^.i' || true  # installed, held or not (no match makes dpkg-query fail)
  if [[ $CPU_ONLY == 0 ]]; then
    "$NVCC" --version
    (shopt -s nullglob dotglob; cuda_link_inputs)
  fi
}
# Every step counts: a failing one stops here rather than leaving its lines out of the key.
shopt -s inherit_errexit
trap 'die "could not compute the build key: a step above failed"' ERR
key_text=$(key_inputs)
trap - ERR
shopt -u inherit_errexit
base_key=$(printf '%s\n' "$key_text" | sha256sum | cut -c1-16)
# CMake ties a build folder to one source folder, so the build reads what it needs of this
# clone from a copy in the cache, the same path for every clone. A file is copied
# only when its content differs (and so gets a new time stamp): make recompiles what changed
# since the last build, from whichever clone.
build_inputs() { find CMakeLists.txt patches tools/fetch_bvlc_source.sh cuda -type f | LC_ALL=C sort; }
# Every file the build copies from cuda/ (any extension: a .cuh counts too).
full_key=$( { echo "$base_key"; build_inputs | grep '^cuda/' | tr '\n' '\0' | xargs -0 -r sha256sum; } \
            | sha256sum | cut -c1-16)
BUILD=$CACHE/build-$base_key
PREFIX=$CACHE/install-$full_key
SRC=$CACHE/src-$base_key
if [[ -n ${DMPN_PRINT_KEY:-} ]]; then
  printf 'base_key %s\nfull_key %s\n' "$base_key" "$full_key"
  exit 0
fi
copy_build_inputs() {
  local f
  while IFS= read -r f; do
    cmp -s "$f" "$SRC/$f" || install -D -m 644 "$f" "$SRC/$f"
  done < <(build_inputs)
  # What this clone does not have goes (a test or layer source left there would be compiled).
  (cd "$SRC" && find . -type f -printf '%P\n' | LC_ALL=C sort) | LC_ALL=C comm -13 <(build_inputs) - \
    | while IFS= read -r f; do rm -f "$SRC/$f"; done
}

# The CUDA build links the install to a folder of links in the cache (RPATH), named by its
# content and never changed once made (CMakeLists.txt); the install records which. A folder
# that is gone (deleted by hand) is made again by a configure: only that mends it.
link_root_ok() {
  [[ $CPU_ONLY == 1 ]] && return 0
  local root
  root=$(cat "$PREFIX/.dmpn-cuda-root" 2>/dev/null) && [[ -e $root/include/cublas_v2.h ]]
}
if [[ ! -e $PREFIX/.complete ]] || ! link_root_ok; then
  JOBS=${JOBS:-$(nproc)}
  say "building Caffe (CUDA: $([[ $CPU_ONLY == 0 ]] && echo "sm_$CUDA_ARCH" || echo off)) in $BUILD; the first build takes 5 to 15 minutes"
  tb=$(date +%s)
  copy_build_inputs
  home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null || true)
  if [[ -n $home && $home != "$SRC" ]]; then
    say "the build folder was configured from $home: starting it afresh"
    rm -rf "$BUILD"
  fi
  cmake -S "$SRC" -B "$BUILD" "${cmake_opts[@]}" "-DCMAKE_INSTALL_PREFIX=$PREFIX" > "$BUILD.configure.log" 2>&1 \
    || { tail -40 "$BUILD.configure.log" >&2; die "CMake configure failed (log: $BUILD.configure.log)"; }
  cmake --build "$BUILD" -j "$JOBS" --target all dmpn_test > "$BUILD.build.log" 2>&1 \
    || { { grep -E -B2 -A8 'error|Error' "$BUILD.build.log" || tail -20 "$BUILD.build.log"; } | tail -60 >&2
         die "build failed (log: $BUILD.build.log)"; }
  rm -rf "$PREFIX"
  cmake --install "$BUILD" > "$BUILD.install.log" 2>&1 || die "install failed (log: $BUILD.install.log)"
  if [[ $CPU_ONLY == 0 ]]; then
    sed -n 's/^CUDA_TOOLKIT_ROOT_DIR:PATH=//p' "$BUILD/CMakeCache.txt" > "$PREFIX/.dmpn-cuda-root"
  fi
  touch "$PREFIX/.complete"
  say "Caffe built and installed in $PREFIX ($(( $(date +%s) - tb )) s)"
else
  say "Caffe build cached: $PREFIX"
fi
# Prune the cache: the 20 most recently used installs stay (15 MB each; every run of this
# script marks its install used), so that builds from another clone or branch do not delete
# the install under a job that is still running; build folders are large and only cost a
# rebuild, so the three newest stay.
touch "$PREFIX"
oldest_after() {  # $1 newest folders named $2 stay: the others, NUL-separated (any path works)
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name "$2" -printf '%T@ %p\0' \
    | sort -z -r -n | tail -z -n +"$(($1 + 1))" | cut -z -d' ' -f2-
}
while IFS= read -r -d '' old; do rm -rf -- "$old"; done < <(oldest_after 20 'install-*')
while IFS= read -r -d '' old; do
  rm -rf -- "$old" "$old".* "$CACHE/src-${old##*/build-}"
done < <(oldest_after 3 'build-*')
# Folders of CUDA links that no install uses go (with an interrupted configure's .part ones):
# a program runs from an install, which keeps the folder it was linked to. (A build folder whose
# install went makes its folder again when it is configured.)
# Compared as files (-ef), not as strings: another clone may reach the cache by another path.
mapfile -t used < <(cat "$CACHE"/install-*/.dmpn-cuda-root 2>/dev/null || true)
# (Only the hashed ones: an unhashed cuda-root-cuN of older set-ups may serve installs that
# recorded no .dmpn-cuda-root, so it stays.)
for links in "$CACHE"/cuda-root-cu*-*; do
  [[ -e $links ]] || continue
  in_use=0
  for u in "${used[@]}"; do [[ $links -ef $u ]] && { in_use=1; break; }; done
  ((in_use)) || rm -rf "$links"
done
flock -u 9

# ---- 4. hook Caffe into the venv --------------------------------------------------------------
# Each file is replaced whole (written aside, then renamed) and only when it changes: a job of
# this clone starting caffe or Python meanwhile must not read a half-written one.
replace_file() {  # $1: path, $2: mode; the content on stdin
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat > "$tmp"
  chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}
echo "$PREFIX/python" | replace_file "$SITE/bvlc_caffe.pth" 644
for tool in caffe dmpn_test; do
  # The stock binary; PATH makes its embedded Python find this venv (and so our Python layers).
  replace_file "$VENV/bin/$tool" 755 <<EOF
#!/bin/sh
PATH="$VENV/bin:\$PATH" exec "$PREFIX/bin/$tool" "\$@"
EOF
done
echo "$PREFIX" > "$VENV/.dmpn-caffe-prefix"
echo "$BUILD" > "$VENV/.dmpn-caffe-build"  # tests/test_build.py checks its configuration
(cd / && "$PY" -c "import caffe") > "$VENV/.import-caffe.log" 2>&1 \
  || { tail -5 "$VENV/.import-caffe.log" >&2; die "pycaffe does not import from $PREFIX/python"; }
say "ready in $(( $(date +%s) - t0 )) s: .venv/bin/caffe, .venv/bin/python -c 'import caffe'"
