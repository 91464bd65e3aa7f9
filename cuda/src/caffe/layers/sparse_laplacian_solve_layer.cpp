#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <new>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "caffe/layers/dmpn_checks.hpp"
#include "caffe/layers/sparse_laplacian_solve_layer.hpp"
#include "caffe/util/math_functions.hpp"

// The solve's hot loops are compiled three times, for x86-64-v4 (AVX-512), x86-64-v3 (AVX2,
// FMA) and the baseline x86-64, and the loader picks the version for the CPU at hand (GCC's
// function multiversioning): a source build that also runs on another machine
// (tools/gpu_bundle.sh), ~15 % faster with AVX2 and ~8 % more with AVX-512 (measured on
// random 600 x 800 systems). Not under ThreadSanitizer: GCC instruments the clones' resolvers,
// which the loader runs before TSan has started, and the program crashes while loading.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12 && \
    !defined(__SANITIZE_THREAD__)
#define DMPN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define DMPN_CPU_CLONES
#endif

namespace caffe {

// ---------------------------------------------------------------------------------------------
// GridMultigridSolver

namespace {

const int kParallelWork = 1 << 16;    // levels smaller than this run on one thread
const int kArrayStagger = 272;        // floats (1088 bytes): see Setup
const float kCoarseScale = static_cast<float>(kMultigridCoarseScale);  // the V-cycle is float

// (A v) at pixel (y, x) of a 5-point grid operator stored in the SplitIndex layout, summed in
// S (float64 for the CG, float32 for the V-cycle).
template <typename S, typename E, typename D, typename V>
inline S ApplyPixel(int H, int W, const E* ew, const E* sw, const D* diag, const V* v, int y,
                    int x) {
  const int i = SplitIndex(W, y, x);
  S s = static_cast<S>(diag[i]) * v[i];
  if (x + 1 < W) s -= static_cast<S>(ew[i]) * v[SplitIndex(W, y, x + 1)];
  if (x > 0) {
    const int west = SplitIndex(W, y, x - 1);
    s -= static_cast<S>(ew[west]) * v[west];
  }
  if (y + 1 < H) s -= static_cast<S>(sw[i]) * v[i + W];
  if (y > 0) s -= static_cast<S>(sw[i - W]) * v[i - W];
  return s;
}

// y = A x on rows [y0, y1) (y indexed from `offset`); returns sum(x * A x) over those rows.
template <typename E, typename D, typename V>
double ApplyRows(int H, int W, const E* ew, const E* sw, const D* diag, const V* x, V* y,
                 int y0, int y1, int offset = 0) {
  double dot = 0;
  for (int yy = y0; yy < y1; ++yy) {
    for (int xx = 0; xx < W; ++xx) {
      const int i = SplitIndex(W, yy, xx);
      const double s = ApplyPixel<double>(H, W, ew, sw, diag, x, yy, xx);
      y[i - offset] = static_cast<V>(s);
      dot += s * x[i];
    }
  }
  return dot;
}

// An interior row (0 < y < H - 1) in the SplitIndex layout is two runs of pixels with fixed
// offsets to their east and west neighbours: the even columns from x = 2 (x = 0 has no west
// neighbour) and the odd columns. The east weight of a row's last pixel is 0 (Setup makes
// sure), so its east neighbour may be any pixel: no border tests, and the loops vectorise.
struct InteriorRun {
  int begin, end, east, west;  // indices within the row
};
inline void InteriorRuns(int W, InteriorRun runs[2]) {
  const int We = (W + 1) / 2;
  runs[0] = InteriorRun{1, We, We, We - 1};
  runs[1] = InteriorRun{We, W, 1 - We, -We};
}

// (A v)_i in S for a pixel i of an interior run, summed in the order of ApplyPixel.
template <typename S, typename E, typename D, typename V>
inline S ApplyInterior(int W, int east, int west, const E* ew, const E* sw, const D* diag,
                       const V* v, int i) {
  return static_cast<S>(diag[i]) * v[i] - static_cast<S>(ew[i]) * v[i + east]
      - static_cast<S>(ew[i + west]) * v[i + west] - static_cast<S>(sw[i]) * v[i + W]
      - static_cast<S>(sw[i - W]) * v[i - W];
}

// The sum of term(i) over [i0, i1) in four partial sums: a single sum is a chain of dependent
// additions that stalls the loop. term may also write (the CG's loops fuse their updates).
template <typename F>
inline double SumBy4(int i0, int i1, F term) {
  double s[4] = {0, 0, 0, 0};
  int i = i0;
  for (; i + 4 <= i1; i += 4) {
    for (int k = 0; k < 4; ++k) s[k] += term(i + k);
  }
  for (; i < i1; ++i) s[0] += term(i);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// The CG's q = A p on rows [y0, y1), returning p . q: ApplyRows with the interior rows by
// ApplyInterior. Edge weights in float64, or in float32 where that holds them exactly.
template <typename E>
inline double ApplyGridRowsT(int H, int W, const E* ew, const E* sw, const double* diag,
                             const double* v, double* y, int y0, int y1) {
  double dot = 0;
  for (int yy = y0; yy < y1; ++yy) {
    if (yy == 0 || yy == H - 1) {
      dot += ApplyRows(H, W, ew, sw, diag, v, y, yy, yy + 1);
      continue;
    }
    const int row = yy * W;
    const double s0 = ApplyPixel<double>(H, W, ew, sw, diag, v, yy, 0);
    y[row] = s0;
    dot += s0 * v[row];
    InteriorRun runs[2];
    InteriorRuns(W, runs);
    for (const InteriorRun& run : runs) {
      const int east = run.east, west = run.west;
      dot += SumBy4(row + run.begin, row + run.end, [&](int i) {
        const double s = ApplyInterior<double>(W, east, west, ew, sw, diag, v, i);
        y[i] = s;
        return s * v[i];
      });
    }
  }
  return dot;
}

DMPN_CPU_CLONES
double ApplyGridRows(int H, int W, const double* ew, const double* sw, const double* diag,
                     const double* v, double* y, int y0, int y1) {
  return ApplyGridRowsT(H, W, ew, sw, diag, v, y, y0, y1);
}

DMPN_CPU_CLONES
double ApplyGridRows(int H, int W, const float* ew, const float* sw, const double* diag,
                     const double* v, double* y, int y0, int y1) {
  return ApplyGridRowsT(H, W, ew, sw, diag, v, y, y0, y1);
}

// A row-major H x W field into the SplitIndex layout (to_split), or back: per row, the even
// columns to / from the first half and the odd ones to / from the second.
template <typename A, typename B>
void Rearrange(int H, int W, bool to_split, const A* in, B* out) {
  const int We = (W + 1) / 2;
  for (int row = 0; row < H * W; row += W) {
    const A* a = in + row;
    B* o = out + row;
    if (to_split) {
      for (int j = 0; 2 * j < W; ++j) o[j] = static_cast<B>(a[2 * j]);
      for (int j = 0; 2 * j + 1 < W; ++j) o[We + j] = static_cast<B>(a[2 * j + 1]);
    } else {
      for (int j = 0; 2 * j < W; ++j) o[2 * j] = static_cast<B>(a[j]);
      for (int j = 0; 2 * j + 1 < W; ++j) o[2 * j + 1] = static_cast<B>(a[We + j]);
    }
  }
}
}  // namespace

namespace {
// Non-empty and nothing but ASCII digits: no sign, space or exponent that atoi/atoll would
// skip or stop at.
bool AllDigits(const std::string& text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}
}  // namespace

int CpusOfCpuQuota(long long quota_us, long long period_us) {
  if (quota_us <= 0 || period_us <= 0) return 0;
  return static_cast<int>(std::min<long long>((quota_us + period_us - 1) / period_us,
                                              kMaxCpuThreads));
}

int CpusOfCpuMax(const std::string& cpu_max) {
  std::istringstream in(cpu_max);
  std::string quota, rest;
  long long period = 0;
  if (!(in >> quota >> period) || (in >> rest) || !AllDigits(quota)) return 0;  // or "max"
  return CpusOfCpuQuota(std::atoll(quota.c_str()), period);
}

namespace {

// The first line of a file, "" where it cannot be read.
std::string FirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// This process's cgroup path in the hierarchy of `controller` as /proc/self/cgroup lists it
// ("": cgroup v2's "0::PATH" line; v1: "cpu" matches "N:cpu:PATH" and "N:cpu,cpuacct:PATH"),
// or "" with *found false.
std::string OwnCgroup(const std::string& controller, bool* found) {
  std::ifstream self("/proc/self/cgroup");
  *found = false;
  for (std::string line; std::getline(self, line);) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::stringstream list(line.substr(a + 1, b - a - 1));
    bool match = controller.empty() && b == a + 1;
    for (std::string c; !match && std::getline(list, c, ',');) match = c == controller;
    if (match) {
      *found = true;
      return line.substr(b + 1);
    }
  }
  return "";
}

// The smallest CPU quota along a cgroup path and its ancestors (each one's limit applies), from
// quota(folder) of each folder that exists under `mount`, up to the mount's root: a cgroup
// namespace shows the container's own cgroup as "/", and without one the process's path may
// not exist in the container's mount, whose root is then its cgroup. 0 for none.
template <typename QuotaOf>
int QuotaAlong(const std::string& mount, std::string path, QuotaOf quota) {
  int cpus = 0;
  for (;;) {
    const int n = quota(mount + path);
    if (n > 0) cpus = cpus > 0 ? std::min(cpus, n) : n;
    if (path.empty() || path == "/") return cpus;
    path.resize(path.rfind('/'));
  }
}

// The CPU quota of this process's cgroup, in CPUs rounded up; 0 for none or none readable:
// cgroup v2's cpu.max, else v1's cpu.cfs_quota_us / cpu.cfs_period_us.
int CgroupCpuQuota() {
  bool found = false;
  std::string path = OwnCgroup("", &found);
  if (found && std::ifstream("/sys/fs/cgroup/cgroup.controllers").good()) {  // v2 mounted
    return QuotaAlong("/sys/fs/cgroup", path, [](const std::string& folder) {
      return CpusOfCpuMax(FirstLine((folder + "/cpu.max").c_str()));
    });
  }
  path = OwnCgroup("cpu", &found);
  if (!found) return 0;
  for (const char* mount : {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"}) {
    if (FirstLine((std::string(mount) + "/cpu.cfs_period_us").c_str()).empty()) continue;
    return QuotaAlong(mount, path, [](const std::string& folder) {
      const std::string q = FirstLine((folder + "/cpu.cfs_quota_us").c_str());
      const std::string p = FirstLine((folder + "/cpu.cfs_period_us").c_str());
      return q.empty() || p.empty() ? 0 : CpusOfCpuQuota(std::atoll(q.c_str()),
                                                         std::atoll(p.c_str()));
    });
  }
  return 0;
}

}  // namespace

int SolveThreadCount() {
  const char* v = std::getenv("DMPN_CPU_THREADS");
  if (v != nullptr && *v != '\0') {
    const std::string text(v);
    const int n = text.size() <= 4 && AllDigits(text) ? std::atoi(v) : 0;
    CHECK(n >= 1 && n <= kMaxCpuThreads) << "DMPN_CPU_THREADS='" << text
        << "': want the CPU solve's threads, a whole number from 1 to " << kMaxCpuThreads;
    return n;
  }
  int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t affinity;
  CPU_ZERO(&affinity);
  // (fails with more than CPU_SETSIZE CPUs on the machine: the machine's count then)
  if (sched_getaffinity(0, sizeof(affinity), &affinity) == 0 && CPU_COUNT(&affinity) > 0) {
    cpus = CPU_COUNT(&affinity);
  }
  const int quota = CgroupCpuQuota();
  if (quota > 0) cpus = std::min(cpus, quota);
  return std::max(1, std::min(cpus, kMaxCpuThreads));
}

namespace {

// A persistent team of worker threads for the row-split loops of a solve: starting a thread
// per loop costs tens of microseconds, and one CG iteration runs a dozen loops. Waking a thread
// blocked on a condition variable costs as much again (measured: ~60 us a loop on a 2-core
// VM, a fifth of an iteration at 600 x 800), so both sides first spin for a while (kSpins
// pauses, ~0.1-1 ms) on atomics, and block only when no work comes.
class WorkerTeam {
 public:
  static WorkerTeam& Get() {
    WorkerTeam* team = Current().load(std::memory_order_acquire);
    if (team != nullptr) return *team;
    std::lock_guard<std::mutex> lock(CreateMutex());
    team = Current().load(std::memory_order_relaxed);
    if (team == nullptr) {
      static const int registered = pthread_atfork(nullptr, nullptr, ForgetInChild);
      CHECK_EQ(registered, 0) << "pthread_atfork";
      team = new WorkerTeam();  // never destroyed: its threads live to exit
      Current().store(team, std::memory_order_release);
    }
    return *team;
  }
  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Runs job(t) for t in [0, n), t = 0 on the calling thread. Returns false, running nothing,
  // while another solve holds the team (the caller then runs serially).
  bool TryRun(int n, const std::function<void(int)>& job) {
    std::unique_lock<std::mutex> owner(owner_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    n = std::min(n, size());
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &job;
      n_ = n;
      pending_.store(n - 1);
      generation_.fetch_add(1);
    }
    start_.notify_all();  // no system call while every worker spins
    try {
      job(0);
    } catch (...) {  // (std::bad_alloc) the workers still use job's captures: wait for them
      WaitForWorkers();
      throw;
    }
    WaitForWorkers();
    return true;
  }

 private:
  void WaitForWorkers() {
    for (int s = 0; pending_.load() != 0; ++s) {
      if (s < kSpins) {
        Pause();
      } else {
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [this]() { return pending_.load() == 0; });
      }
    }
  }
  static const int kSpins = 1 << 14;
  static std::atomic<WorkerTeam*>& Current() {
    static std::atomic<WorkerTeam*> current{nullptr};
    return current;
  }
  static std::mutex& CreateMutex() {
    static std::mutex create;
    return create;
  }
  // A child forked after the team started (a fork-based data loader, multiprocessing) has
  // none of its threads, and its first TryRun would wait for them for ever: the child builds
  // a team of its own on first use. The parent's copy is left alone (its mutexes may be held).
  static void ForgetInChild() {
    Current().store(nullptr, std::memory_order_relaxed);
    new (&CreateMutex()) std::mutex();
  }
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }
  WorkerTeam() {
    const int n = SolveThreadCount() - 1;
    for (int i = 1; i <= n; ++i) workers_.emplace_back([this, i]() { Loop(i); });
    VLOG(1) << "SparseLaplacianSolve: the CPU solve's threads: " << n + 1 << " ("
            << std::thread::hardware_concurrency() << " CPUs on the machine; SolveThreadCount)";
  }
  void Loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      for (int s = 0; s < kSpins && generation_.load() == seen; ++s) Pause();
      const std::function<void(int)>* job;
      int n;
      {
        std::unique_lock<std::mutex> lock(m_);
        start_.wait(lock, [&]() { return generation_.load() != seen; });
        seen = generation_.load();
        job = job_;
        n = n_;
      }
      if (index < n) {
        (*job)(index);
        if (pending_.fetch_sub(1) == 1) {
          std::lock_guard<std::mutex> lock(m_);
          done_.notify_one();
        }
      }
    }
  }
  std::mutex owner_, m_;
  std::condition_variable start_, done_;
  const std::function<void(int)>* job_ = nullptr;  // guarded by m_
  int n_ = 0;                                      // guarded by m_
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::vector<std::thread> workers_;
};

// f(y0, y1, t) on blocks of the rows [0, rows), block t on thread t of the worker team (at
// most `threads` of them); all rows on the calling thread when the work is too small to share
// or the team is busy.
template <typename F>
void SplitRows(int rows, int work, int threads, F f) {
  const int T = (threads > 1 && work >= kParallelWork) ?
      std::min(std::min(threads, rows), WorkerTeam::Get().size()) : 1;
  auto part = [&](int t) {
    f(static_cast<int>(static_cast<int64_t>(rows) * t / T),
      static_cast<int>(static_cast<int64_t>(rows) * (t + 1) / T), t);
  };
  if (T <= 1 || !WorkerTeam::Get().TryRun(T, part)) {
    f(0, rows, 0);
  }
}

}  // namespace

template <typename F>
void GridMultigridSolver::ForRows(int rows, int work, F f) {
  SplitRows(rows, work, threads_, f);
}

void GridMultigridSolver::RearrangeRows(bool to_split, const double* in, double* out) {
  ForRows(H_, H_ * W_, [&](int y0, int y1, int) {
    // A block of rows of a row-major grid is itself a grid.
    Rearrange(y1 - y0, W_, to_split, in + y0 * W_, out + y0 * W_);
  });
}

bool GridMultigridSolver::Setup(int H, int W, std::vector<double>* ew,
    std::vector<double>* sw, std::vector<double>* diag, std::string* why, int threads) {
  H_ = H;
  W_ = W;
  threads_ = std::max(1, threads);
  overflow_ = false;
  ew_.swap(*ew);
  sw_.swap(*sw);
  diag_.swap(*diag);
  // Edges that would leave the grid do not exist; the kernels rely on their weights being 0.
  for (int y = 0; y < H; ++y) ew_[y * W + W - 1] = 0;
  std::fill(sw_.begin() + (H - 1) * W, sw_.begin() + H * W, 0.);
  // Coarsen in float64; keep a float32 copy of each level for the V-cycle. The levels and the
  // float64 coarse operators keep their storage from one forward pass to the next (resize, not
  // fresh vectors: fresh ones cost a page fault per 4 KB on every pass), and the loops take
  // rows on the worker team; every value is computed as before, bit for bit.
  int num = 0, h = H, w = W;
  const double *fe = ew_.data(), *fs = sw_.data(), *fd = diag_.data();  // level num, row-major
  while (true) {
    if (static_cast<int>(levels_.size()) <= num) levels_.emplace_back();
    Level& L = levels_[num];
    L.H = h;
    L.W = w;
    const int n = h * w;
    // The five arrays in one allocation, each starting 1088 bytes (mod 4 KB) after the one
    // before: arrays a multiple of 4 KB long (320 x 320 floats) would otherwise start at the
    // same address mod 4 KB, where the CPU mistakes a load for one depending on the smoother's
    // store to x at the same index ("4K aliasing"; the batch of 320 x 320 crops ran 2 % slower
    // with separately allocated arrays). x and b are written before they are read.
    const int stride = n + ((kArrayStagger - n % 1024) + 1024) % 1024;
    L.storage.resize(5 * static_cast<size_t>(stride));
    FloatArray* arrays[] = {&L.ew, &L.sw, &L.diag, &L.x, &L.b};
    for (int j = 0; j < 5; ++j) {
      arrays[j]->ptr = L.storage.data() + static_cast<size_t>(j) * stride;
      arrays[j]->n = n;
    }
    ForRows(h, n, [&](int y0, int y1, int) {
      for (int y = y0; y < y1; ++y) {
        for (int x = 0; x < w; ++x) {
          const int i = y * w + x, k = SplitIndex(w, y, x);
          L.ew[k] = static_cast<float>(fe[i]);
          L.sw[k] = static_cast<float>(fs[i]);
          L.diag[k] = RoundUpDiag(fd[i]);
        }
      }
    });
    ++num;
    if (n <= kMultigridCoarsestUnknowns) break;
    // P^T A P for 2 x 2 aggregates (GalerkinCell, the GPU's Coarsen too: an edge inside a
    // block cancels out of the block's row sum, diag - 2 w; an edge between blocks adds to
    // the coarse edge), by coarse rows.
    const int hc = (h + 1) / 2, wc = (w + 1) / 2;
    CoarseOperator& C = coarse_[num & 1];
    C.ew.resize(hc * wc);
    C.sw.resize(hc * wc);
    C.diag.resize(hc * wc);
    double *cew = C.ew.data(), *csw = C.sw.data(), *cdiag = C.diag.data();
    ForRows(hc, n, [&](int Y0, int Y1, int) {
      for (int I = Y0 * wc; I < Y1 * wc; ++I) {
        GalerkinCell(h, w, wc, I, fe, fs, fd, cew, csw, cdiag);
      }
    });
    fe = cew;
    fs = csw;
    fd = cdiag;
    h = hc;
    w = wc;
  }
  levels_.resize(num);
  // Coarsest level: dense Cholesky of the float64 operator. A non-positive pivot means A is
  // not positive definite.
  const int n = h * w;
  chol_.assign(n * n, 0.);
  for (int i = 0; i < n; ++i) {
    const int y = i / w, x = i % w;
    chol_[i * n + i] = fd[i];
    if (x + 1 < w) chol_[i * n + i + 1] = chol_[(i + 1) * n + i] = -fe[i];
    if (y + 1 < h) chol_[i * n + i + w] = chol_[(i + w) * n + i] = -fs[i];
  }
  for (int j = 0; j < n; ++j) {
    const double a = chol_[j * n + j];
    if (!std::isfinite(a)) {  // the coarsening summed degrees beyond double's range
      overflow_ = true;
      if (why) *why = "a degree of the coarsened system is not finite";
      return false;
    }
    if (!(a > 0)) {
      if (why) *why = "the system is singular (a part of the image not connected to any "
                      "known pixel?)";
      return false;
    }
    double d = CholeskyEliminated(n, w, chol_.data(), j, j);
    // The caller has ruled out singular systems (FindUnanchoredNode), so a pivot this small
    // is round-off in the elimination (weights spanning e^30 and more): it is clamped, which
    // keeps the preconditioner positive definite; the CG, on the exact operator, still decides
    // the accuracy.
    d = std::max(d, kPivotFloor * a);
    d = std::sqrt(d);
    chol_[j * n + j] = d;
    for (int i = j + 1; i < CholeskyBandEnd(n, w, j); ++i) {
      chol_[i * n + j] = CholeskyEliminated(n, w, chol_.data(), i, j) / d;
    }
  }
  // (After the Cholesky factor, which may read the float64 operator of level 0.) The CG's
  // operator must be exact. Where float32 holds the edge weights exactly (float
  // inputs, no shrinking), the CG reads them from level 0's float copy: a quarter less memory
  // traffic in its product with A. The CG works in the levels' layout.
  std::vector<char> exact(threads_, 1);
  ForRows(H, H * W, [&](int y0, int y1, int t) {
    bool same = true;
    for (int y = y0; y < y1 && same; ++y) {
      for (int x = 0; x < W && same; ++x) {
        const int i = y * W + x, k = SplitIndex(W, y, x);
        same = levels_[0].ew[k] == ew_[i] && levels_[0].sw[k] == sw_[i];
      }
    }
    exact[t] = same;
  });
  edges_in_float_ = std::all_of(exact.begin(), exact.end(), [](char e) { return e != 0; });
  // Into the SplitIndex layout through a kept buffer.
  auto to_split = [&](std::vector<double>* v) {
    split_buffer_.resize(H * W);
    RearrangeRows(true, v->data(), split_buffer_.data());
    v->swap(split_buffer_);
  };
  if (edges_in_float_) {  // handed back: the caller reuses their storage in its next pass
    ew->swap(ew_);
    sw->swap(sw_);
    std::vector<double>().swap(ew_);
    std::vector<double>().swap(sw_);
  } else {
    to_split(&ew_);
    to_split(&sw_);
  }
  to_split(&diag_);
  // The CG's vectors: each written before it is read (Solve).
  const int n0 = H * W;
  r_.resize(n0);
  x_.resize(n0);
  p_.resize(n0);
  q_.resize(n0);
  return true;
}

namespace {

// Successive over-relaxation of a pixel's Gauss-Seidel value.
inline float Relax(float old, float gs) { return old + kCpuSmootherOmega * (gs - old); }

// One red-black SOR half-sweep on row y: the pixels of `color` ((x + y) % 2), one half of the
// row in the SplitIndex layout.
DMPN_CPU_CLONES
void SmoothRow(const GridMultigridSolver::Level& L, float* x, int y, int color) {
  const int H = L.H, W = L.W;
  const float* b = L.b.data();
  const float* ew = L.ew.data();
  const float* sw = L.sw.data();
  const float* dg = L.diag.data();
  const int row = y * W;
  const int parity = (y + color) & 1;  // of the columns to update
  if (y > 0 && y + 1 < H) {
    InteriorRun runs[2];
    InteriorRuns(W, runs);
    if (parity == 0) {  // x = 0, without a west neighbour; x = 1 is at We
      const int east = runs[0].end;
      x[row] = Relax(x[row], (b[row] + (W > 1 ? ew[row] * x[row + east] : 0.f) +
                              sw[row - W] * x[row - W] + sw[row] * x[row + W]) / dg[row]);
    }
    const int i0 = row + runs[parity].begin, i1 = row + runs[parity].end;
    const int east = runs[parity].east, west = runs[parity].west;
    // The neighbours are of the other colour: never written by this loop.
#pragma GCC ivdep
    for (int i = i0; i < i1; ++i) {
      x[i] = Relax(x[i], (b[i] + ew[i] * x[i + east] + ew[i + west] * x[i + west] +
                          sw[i - W] * x[i - W] + sw[i] * x[i + W]) / dg[i]);
    }
  } else {
    for (int xx = parity; xx < W; xx += 2) {
      const int i = SplitIndex(W, y, xx);
      const int east = xx + 1 < W ? SplitIndex(W, y, xx + 1) : i;
      const int west = xx > 0 ? SplitIndex(W, y, xx - 1) : i;
      x[i] = Relax(x[i], GaussSeidelUpdate(H, W, y, xx, i, east, west, ew, sw, dg, b, x));
    }
  }
}

}  // namespace

// The half-sweeps colors[0..K) in one pass over the level, as a wavefront: while the front is
// at row y, half-sweep k updates row y - k, so each row is smoothed K times while it is in
// cache instead of being read from memory K times (the smoother is memory bound). Every update
// reads its neighbours at the same stage as K separate half-sweeps would: the result is the
// same, bit for bit. Threads take blocks of rows; half-sweep k leaves k rows on each side of
// a block boundary, which are finished after all blocks (a small wavefront per boundary).
void GridMultigridSolver::SmoothSweeps(Level* Lp, const int* colors, int K) {
  Level& L = *Lp;
  const int H = L.H;
  float* x = L.x.data();
  const int team = WorkerTeam::Get().size();
  auto front = [&](int a, int b, int lo_shift, int hi_shift) {
    // rows [a + k lo_shift, b - k hi_shift) for half-sweep k, front by front
    for (int y = a; y < b + K - 1; ++y) {
      for (int k = 0; k < K; ++k) {
        const int r = y - k;
        if (r >= a + k * lo_shift && r < b - k * hi_shift) SmoothRow(L, x, r, colors[k]);
      }
    }
  };
  // Blocks must be at least 2K rows high so that the boundary regions do not overlap.
  if (H < 2 * K * team) {
    front(0, H, 0, 0);
    return;
  }
  std::vector<std::pair<int, int> > blocks(team, std::make_pair(-1, -1));
  ForRows(H, H * L.W, [&](int y0, int y1, int t) {
    blocks[t] = std::make_pair(y0, y1);
    front(y0, y1, y0 > 0 ? 1 : 0, y1 < H ? 1 : 0);
  });
  for (size_t t = 0; t < blocks.size(); ++t) {
    const int a = blocks[t].first;
    if (a <= 0) continue;  // the top block, or a block not used
    // Half-sweep k still owes rows [a - k, a + k).
    for (int y = a; y < a + 2 * K - 2; ++y) {
      for (int k = 1; k < K; ++k) {
        const int r = y - k;
        if (r >= a - k && r < a + k) SmoothRow(L, x, r, colors[k]);
      }
    }
  }
}

namespace {

// C.b = P^T (L.b - A L.x) on the coarse rows [Y0, Y1): the residual of each fine row, then
// summed over the 2 x 2 aggregates.
DMPN_CPU_CLONES
void RestrictResidual(const GridMultigridSolver::Level& L, GridMultigridSolver::Level* C,
                      int Y0, int Y1) {
  const int H = L.H, W = L.W, Wc = C->W, We = (W + 1) / 2, Wce = (Wc + 1) / 2;
  std::vector<float> residual(W);
  float* r = residual.data();
  const float *ew = L.ew.data(), *sw = L.sw.data(), *dg = L.diag.data(), *x = L.x.data();
  for (int Y = Y0; Y < Y1; ++Y) {
    float* cb = &C->b[Y * Wc];
    std::fill(cb, cb + Wc, 0.f);
    for (int y = 2 * Y; y < std::min(H, 2 * Y + 2); ++y) {
      const float* b = &L.b[y * W];
      if (y == 0 || y == H - 1) {
        ApplyRows(H, W, ew, sw, dg, x, r, y, y + 1, y * W);
        for (int i = 0; i < W; ++i) r[i] = b[i] - r[i];
      } else {
        r[0] = b[0] - ApplyPixel<float>(H, W, ew, sw, dg, x, y, 0);
        InteriorRun runs[2];
        InteriorRuns(W, runs);
        const int row = y * W;
        float* r_level = r - row;  // r indexed as the level's vectors
        for (int k = 0; k < 2; ++k) {
          const int i0 = row + runs[k].begin, i1 = row + runs[k].end;
          const int east = runs[k].east, west = runs[k].west;
          // r is this function's own buffer (GCC cannot tell, and would not vectorise)
#pragma GCC ivdep
          for (int i = i0; i < i1; ++i) {  // in float: 8 wide with AVX2
            r_level[i] = L.b[i] - ApplyInterior<float>(W, east, west, ew, sw, dg, x, i);
          }
        }
      }
      // Coarse column X aggregates fine columns 2X (at X) and 2X + 1 (at We + X); coarse
      // column 2k is at k, 2k + 1 at Wce + k. Per coarse value: r[X] first, then r[We + X].
      const int Wo = W - We;
      for (int k = 0; 2 * k < Wc; ++k) cb[k] += r[2 * k];
      for (int k = 0; 2 * k < Wo; ++k) cb[k] += r[We + 2 * k];
      for (int k = 0; 2 * k + 1 < Wc; ++k) cb[Wce + k] += r[2 * k + 1];
      for (int k = 0; 2 * k + 1 < Wo; ++k) cb[Wce + k] += r[We + 2 * k + 1];
    }
  }
}

// L.x += scale P C.x on the fine rows [y0, y1). Fine columns 2X (at X) and 2X + 1 (at
// We + X) take coarse column X's value.
DMPN_CPU_CLONES
void ProlongAdd(const GridMultigridSolver::Level& C, GridMultigridSolver::Level* L, int y0,
                int y1) {
  const int W = L->W, Wc = C.W, We = (W + 1) / 2;
  std::vector<float> coarse(Wc);  // a coarse row in column order
  for (int y = y0; y < y1; ++y) {
    if (y == y0 || y % 2 == 0) Rearrange(1, Wc, false, &C.x[(y / 2) * Wc], coarse.data());
    float* x = &L->x[y * W];
    for (int j = 0; j < We; ++j) x[j] += kCoarseScale * coarse[j];
    for (int j = 0; We + j < W; ++j) x[We + j] += kCoarseScale * coarse[j];
  }
}

}  // namespace

void GridMultigridSolver::VCycle(int l) {
  Level& L = levels_[l];
  const int n = L.H * L.W;
  if (l + 1 == num_levels()) {
    // Forward and back substitution with the Cholesky factor, in float64.
    std::vector<double> t(n);  // in row-major order, as the factor
    Rearrange(L.H, L.W, false, L.b.data(), t.data());
    CholeskySolve(n, L.W, chol_.data(), 0, 1, t.data());
    Rearrange(L.H, L.W, true, t.data(), L.x.data());
    return;
  }
  std::fill(L.x.begin(), L.x.end(), 0.f);
  int pre[2 * kCpuMultigridSweeps], post[2 * kCpuMultigridSweeps];
  for (int s = 0; s < kCpuMultigridSweeps; ++s) {
    pre[2 * s] = 0;
    pre[2 * s + 1] = 1;
    post[2 * s] = 1;
    post[2 * s + 1] = 0;
  }
  SmoothSweeps(&L, pre, 2 * kCpuMultigridSweeps);
  // Residual and restriction in one pass: C.b = P^T (b - A x), by coarse rows.
  Level& C = levels_[l + 1];
  const int H = L.H;
  ForRows(C.H, n, [&](int Y0, int Y1, int) { RestrictResidual(L, &C, Y0, Y1); });
  VCycle(l + 1);
  ForRows(H, n, [&](int y0, int y1, int) { ProlongAdd(C, &L, y0, y1); });
  // Post-smoothing in the opposite colour order keeps the preconditioner symmetric.
  SmoothSweeps(&L, post, 2 * kCpuMultigridSweeps);
}

namespace {

// The CG's vector loops over [i0, i1).
// x += a p, r -= a q, and float(r) into rf when given (the V-cycle's input); returns r . r.
DMPN_CPU_CLONES
double CgUpdate(int i0, int i1, double a, const double* p, const double* q, double* x,
                double* r, float* rf) {
  const double rr = SumBy4(i0, i1, [&](int i) {
    x[i] += a * p[i];
    r[i] -= a * q[i];
    return r[i] * r[i];
  });
  if (rf) {
    for (int i = i0; i < i1; ++i) rf[i] = static_cast<float>(r[i]);
  }
  return rr;
}

// r . z with the V-cycle's float z.
DMPN_CPU_CLONES
double DotMixed(int i0, int i1, const double* r, const float* z) {
  return SumBy4(i0, i1, [&](int i) { return r[i] * static_cast<double>(z[i]); });
}

// p = z + beta p, or p = z when first.
DMPN_CPU_CLONES
void UpdateDirection(int i0, int i1, const float* z, double beta, bool first, double* p) {
  if (first) {
    for (int i = i0; i < i1; ++i) p[i] = z[i];
  } else {
    for (int i = i0; i < i1; ++i) p[i] = static_cast<double>(z[i]) + beta * p[i];
  }
}

}  // namespace

bool GridMultigridSolver::Solve(const double* b, double* x_out, double tol, int max_iter,
    bool multigrid, Stats* stats) {
  const int H = H_, W = W_, n = H * W;
  Level& L0 = levels_[0];
  double* r = r_.data();
  double* x = x_.data();  // in the SplitIndex layout, as every vector below
  if (!multigrid) z_.resize(n);  // Jacobi's z; the V-cycle's z is its own float solution
  double* z = z_.data();
  double* p = p_.data();
  double* q = q_.data();
  const double* dg = diag_.data();
  // Reductions: each row's sum goes to part[row], and sum_parts adds them in row order, so a
  // result does not depend on how the rows were split between threads: the solve gives the
  // same bits on any number of cores (a sum per thread had differed by ~1e-9 between them).
  std::vector<double> part(H, 0.);
  auto sum_parts = [&]() {
    double s = 0;
    for (int y = 0; y < H; ++y) s += part[y];
    return s;
  };
  float* rf = multigrid ? L0.b.data() : nullptr;
  // By row blocks: x = 0, r = b in the layout, float(r) for the V-cycle, and ||b||^2.
  ForRows(H, n, [&](int y0, int y1, int) {
    const int i0 = y0 * W, i1 = y1 * W;
    std::fill(x + i0, x + i1, 0.);
    Rearrange(y1 - y0, W, true, b + i0, r + i0);
    if (rf) {
      for (int i = i0; i < i1; ++i) rf[i] = static_cast<float>(r[i]);
    }
    for (int y = y0; y < y1; ++y) {
      double s = 0;
      for (int i = y * W; i < (y + 1) * W; ++i) s += b[i] * b[i];
      part[y] = s;
    }
  });
  // r = s r, exactly (a power of two); returns r.r.
  auto scale_r = [&](double s) {
    ForRows(H, n, [&](int y0, int y1, int) {
      for (int y = y0; y < y1; ++y) {
        double rr = 0;
        for (int i = y * W; i < (y + 1) * W; ++i) {
          r[i] *= s;
          if (rf) rf[i] = static_cast<float>(r[i]);
          rr += r[i] * r[i];
        }
        part[y] = rr;
      }
    });
    return sum_parts();
  };
  // r = norm_scale prescale b (powers of two, nearly always 1). Their product can overflow
  // (2^600 times up to 2^474), so they are undone one after the other.
  double bb = sum_parts();
  const double prescale = RightHandSidePrescale(bb);
  if (prescale != 1) bb = scale_r(prescale);
  double bnorm = std::sqrt(bb);
  const double norm_scale = RightHandSideScale(bnorm);
  if (norm_scale != 1) {
    scale_r(norm_scale);
    bnorm *= norm_scale;
  }
  // Every return hands x back in row-major order (and its scale undone).
  auto done = [&](bool converged) {
    if (prescale != 1 || norm_scale != 1) {
      ForRows(H, n, [&](int y0, int y1, int) {
        for (int i = y0 * W; i < y1 * W; ++i) x[i] = x[i] / norm_scale / prescale;
      });
    }
    RearrangeRows(false, x, x_out);
    return converged;
  };
  stats->iterations = 0;
  stats->relative_residual = 0;
  if (bnorm == 0) return done(true);
  // z = M r; returns r . z. The V-cycle reads float(r) from L0.b, which the CG update writes,
  // and its float solution L0.x is z itself (never copied).
  auto precondition = [&]() {
    if (multigrid) {
      VCycle(0);
      ForRows(H, n, [&](int y0, int y1, int) {
        for (int y = y0; y < y1; ++y) part[y] = DotMixed(y * W, (y + 1) * W, r, L0.x.data());
      });
    } else {
      ForRows(H, n, [&](int y0, int y1, int) {
        for (int y = y0; y < y1; ++y) {
          double s = 0;
          for (int i = y * W; i < (y + 1) * W; ++i) {
            z[i] = r[i] / dg[i];
            s += r[i] * z[i];
          }
          part[y] = s;
        }
      });
    }
    return sum_parts();
  };
  // p = z + beta p (p = z first: p may hold anything from an earlier solve)
  auto update_p = [&](bool first, double beta) {
    ForRows(H, n, [&](int y0, int y1, int) {
      if (multigrid) {
        UpdateDirection(y0 * W, y1 * W, L0.x.data(), beta, first, p);
      } else {
        for (int i = y0 * W; i < y1 * W; ++i) p[i] = first ? z[i] : z[i] + beta * p[i];
      }
    });
  };
  double rz = precondition();
  update_p(true, 0.);
  for (int k = 1; k <= max_iter; ++k) {
    ForRows(H, n, [&](int y0, int y1, int) {
      for (int y = y0; y < y1; ++y) {
        part[y] = edges_in_float_ ?
            ApplyGridRows(H, W, L0.ew.data(), L0.sw.data(), dg, p, q, y, y + 1) :
            ApplyGridRows(H, W, ew_.data(), sw_.data(), dg, p, q, y, y + 1);
      }
    });
    const double pq = sum_parts();
    stats->iterations = k;
    if (!(pq > 0)) {
      stats->relative_residual = std::numeric_limits<double>::quiet_NaN();
      return done(false);  // breakdown: A is not positive definite
    }
    const double a = rz / pq;
    ForRows(H, n, [&](int y0, int y1, int) {
      for (int y = y0; y < y1; ++y) part[y] = CgUpdate(y * W, (y + 1) * W, a, p, q, x, r, rf);
    });
    const double rel = std::sqrt(sum_parts()) / bnorm;
    stats->relative_residual = rel;
    if (!std::isfinite(rel)) return done(false);
    if (rel <= tol) return done(true);
    const double rz_new = precondition();
    const double beta = rz_new / rz;
    rz = rz_new;
    update_p(false, beta);
  }
  return done(false);
}

// ---------------------------------------------------------------------------------------------
// Shrinking: aggregation onto the s-times coarser grid and bilinear upsampling (pixel centres,
// clamped), as in dmpn/propagation.py.

namespace {

struct Interp1D {
  std::vector<int> lo, hi;
  std::vector<double> frac;
  Interp1D(int n, int nc, int s) : lo(n), hi(n), frac(n) {
    for (int i = 0; i < n; ++i) {
      double pos = (i + 0.5) / s - 0.5;
      pos = std::min<double>(std::max<double>(pos, 0.), nc - 1);
      lo[i] = static_cast<int>(std::floor(pos));
      hi[i] = std::min(lo[i] + 1, nc - 1);
      frac[i] = pos - lo[i];
    }
  }
};

}  // namespace

bool ParseGpuMultigrid(const char* text, GpuMultigridTuning* tuning) {
  const char* p = text;
  std::string fields[4], block_sweeps;
  for (int f = 0; f < 3; ++f) {
    bool dot = false;
    while (std::isdigit(static_cast<unsigned char>(*p)) || (f == 1 && *p == '.' && !dot)) {
      dot = dot || *p == '.';
      fields[f] += *p++;
    }
    if (fields[f].empty() || !std::isdigit(static_cast<unsigned char>(fields[f][0]))) {
      return false;
    }
    if (f == 0 && *p == '/') {  // BLOCK_SWEEPS
      ++p;
      while (std::isdigit(static_cast<unsigned char>(*p))) block_sweeps += *p++;
      if (block_sweeps.empty()) return false;
    }
    if (f < 2 && *p++ != ',') return false;
  }
  static const char kTiled[] = ",tiled";
  static const char kFloat[] = ",float";
  const bool tiles = std::strncmp(p, kTiled, sizeof(kTiled) - 1) == 0;
  if (tiles) {
    p += sizeof(kTiled) - 1;
    if (*p == ',' && std::isdigit(static_cast<unsigned char>(p[1]))) {  // MIN_TILES
      ++p;
      while (std::isdigit(static_cast<unsigned char>(*p))) fields[3] += *p++;
    }
  }
  const bool single = std::strcmp(p, kFloat) == 0;
  if (single) p += sizeof(kFloat) - 1;
  if (*p) return false;
  // one digit; within int
  if (fields[0].size() > 1 || block_sweeps.size() > 1 || fields[2].size() > 9 ||
      fields[3].size() > 9) {
    return false;
  }
  const int s = std::atoi(fields[0].c_str());
  const int bs = block_sweeps.empty() ? s : std::atoi(block_sweeps.c_str());
  const double w = std::atof(fields[1].c_str());
  if (s < 1 || s > kMaxGpuMultigridSweeps || bs > kMaxGpuMultigridSweeps || !(w > 0 && w < 2)) {
    return false;
  }
  tuning->sweeps = s;
  tuning->block_sweeps = bs;
  tuning->omega = w;
  tuning->block_unknowns = std::atoi(fields[2].c_str());
  tuning->tiled = tiles;
  tuning->min_tiles = fields[3].empty() ? 0 : std::atoi(fields[3].c_str());
  tuning->float32 = single;
  return true;
}

template <typename Dtype>
int FindUnanchoredNode(int H, int W, int s, const Dtype* trimap, const double* ew,
                       const double* sw) {
  const int Hc = (H + s - 1) / s, Wc = (W + s - 1) / s, nc = Hc * Wc;
  std::vector<char> reached(nc, 0);
  std::vector<int> queue;
  queue.reserve(nc);
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const double t = trimap[y * W + x];
      const int I = (y / s) * Wc + x / s;
      if (TrimapKnown(t) && !reached[I]) {
        reached[I] = 1;
        queue.push_back(I);
      }
    }
  }
  for (size_t q = 0; q < queue.size(); ++q) {  // breadth first over edges of weight > 0
    const int I = queue[q], Y = I / Wc, X = I % Wc;
    const int neighbour[4] = {I + 1, I - 1, I + Wc, I - Wc};
    const bool linked[4] = {X + 1 < Wc && ew[I] > 0, X > 0 && ew[I - 1] > 0,
                            Y + 1 < Hc && sw[I] > 0, Y > 0 && sw[I - Wc] > 0};
    for (int k = 0; k < 4; ++k) {
      if (linked[k] && !reached[neighbour[k]]) {
        reached[neighbour[k]] = 1;
        queue.push_back(neighbour[k]);
      }
    }
  }
  for (int I = 0; I < nc; ++I) {
    if (!reached[I]) return I;
  }
  return -1;
}

template int FindUnanchoredNode<float>(int, int, int, const float*, const double*,
                                       const double*);
template int FindUnanchoredNode<double>(int, int, int, const double*, const double*,
                                        const double*);

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::UnanchoredMessage(int node) const {
  const int y = (node / Wc_) * shrink_, x = (node % Wc_) * shrink_;
  std::ostringstream m;
  m << "pixel (" << y << ", " << x << ")";
  if (shrink_ > 1) m << " (the " << shrink_ << " x " << shrink_ << " block from it)";
  m << " is not connected to any known pixel by affinities > 0, so alpha is undefined there "
       "and the system (L + C) is singular";
  return m.str();
}

template <typename Dtype>
SparseLaplacianSolveLayer<Dtype>::~SparseLaplacianSolveLayer() {
  FreeGpuState();
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::InvalidInputMessage(const Dtype* w,
    const Dtype* trimap) const {
  const int H = H_, W = W_, HW = H * W;
  std::ostringstream m;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const int i = y * W + x;
      const double t = trimap[i];
      if (!TrimapValid(t)) {
        m << "trimap value " << t << " at (" << y << ", " << x << ") is not in [0, 1] "
             "(0 background, 1 foreground, between unknown)";
        return m.str();
      }
      const double east = x + 1 < W ? static_cast<double>(w[i]) : 0.;
      const double south = y + 1 < H ? static_cast<double>(w[HW + i]) : 0.;
      if (!AffinityValid(east)) {
        m << "affinity " << east << " of the edge (" << y << ", " << x << ")-(" << y << ", "
          << x + 1 << ") is not a finite value >= 0";
        return m.str();
      }
      if (!AffinityValid(south)) {
        m << "affinity " << south << " of the edge (" << y << ", " << x << ")-(" << y + 1
          << ", " << x << ") is not a finite value >= 0";
        return m.str();
      }
    }
  }
  return std::string();
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::NonFiniteTopDiffMessage(
    const Dtype* top_diff) const {
  for (int i = 0; i < H_ * W_; ++i) {
    if (!std::isfinite(top_diff[i])) {
      std::ostringstream m;
      m << "the gradient from above (top diff) is " << top_diff[i] << " at (" << i / W_
        << ", " << i % W_ << ")";
      return m.str();
    }
  }
  return std::string();
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::NotConvergedMessage(const char* pass,
    const GridMultigridSolver::Stats& s, const Dtype* w) const {
  std::ostringstream m;
  m << "the " << pass << " solve did not converge: relative residual " << s.relative_residual
    << " after " << s.iterations << " iterations (tolerance " << tol_ << ")";
  // With valid inputs (checked before) A is positive definite in exact arithmetic: a residual
  // that is not finite (or a CG breakdown, reported as nan) is an overflow where the affinities
  // are huge, and otherwise rounding on a field of extreme contrast.
  if (!std::isfinite(s.relative_residual)) {
    double smallest;
    const double largest = AffinityRange(w, &smallest, NULL);
    if (largest > kOverflowingAffinity) {
      m << ": " << TooLargeMessage(w);
    } else {
      m << ": the iteration broke down (the system lost positive definiteness to rounding; the "
        << "largest affinity is " << largest << ", the smallest nonzero " << smallest
        << ": a contrast this high is beyond float arithmetic)";
    }
  } else {
    // A stall: say how far the affinities spread, the conditioning's main driver.
    double smallest;
    const double largest = AffinityRange(w, &smallest, NULL);
    if (largest > 0 && smallest > 0) {
      const double span = std::log(largest / smallest);
      m << ": the affinities span " << smallest << " to " << largest << " (e^" << span << ")";
      if (span > 2 * 10.5) {  // beyond what the default exponent_bound (10) lets through
        m << ", beyond the default exponent_bound's e^20; at such contrast the float32 "
          << "multigrid preconditioner can stall: lower exponent_bound, or use solver: "
          << "JACOBI_PCG with more max_iterations";
      }
    }
  }
  return m.str();
}

template <typename Dtype>
double SparseLaplacianSolveLayer<Dtype>::AffinityRange(const Dtype* w, double* smallest,
    std::string* edge) const {
  const int H = H_, W = W_, HW = H * W;
  double largest = -1, least = std::numeric_limits<double>::infinity();
  int at = 0, channel = 0;
  for (int i = 0; i < HW; ++i) {
    const int y = i / W, x = i % W;
    for (int c = 0; c < 2; ++c) {
      if (c == 0 ? x + 1 >= W : y + 1 >= H) continue;  // a padding entry, no edge
      const double v = w[c * HW + i];
      if (v > largest) { largest = v; at = i; channel = c; }
      if (v > 0 && v < least) least = v;
    }
  }
  if (smallest) *smallest = least;
  if (edge) {
    const int y = at / W, x = at % W;
    std::ostringstream e;
    e << "(" << y << ", " << x << ")-(" << y + channel << ", " << x + 1 - channel << ")";
    *edge = e.str();
  }
  return largest;
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::TooLargeMessage(const Dtype* w) const {
  std::string edge;
  const double largest = AffinityRange(w, NULL, &edge);
  std::ostringstream m;
  m << "the affinities are too large: the largest is " << largest << " at the edge " << edge
    << " (AffinityExp's default exponent_bound, 10, keeps them within e^10)";
  return m.str();
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::DegreeOverflowMessage(const Dtype* w) const {
  return "a pixel's degree (the sum of its affinities and c) is not finite: " +
         TooLargeMessage(w);
}

template <typename Dtype>
std::string SparseLaplacianSolveLayer<Dtype>::Where(int n) const {
  std::ostringstream s;
  s << this->type() << " layer '" << this->layer_param_.name() << "', batch item " << n << ": ";
  return s.str();
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const SparseLaplacianSolveParameter& p = this->layer_param_.sparse_laplacian_solve_param();
  c_ = p.c();
  shrink_ = p.shrink();
  tol_ = p.tolerance();
  max_iter_ = p.max_iterations();
  multigrid_ = p.solver() == SparseLaplacianSolveParameter_Solver_MULTIGRID_PCG;
  // c and shrink: the Python layer's rules are the same (layers/sparse_laplacian_solve.py).
  // An infinite c made every known pixel's degree infinite and the error a misleading
  // "singular"; an infinite tolerance stopped every solve at once.
  CHECK(std::isfinite(c_) && c_ > 0) << this->type() << " layer '"
      << this->layer_param_.name() << "': c must be a finite number > 0, got " << c_;
  CHECK_GE(shrink_, 1) << this->type() << " layer '" << this->layer_param_.name()
      << "': shrink must be >= 1";
  CHECK(std::isfinite(tol_) && tol_ > 0) << this->type() << " layer '"
      << this->layer_param_.name() << "': tolerance must be a finite number > 0, got " << tol_;
  CHECK_GT(max_iter_, 0) << this->type() << " layer '" << this->layer_param_.name()
      << "': max_iterations must be > 0";
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CheckBottomsNotEmpty(*this, bottom);
  CHECK_EQ(bottom[0]->num_axes(), 4) << this->type() << " layer '"
      << this->layer_param_.name() << "': affinities must be N x 2 x H x W";
  CHECK_EQ(bottom[0]->channels(), 2) << this->type() << " layer '"
      << this->layer_param_.name() << "': affinities must have 2 channels, got "
      << bottom[0]->shape_string();
  CHECK(bottom[1]->num_axes() == 4 && bottom[1]->num() == bottom[0]->num()
      && bottom[1]->channels() == 1 && bottom[1]->height() == bottom[0]->height()
      && bottom[1]->width() == bottom[0]->width()) << this->type() << " layer '"
      << this->layer_param_.name() << "': trimap must be " << bottom[0]->num() << " x 1 x "
      << bottom[0]->height() << " x " << bottom[0]->width() << ", got "
      << bottom[1]->shape_string();
  H_ = bottom[0]->height();
  W_ = bottom[0]->width();
  // A block of full size along each side (dmpn.propagation.check_shrink: the same rule).
  CHECK_LE(shrink_, std::min(H_, W_)) << this->type() << " layer '"
      << this->layer_param_.name() << "': shrink " << shrink_ << " is larger than the " << H_
      << " x " << W_ << " affinity grid (bottom[0]); at most min(H, W) = " << std::min(H_, W_);
  Hc_ = (H_ + shrink_ - 1) / shrink_;
  Wc_ = (W_ + shrink_ - 1) / shrink_;
  top[0]->Reshape(bottom[0]->num(), 1, H_, W_);
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::ForwardItem(int n, const Dtype* w, const Dtype* trimap,
    Dtype* alpha) {
  const int H = H_, W = W_, HW = H * W, s = shrink_, Wc = Wc_, nc = Hc_ * Wc_;
  // The item's buffers keep their storage from pass to pass (Setup hands storage back).
  SystemBuffers& buf = buffers_[n];
  std::vector<double>&ew = buf.ew, &sw = buf.sw, &diag = buf.diag, &rhs = buf.rhs;
  ew.resize(nc);
  sw.resize(nc);
  diag.resize(nc);
  rhs.resize(nc);
  int known = 0;
  bool zero_edge = false;  // only then can a region be cut off from every known pixel
  // Unshrunk, the usual case: each pixel gathers its diagonal from its north and west
  // neighbours' edges and its own, in the order the general loop below adds them (the same
  // values, bit for bit), so that row blocks run on the worker team. An invalid input sends
  // the item to the general loop, which names the first one.
  bool built = false;
  if (s == 1) {
    const int T = std::max(1, threads_per_item_);
    std::vector<int> known_part(T, 0);
    std::vector<char> bad_part(T, 0), zero_part(T, 0);
    SplitRows(H, HW, T, [&](int y0, int y1, int t) {
      int k = 0;
      bool bad = false, zero = false;
      for (int y = y0; y < y1; ++y) {
        for (int x = 0; x < W; ++x) {
          const int i = y * W + x;
          const double tv = trimap[i];
          const double east = x + 1 < W ? static_cast<double>(w[i]) : 0.;
          const double south = y + 1 < H ? static_cast<double>(w[HW + i]) : 0.;
          bad |= !TrimapValid(tv) || !AffinityValid(east) || !AffinityValid(south);
          zero |= (x + 1 < W && east == 0) || (y + 1 < H && south == 0);
          double d = 0;
          if (y > 0) d += static_cast<double>(w[HW + i - W]);
          if (x > 0) d += static_cast<double>(w[i - 1]);
          const bool is_known = TrimapKnown(tv);
          if (is_known) {
            ++k;
            d += c_;
          }
          rhs[i] = TrimapForeground(tv) ? c_ : 0.;
          if (x + 1 < W) d += east;
          if (y + 1 < H) d += south;
          bad |= !std::isfinite(d);  // overflow: the general loop below names it
          ew[i] = east;
          sw[i] = south;
          diag[i] = d;
        }
      }
      known_part[t] = k;
      bad_part[t] = bad;
      zero_part[t] = zero;
    });
    built = std::none_of(bad_part.begin(), bad_part.end(), [](char b) { return b != 0; });
    zero_edge = std::any_of(zero_part.begin(), zero_part.end(), [](char z) { return z != 0; });
    for (int t = 0; t < T; ++t) known += known_part[t];
  }
  if (!built) {
    const std::string invalid = InvalidInputMessage(w, trimap);
    CHECK(invalid.empty()) << Where(n) << invalid;
    known = 0;
    std::fill(ew.begin(), ew.end(), 0.);
    std::fill(sw.begin(), sw.end(), 0.);
    std::fill(diag.begin(), diag.end(), 0.);
    std::fill(rhs.begin(), rhs.end(), 0.);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x) {
        const int i = y * W + x;
        const int I = (y / s) * Wc + x / s;
        const double t = trimap[i];
        if (TrimapKnown(t)) {
          ++known;
          diag[I] += c_;
          if (TrimapForeground(t)) rhs[I] += c_;
        }
        if (x + 1 < W) {
          const double e = w[i];
          // The edge joins two pixels of the solve grid only where it crosses a block border.
          if ((x + 1) % s == 0) {
            ew[I] += e;
            diag[I] += e;
            diag[I + 1] += e;
          }
        }
        if (y + 1 < H) {
          const double e = w[HW + i];
          if ((y + 1) % s == 0) {
            sw[I] += e;
            diag[I] += e;
            diag[I + Wc] += e;
          }
        }
      }
    }
  }
  CHECK_GT(known, 0) << Where(n) << "the trimap has no known pixel (0 or 1), so the system "
      "(L + C) is singular";
  if (!built) {  // (the fast path has checked its degrees and edges)
    for (int I = 0; I < nc; ++I) {
      CHECK(std::isfinite(diag[I])) << Where(n) << DegreeOverflowMessage(w);
      zero_edge = zero_edge || ((I % Wc) + 1 < Wc && ew[I] == 0) || (I + Wc < nc && sw[I] == 0);
    }
  }
  if (zero_edge) {
    const int node = FindUnanchoredNode(H, W, s, trimap, ew.data(), sw.data());
    CHECK_LT(node, 0) << Where(n) << UnanchoredMessage(node);
  }
  std::string why;
  GridMultigridSolver& solver = solvers_[n];
  if (!solver.Setup(Hc_, Wc_, &ew, &sw, &diag, &why, threads_per_item_)) {
    LOG(FATAL) << Where(n) << (solver.overflow() ? DegreeOverflowMessage(w) : why);
  }
  vector<double>& a = alpha_grid_[n];
  a.assign(nc, 0.);
  GridMultigridSolver::Stats stats;
  const bool ok = solver.Solve(rhs.data(), a.data(), tol_, max_iter_, multigrid_, &stats);
  fwd_stats_[n] = stats;
  VLOG(1) << Where(n) << "forward solve: " << solver.num_levels() << " levels, "
          << stats.iterations << " iterations, relative residual " << stats.relative_residual;
  CHECK(ok) << Where(n) << NotConvergedMessage("forward", stats, w);
  if (s == 1) {
    SplitRows(H, HW, threads_per_item_, [&](int y0, int y1, int) {
      for (int i = y0 * W; i < y1 * W; ++i) alpha[i] = static_cast<Dtype>(a[i]);
    });
  } else {
    Interp1D iy(H, Hc_, s), ix(W, Wc_, s);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x) {
        const double fy = iy.frac[y], fx = ix.frac[x];
        const double* r0 = &a[iy.lo[y] * Wc];
        const double* r1 = &a[iy.hi[y] * Wc];
        alpha[y * W + x] = static_cast<Dtype>(
            (1 - fy) * ((1 - fx) * r0[ix.lo[x]] + fx * r0[ix.hi[x]]) +
            fy * ((1 - fx) * r1[ix.lo[x]] + fx * r1[ix.hi[x]]));
      }
    }
  }
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::BackwardItem(int n, const Dtype* w,
    const Dtype* top_diff, Dtype* w_diff) {
  const int H = H_, W = W_, HW = H * W, s = shrink_, Wc = Wc_, nc = Hc_ * Wc_;
  std::vector<double>&rhs = buffers_[n].rhs, &g = buffers_[n].g;
  rhs.resize(nc);
  g.resize(nc);  // Solve writes all of it
  if (s == 1) {
    SplitRows(H, HW, threads_per_item_, [&](int y0, int y1, int) {
      for (int i = y0 * W; i < y1 * W; ++i) rhs[i] = top_diff[i];
    });
  } else {  // U^T top_diff
    std::fill(rhs.begin(), rhs.end(), 0.);
    Interp1D iy(H, Hc_, s), ix(W, Wc_, s);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x) {
        const double d = top_diff[y * W + x], fy = iy.frac[y], fx = ix.frac[x];
        rhs[iy.lo[y] * Wc + ix.lo[x]] += (1 - fy) * (1 - fx) * d;
        rhs[iy.lo[y] * Wc + ix.hi[x]] += (1 - fy) * fx * d;
        rhs[iy.hi[y] * Wc + ix.lo[x]] += fy * (1 - fx) * d;
        rhs[iy.hi[y] * Wc + ix.hi[x]] += fy * fx * d;
      }
    }
  }
  GridMultigridSolver::Stats stats;
  const bool ok = solvers_[n].Solve(rhs.data(), g.data(), tol_, max_iter_, multigrid_, &stats);
  bwd_stats_[n] = stats;
  VLOG(1) << Where(n) << "backward solve: " << stats.iterations << " iterations, relative "
          << "residual " << stats.relative_residual;
  if (!ok) {  // a non-finite gradient from above is the likelier cause
    const std::string non_finite = NonFiniteTopDiffMessage(top_diff);
    CHECK(non_finite.empty()) << Where(n) << non_finite;
  }
  CHECK(ok) << Where(n) << NotConvergedMessage("backward", stats, w);
  const vector<double>& a = alpha_grid_[n];
  // dE/dw_ij = -(g_i - g_j)(alpha_i - alpha_j) on the solve grid; a fine edge gets the value
  // of the solve-grid edge it is part of, or 0 inside a block.
  SplitRows(H, HW, threads_per_item_, [&](int y0, int y1, int) {
    for (int y = y0; y < y1; ++y) {
      for (int x = 0; x < W; ++x) {
        const int i = y * W + x;
        const int I = (y / s) * Wc + x / s;
        w_diff[i] = (x + 1 < W && (x + 1) % s == 0) ?
            static_cast<Dtype>(-(g[I] - g[I + 1]) * (a[I] - a[I + 1])) : Dtype(0);
        w_diff[HW + i] = (y + 1 < H && (y + 1) % s == 0) ?
            static_cast<Dtype>(-(g[I] - g[I + Wc]) * (a[I] - a[I + Wc])) : Dtype(0);
      }
    }
  });
}

namespace {

// Runs f(n) for n in [0, count) on the worker team (batch items are independent systems);
// serially when the team is busy or there is one item.
template <typename F>
void ParallelFor(int count, F f) {
  const int T = std::min(count, WorkerTeam::Get().size());
  auto items = [&](int t) { for (int n = t; n < count; n += T) f(n); };
  if (T <= 1 || !WorkerTeam::Get().TryRun(T, items)) {
    for (int n = 0; n < count; ++n) f(n);
  }
}

}  // namespace

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::CheckForwardMatches(const Blob<Dtype>& affinities) const {
  CHECK(!solved_shape_.empty()) << this->type() << " layer '" << this->layer_param_.name()
      << "': Backward without a Forward";
  if (solved_shape_ == affinities.shape()) return;
  auto text = [](const vector<int>& shape) {
    std::ostringstream s;
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? " x " : "") << shape[i];
    return s.str();
  };
  LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name() << "': Backward "
      << "without a Forward at this shape: the last Forward solved affinities "
      << text(solved_shape_) << ", bottom[0] is now " << text(affinities.shape())
      << " (a Reshape in between)";
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num();
  solved_shape_ = bottom[0]->shape();
  // One worker team serves either the batch items (several) or the rows of one solve.
  threads_per_item_ = num == 1 ? WorkerTeam::Get().size() : 1;
  solvers_.resize(num);
  alpha_grid_.resize(num);
  buffers_.resize(num);
  fwd_stats_.resize(num);
  bwd_stats_.resize(num);
  const Dtype* w = bottom[0]->cpu_data();
  const Dtype* t = bottom[1]->cpu_data();
  Dtype* alpha = top[0]->mutable_cpu_data();
  ParallelFor(num, [&](int n) {
    ForwardItem(n, w + bottom[0]->offset(n), t + bottom[1]->offset(n),
                alpha + top[0]->offset(n));
  });
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name()
               << "' cannot backpropagate to the trimap";
  }
  if (!propagate_down[0]) return;
  const int num = bottom[0]->num();
  CheckForwardMatches(*bottom[0]);
  CHECK_EQ(static_cast<int>(solvers_.size()), num) << this->type() << " layer '"
      << this->layer_param_.name() << "': Backward without a Forward on the CPU";
  const Dtype* w = bottom[0]->cpu_data();
  const Dtype* top_diff = top[0]->cpu_diff();
  Dtype* w_diff = bottom[0]->mutable_cpu_diff();
  ParallelFor(num, [&](int n) {
    BackwardItem(n, w + bottom[0]->offset(n), top_diff + top[0]->offset(n),
                 w_diff + bottom[0]->offset(n));
  });
}

#ifdef CPU_ONLY
template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::FreeGpuState() {}
STUB_GPU(SparseLaplacianSolveLayer);
#endif

INSTANTIATE_CLASS(SparseLaplacianSolveLayer);
REGISTER_LAYER_CLASS(SparseLaplacianSolve);

}  // namespace caffe
