"""The foundation: the stock caffe tool with our layers registered, pycaffe, Python layers
from the plain caffe binary, and the source checks of the build."""
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, has_gpu, require_caffe, tool

OUR_LAYERS = {"AffinityExp", "SparseLaplacianSolve", "Unpooling", "MattingLoss"}


def test_caffe_version():
    out = subprocess.run([tool("caffe"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "caffe version 1.0.0" in out.stdout + out.stderr


def test_our_layers_are_registered():
    caffe = require_caffe()
    registered = set(caffe.layer_type_list())
    assert OUR_LAYERS <= registered
    # Every layer source in cuda/ is compiled in and registered (the drop-in rule): each
    # REGISTER_LAYER_CLASS(X) there must show up in the registry.
    import re
    for src in (ROOT / "cuda/src/caffe/layers").glob("*.cpp"):
        for name in re.findall(r"REGISTER_LAYER_CLASS\((\w+)\)", src.read_text()):
            assert name in registered, f"{src.name} registers {name}, which libcaffe lacks"


def test_cpu_mode_without_a_gpu_logs_no_cuda_errors():
    """Without a GPU the CUDA build's CPU mode needs neither cuBLAS nor cuRAND: Caffe says so
    in one INFO line instead of logging errors from every thread's Caffe object and from
    set_random_seed (patches/0008). Each Python thread that calls into Caffe makes its own."""
    if has_gpu():
        pytest.skip("this machine has a GPU: the handles are made")
    code = ("import threading, caffe\n"
            "caffe.set_mode_cpu(); caffe.set_random_seed(0)\n"
            "t = threading.Thread(target=caffe.set_random_seed, args=(1,)); t.start(); t.join()\n"
            "print(any('libcudart' in line for line in open('/proc/self/maps')))\n")
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    out = subprocess.run([tool("python"), "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if re.match(r"[EF]\d{4,8} ", line)]
    assert errors == [], out.stderr[-3000:]
    cuda_build = out.stdout.split()[-1] == "True"
    assert out.stderr.count("No CUDA device") == (1 if cuda_build else 0), out.stderr[-3000:]


PY_NET = """
name: "python_layer_net"
layer { name: "w" type: "DummyData" top: "w" top: "t"
  dummy_data_param {
    shape { dim: 1 dim: 2 dim: 6 dim: 7 } shape { dim: 1 dim: 1 dim: 6 dim: 7 }
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "solve" type: "Python" bottom: "w" bottom: "t" top: "alpha"
  python_param { module: "dmpn.layers.sparse_laplacian_solve"
                 layer: "SparseLaplacianSolveLayer" param_str: '{"c": 0.8}' } }
"""


def test_caffe_binary_runs_python_layer(tmp_path):
    """The plain caffe tool finds our Python layers without any variable set."""
    net = tmp_path / "net.prototxt"
    net.write_text(PY_NET)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(GLOG_minloglevel="0", GLOG_logtostderr="1")
    out = subprocess.run([tool("caffe"), "time", "-model", str(net), "-iterations", "2"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Python" in out.stderr and "Average Forward pass" in out.stderr, out.stderr[-3000:]


def test_pycaffe_runs_net_with_python_layer(tmp_path):
    caffe = require_caffe()
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(PY_NET)
    net = caffe.Net(str(net_file), caffe.TEST)
    net.forward()
    assert net.blobs["alpha"].data.shape == (1, 1, 6, 7)
    # all-foreground trimap: alpha = 1 everywhere
    assert abs(net.blobs["alpha"].data - 1).max() < 1e-6


# ---- the source checks of CMakeLists.txt ------------------------------------------------------

def bvlc_tarball():
    given = os.environ.get("CAFFE_SOURCE_TARBALL")
    if given and Path(given).exists():
        return Path(given)
    cache = Path(os.environ.get("DMPN_CACHE", Path.home() / ".cache/deepmattepropnet"))
    found = sorted(cache.glob("download/caffe_*.orig.tar.gz"))
    if not found:
        pytest.skip("no BVLC tarball in the cache (the build used a local checkout)")
    return found[0]


def configure(tmp_path, *args, build="build"):
    """A plain CMake configure of this tree in tmp_path/<build>, CPU-only unless args say
    otherwise (the last -D of a variable wins)."""
    return subprocess.run(["cmake", "-S", str(ROOT), "-B", str(tmp_path / build), "-DDMPN_CPU_ONLY=ON",
                           "-DBUILD_python=OFF", *args],
                          capture_output=True, text=True, timeout=900)


def extract(tf, dest):
    """tarfile's safe "data" filter where this Python has it (3.11.4 on; Debian 12's 3.11.2
    lacks it, and BVLC's archive needs none)."""
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="data")
    else:
        tf.extractall(dest)


def github_style_archive(tmp_path):
    """BVLC's tree at the commit as GitHub archives it: one top folder, gzip."""
    src = tmp_path / "unpacked"
    with tarfile.open(bvlc_tarball()) as tf:
        extract(tf, src)
    other = tmp_path / "caffe-99bd99795dcdf0b1d3086a8d67ab1782a8a08383.tar.gz"
    with tarfile.open(other, "w:gz") as tf:
        tf.add(src, arcname="caffe-99bd99795dcdf0b1d3086a8d67ab1782a8a08383")
    return other


def test_tampered_tarball_stops_the_build(tmp_path):
    src = tmp_path / "src"
    with tarfile.open(bvlc_tarball()) as tf:
        extract(tf, src)
    proto = src / "src/caffe/layers/relu_layer.cpp"
    proto.write_text(proto.read_text() + "\n// tampered\n")
    bad = tmp_path / "caffe_tampered.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        for p in sorted(src.iterdir()):
            tf.add(p, arcname=p.name)
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={bad}")
    assert out.returncode != 0
    assert "Checksum mismatch" in out.stderr and str(bad) in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "build/bvlc").exists()  # nothing half-made is left as the source


def test_corrupt_tarball_is_refused(tmp_path):
    bad = tmp_path / "caffe_truncated.tar.gz"
    data = bvlc_tarball().read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={bad}")
    assert out.returncode != 0
    assert "could not be unpacked" in out.stderr or "Checksum mismatch" in out.stderr, out.stderr[-2000:]


def test_a_bad_download_is_removed_and_a_given_tarball_kept(tmp_path):
    """A tarball in the download folder that does not unpack or is not BVLC's commit is removed
    (kept, every later configure would trust it); one the user gave is never touched."""
    data = bvlc_tarball().read_bytes()
    download = tmp_path / "download"
    download.mkdir()
    fetched = download / bvlc_tarball().name
    fetched.write_bytes(data[: len(data) // 2])
    out = configure(tmp_path, f"-DCAFFE_DOWNLOAD_DIR={download}")
    said = " ".join(out.stderr.split())  # (CMake wraps its messages)
    assert out.returncode != 0 and ("could not be unpacked" in said or "Checksum mismatch" in said)
    assert "the next configure fetches it again" in said and not fetched.exists(), said[-2000:]
    fetched.write_bytes(github_style_archive(tmp_path).read_bytes()[:-1000])  # cut short too
    out = configure(tmp_path, f"-DCAFFE_DOWNLOAD_DIR={download}", build="build2")
    assert out.returncode != 0 and not fetched.exists(), out.stderr[-2000:]
    given = tmp_path / "given.tar.gz"
    given.write_bytes(data[: len(data) // 2])
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={given}", build="build3")
    assert out.returncode != 0 and given.exists() and "fetches it again" not in out.stderr


def test_fetch_picks_debians_archive_from_the_apt_sources(tmp_path):
    """tools/fetch_bvlc_source.sh reads the mirror from the machine's apt sources: Debian's
    archive, not another vendor's .sources that sorts first, nor the security archive."""
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "a-vendor.sources").write_text("Types: deb\nURIs: https://vendor.invalid/apt\n"
                                        "Suites: stable\nSigned-By: /usr/share/keyrings/vendor.gpg\n")
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://security.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")

    def mirror():
        out = subprocess.run(["bash", str(ROOT / "tools/fetch_bvlc_source.sh"), "--print-mirror"],
                             capture_output=True, text=True, env=dict(os.environ, APT_ETC=str(tmp_path)))
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    assert mirror() == "http://mirror.invalid/debian"
    (d / "debian.sources").unlink()  # a one-line list instead
    (tmp_path / "sources.list").write_text("deb http://security.invalid/debian-security bookworm-security main\n"
                                           "deb [arch=amd64] http://old.invalid/debian bookworm main\n")
    assert mirror() == "http://old.invalid/debian"


def test_github_style_archive_of_the_commit_is_accepted(tmp_path):
    """Another archive of the same commit (one top folder, other compression) passes the tree
    checksum and the patches apply."""
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={github_style_archive(tmp_path)}")
    assert "verified" in out.stdout and "patched" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert (tmp_path / "build/bvlc/.dmpn-patched").exists()


def test_leftovers_of_an_interrupted_unpack_are_removed(tmp_path):
    """A configure stopped while it unpacked the source leaves its folders behind; the next
    one removes them and unpacks afresh, GitHub's top folder moved into place by one rename."""
    build = tmp_path / "build"
    for leftover in ("bvlc-unpack", "bvlc-unpack.extract", "bvlc-unpack.inner"):
        (build / leftover / "caffe-99bd997-half").mkdir(parents=True)
    out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={github_style_archive(tmp_path)}")
    assert out.returncode == 0 and "patched" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert (build / "bvlc/.dmpn-patched").exists()
    assert not list(build.glob("bvlc-unpack*"))


def test_setup_keeps_recently_used_installs():
    """A cached `tools/setup.sh` run prunes the build cache without deleting an install that
    another clone used recently (a job may still run on it) or this clone's own."""
    own = Path(require_caffe().__file__).resolve().parents[2]  # <install>/python/caffe/
    cache = own.parent
    # The cache is shared with other clones: the fakes are older than every real install, so
    # that the pruning they cause takes fakes only, and named by this process.
    real = list(cache.glob("install-*"))
    oldest = min(p.stat().st_mtime for p in real)
    room = len(real) < 20  # else no fake is among the 20 most recent: all must go
    tag = f"test{os.getpid()}"
    stale = [cache / f"install-{tag}-{i:02d}stale" for i in range(25)]
    recent = cache / f"install-{tag}-recent"  # another clone's, used before every real one
    try:
        for i, d in enumerate(stale):  # used 1 to 25 days before that
            d.mkdir()
            os.utime(d, (oldest - (i + 1) * 86400, oldest - (i + 1) * 86400))
        recent.mkdir()
        os.utime(recent, (oldest - 60, oldest - 60))
        out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                             text=True, timeout=1800)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        installs = sorted(p.name for p in cache.glob("install-*"))
        assert own.exists() and (own / ".complete").exists()
        assert sum(p.exists() for p in real) == min(len(real), 20)  # no real one for a fake
        assert recent.exists() == room  # among the 20 most recently used while there is room
        assert len(installs) <= 20, installs
        assert not stale[-1].exists()  # the least recently used went
    finally:
        for d in stale + [recent]:
            if d.exists():
                d.rmdir()


def test_setup_with_the_cache_spelt_otherwise_keeps_the_cuda_link_folder():
    """DMPN_CACHE with a trailing slash or a '..' (CMake records the folder of CUDA links in
    canonical form): a cached run must neither prune the folder the install runs through nor
    rebuild."""
    own = Path(require_caffe().__file__).resolve().parents[2]
    record = own / ".dmpn-cuda-root"
    if not record.exists():
        pytest.skip("a CPU-only build has no folder of CUDA links")
    links = Path(record.read_text().strip())
    cache = own.parent
    for spelling in (f"{cache}/", f"{cache}/../{cache.name}"):
        out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                             text=True, timeout=1800, env={**os.environ, "DMPN_CACHE": spelling})
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        assert "Caffe build cached" in out.stdout + out.stderr, spelling
        assert (links / "include" / "cublas_v2.h").exists(), f"{links} pruned with DMPN_CACHE={spelling}"


def test_build_folder_names_no_path_of_this_clone():
    """Clones on one machine share a build folder (tools/setup.sh). CMake ties a build folder
    to one source folder, so it must be configured from the cache's copy of the sources, and no
    compile flag may name this clone (numpy's headers come from the cache too): otherwise another
    clone's set-up fails, or recompiles everything."""
    require_caffe()
    record = Path(sys.executable).parent.parent / ".dmpn-caffe-build"
    if not record.exists():
        pytest.skip("no build folder recorded (Caffe was not built by tools/setup.sh)")
    build = Path(record.read_text().strip())
    if not (build / "CMakeCache.txt").exists():
        pytest.skip(f"{build} was pruned from the cache (the install outlives it)")
    cache = (build / "CMakeCache.txt").read_text()
    home = re.search(r"^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$", cache, re.M).group(1)
    assert home == str(build.parent / ("src-" + build.name[len("build-"):]))
    generated = list(build.rglob("flags.make")) + list(build.rglob("*.Release.cmake"))
    assert generated
    # this clone's folder as a whole path component: a cache beside it (/x/dmpn and
    # /x/dmpn-cache) names no path of the clone
    clone_path = re.compile(re.escape(str(ROOT)) + r"(?![^/\s;\"'\]])")
    for f in generated:
        found = clone_path.search(f.read_text())
        assert not found, f"{f} names this clone: ...{found.string[found.start():found.end() + 60]}"


def test_setup_refuses_an_unknown_cpu_only_value():
    """DMPN_CPU_ONLY takes 1/ON/true/yes or 0/OFF/false/no: anything else is an error, not a
    CUDA build announced as CPU-only."""
    env = dict(os.environ, DMPN_CPU_ONLY="maybe")
    out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 1 and "DMPN_CPU_ONLY=maybe: use 1 (CPU only) or 0 (CUDA)" in out.stderr


# ---- tools/setup.sh's key, and the folder of CUDA links -----------------------------------------

def setup_key(tmp_path, **env):
    """tools/setup.sh's build key (DMPN_PRINT_KEY=1: computed, then it stops) for a CPU-only
    build against a cache of the test's own, with env added to a compiler-neutral environment."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("CC", "CXX", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS", "NVCC_APPEND_FLAGS")}
    nosrc = tmp_path / "no-bvlc-here"  # a set-up that went on to build would stop at once
    nosrc.mkdir(exist_ok=True)
    base.update(DMPN_PRINT_KEY="1", DMPN_CPU_ONLY="1", DMPN_CACHE=str(tmp_path / "cache"),
                CAFFE_SOURCE_DIR=str(nosrc))
    base.update(env)
    out = subprocess.run(["bash", str(ROOT / "tools/setup.sh")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env=base)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert not list((tmp_path / "cache").glob("build-*"))  # nothing built
    keys = dict(line.split() for line in out.stdout.splitlines())
    return keys["base_key"]


def test_setup_key_covers_the_compilers_and_their_flags(tmp_path):
    """CMake compiles with CXX / CC, or the c++ / cc first on PATH, and reads the flags from
    the environment: another compiler (down to a wrapper script's content) or other flags give
    another key, so a fresh build, never an install built with the old ones."""
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    cxx = wrappers / "c++"
    cxx.write_text(f'#!/bin/sh\nexec {shutil.which("c++")} "$@"\n')
    cxx.chmod(0o755)
    plain = setup_key(tmp_path)
    assert setup_key(tmp_path) == plain  # the same inputs, the same key
    keys = {"CXX": setup_key(tmp_path, CXX=str(cxx)),
            "c++ on PATH": setup_key(tmp_path, PATH=f"{wrappers}:{os.environ['PATH']}"),
            "CC": setup_key(tmp_path, CC=str(cxx)),
            "CXXFLAGS": setup_key(tmp_path, CXXFLAGS="-O1"),
            "CFLAGS": setup_key(tmp_path, CFLAGS="-O1"),
            "LDFLAGS": setup_key(tmp_path, LDFLAGS="-Wl,-O1"),
            "NVCC_APPEND_FLAGS": setup_key(tmp_path, NVCC_APPEND_FLAGS="-lineinfo")}
    cxx.write_text(cxx.read_text() + "# edited\n")
    keys["the wrapper's content"] = setup_key(tmp_path, CXX=str(cxx))
    assert plain not in keys.values(), keys
    assert len(set(keys.values())) == len(keys), keys


def cuda_roots():
    """nvcc's toolkit root, and the folders that hold what it lacks (NVIDIA's wheels, in the
    build cache), as tools/setup.sh finds them."""
    nvcc = shutil.which("nvcc")
    if not nvcc:
        pytest.skip("no nvcc")
    root = Path(nvcc).resolve().parents[1]
    if (root / "include/cublas_v2.h").exists():
        return root, []
    cache = Path(os.environ.get("DMPN_CACHE", Path.home() / ".cache/deepmattepropnet"))
    extra = sorted({h.parents[1] for h in cache.glob("cuda-wheels-cu*/nvidia/*/include/cublas_v2.h")})
    if not extra:
        pytest.skip(f"{root} lacks cuBLAS and the cache holds no NVIDIA wheels")
    return root, extra


def test_cuda_link_folder_is_never_changed_in_place(tmp_path):
    """Installed programs load cuBLAS through the folder of CUDA links (RPATH) whenever they
    start, so no configure remakes it: the same links reuse the folder untouched, other links
    make another folder beside it, and the first stays as it was."""
    root, extra = cuda_roots()
    links = tmp_path / "links"

    def cuda_configure(build, roots):
        out = configure(tmp_path, f"-DCAFFE_SOURCE_TARBALL={bvlc_tarball()}", "-DDMPN_CPU_ONLY=OFF",
                        f"-DDMPN_CUDA_ROOT={root}", f"-DDMPN_CUDA_LINK_ROOT={links}",
                        "-DDMPN_CUDA_EXTRA_ROOTS=" + ";".join(map(str, roots)), build=build)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        cache = (tmp_path / build / "CMakeCache.txt").read_text()
        return Path(re.search(r"^CUDA_TOOLKIT_ROOT_DIR:PATH=(.*)$", cache, re.M).group(1))

    def made():
        return sorted(tmp_path.glob("links-*"))

    def state(folder):  # every entry's identity, time and link target
        return {p: (p.lstat().st_ino, p.lstat().st_mtime_ns, os.readlink(p) if p.is_symlink() else None)
                for p in [folder, *folder.rglob("*")]}

    first = cuda_configure("a", extra)
    assert made() == [first]
    assert (first / "include/cublas_v2.h").exists() and list(first.glob("lib64/libcublas.so*"))
    before = state(first)
    assert cuda_configure("b", extra) == first  # another build folder, the same links
    assert made() == [first] and state(first) == before
    fake = tmp_path / "fake-root"  # another library beside: other links
    (fake / "include").mkdir(parents=True)
    (fake / "lib").mkdir()
    (fake / "include/dmpn_fake.h").write_text("")
    (fake / "lib/libdmpnfake.so.1").write_text("")
    second = cuda_configure("c", [*extra, fake])
    assert second != first and made() == sorted([first, second])
    assert (second / "lib64/libdmpnfake.so").resolve() == fake / "lib/libdmpnfake.so.1"
    assert state(first) == before
    assert cuda_configure("a", extra) == first and state(first) == before  # and back


def test_setup_key_covers_the_cuda_libraries(tmp_path):
    """The CUDA build's key covers what its folder of links leads to: NVIDIA's wheels in
    another version give another key (a fresh build and another folder of links)."""
    root, extra = cuda_roots()
    if not extra:
        pytest.skip(f"{root} holds cuBLAS: no wheels")
    real = extra[0].parents[1]  # <cache>/cuda-wheels-cuN
    wheels = tmp_path / "cache" / real.name  # the same libraries, versions of the test's own
    (wheels / "nvidia").mkdir(parents=True)
    for d in extra:
        (wheels / "nvidia" / d.name).symlink_to(d)
    (wheels / ".complete").touch()
    version = wheels / "nvidia_cublas-13.0.0.1.dist-info"
    version.mkdir()

    def key():
        return setup_key(tmp_path, DMPN_CPU_ONLY="0", CUDA_HOME=str(root))

    first = key()
    assert key() == first
    version.rename(wheels / "nvidia_cublas-13.0.0.2.dist-info")
    assert key() != first


def test_each_tool_runs_its_own_clones_code(tmp_path):
    """tools/X.py imports the dmpn beside it, not the one the venv was made from (another
    clone's): a copy of the repository with a changed dmpn shows the change."""
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "tools", clone / "tools", ignore=shutil.ignore_patterns("*.sh"))
    shutil.copytree(ROOT / "dmpn", clone / "dmpn", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "layers", clone / "layers", ignore=shutil.ignore_patterns("__pycache__"))
    # The Python layers come from the same clone as the rest of dmpn (not the venv's clone).
    res = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(clone)!r}); "
                          "import dmpn.layers.sparse_laplacian_solve as m; print(m.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == str(clone / "layers" / "sparse_laplacian_solve.py"), res
    wrappers = sorted(p.name for p in (clone / "tools").glob("*.py"))
    assert len(wrappers) >= 8
    for name in wrappers:
        text = (clone / "tools" / name).read_text()
        module = re.search(r"^from (dmpn\.\w+) import main", text, re.M).group(1)
        path = clone / (module.replace(".", "/") + ".py")
        source = path.read_text()
        path.write_text(source + '\nimport sys as _sys\n_sys.stderr.write("CLONE-MARKER\\n")\n')
        res = subprocess.run([sys.executable, str(clone / "tools" / name), "--help"],
                             capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0 and "CLONE-MARKER" in res.stderr, (name, res.stderr[-500:])
        path.write_text(source)


def test_run_tests_passes_pytest_arguments_through(tmp_path):
    """The README's test command: no test named runs tests/; a test file named relative to the
    caller's folder is found from another folder; an option's value that is a path (--basetemp)
    never replaces the tests. Run on a copy with set-up and Python stubbed to print what pytest
    would get."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("")
    shutil.copy(os.path.join(ROOT, "tools", "run_tests.sh"), repo / "tools")
    (repo / "tools" / "setup.sh").write_text("")
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text('#!/bin/sh\necho "$PWD"; printf "%s\\n" "$@"\n')
    (venv_bin / "python").chmod(0o755)

    def pytest_args(cwd, *args):
        p = subprocess.run(["bash", str(repo / "tools" / "run_tests.sh"), *args], cwd=cwd,
                           capture_output=True, text=True, check=True)
        lines = p.stdout.splitlines()
        assert lines[0] == str(repo)
        return lines[1:]

    head = ["-m", "pytest", "-o", "testpaths=tests", "-ra"]
    assert pytest_args(repo) == head
    assert pytest_args(repo, "--basetemp", str(tmp_path), "-k", "tests") == \
        head + ["--basetemp", str(tmp_path), "-k", "tests"]
    assert pytest_args(repo / "tests", "test_x.py::test_a", "-x") == \
        head + [str(repo / "tests" / "test_x.py::test_a"), "-x"]
    assert pytest_args(repo, "tests/test_x.py") == head + ["tests/test_x.py"]
