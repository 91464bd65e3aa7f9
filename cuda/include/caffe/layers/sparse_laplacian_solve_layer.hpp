#ifndef CAFFE_SPARSE_LAPLACIAN_SOLVE_LAYER_HPP_
#define CAFFE_SPARSE_LAPLACIAN_SOLVE_LAYER_HPP_

#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/layers/host_device.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/// Trimap values within this of 0 or 1 are known (dmpn/propagation.py's KNOWN_TOL): 128/255
/// is unknown. MattingLoss uses the same rule for its unknown region.
const double kTrimapKnownTol = 1e-3;

/// The trimap's conventions, one definition for the CPU and GPU paths: a value is valid in
/// [0, 1] (NaN is not), known within kTrimapKnownTol of 0 or 1, foreground near 1.
DMPN_HOST_DEVICE inline bool TrimapValid(double t) { return t >= 0 && t <= 1; }
DMPN_HOST_DEVICE inline bool TrimapForeground(double t) { return t >= 1 - kTrimapKnownTol; }
DMPN_HOST_DEVICE inline bool TrimapKnown(double t) {
  return t <= kTrimapKnownTol || TrimapForeground(t);
}
/// An affinity (edge weight) is valid finite and >= 0 (NaN and infinity fail the comparisons).
DMPN_HOST_DEVICE inline bool AffinityValid(double e) { return e >= 0 && e <= DBL_MAX; }

/// The multigrid V-cycle. The coarse correction is scaled (piecewise-constant aggregation
/// under-corrects smooth errors); both paths use the one factor. Scaled by 1.3, with two
/// Gauss-Seidel sweeps, it cut the CG iterations by a quarter to a third (600 x 800,
/// tools/bench_propagation.py). With three SOR sweeps, 1.5 takes 16 % fewer iterations than
/// 1.3 on a trained net's affinities of 27 real images (1142 against 1354 over 54 solves), 11 %
/// fewer on the image-like benchmark, as many on random fields, but more on fields of extreme
/// contrast (README, Performance: 1.4 to 2.0 measured too), which more sweeps win back.
const int kMultigridCoarsestUnknowns = 256;  // dense Cholesky below this size
const double kMultigridCoarseScale = 1.5;
/// GPU path: three symmetric red-black SOR sweeps with omega 1.5 before and after the
/// correction (the CPU path's smoother; it takes five sweeps, where each costs little more than
/// its arithmetic). In the GPU's tiles more sweeps add no launches but work that costs more
/// than the iterations they save: on an H100, 600 x 800 image / random affinities and four 320
/// x 320 crops, three sweeps 9.1 / 16.5 / 12.1 ms, four 9.3 / 17.1 / 12.2, five 9.8 / 18.6 /
/// 13.2, and (another H100) two 8.9 / 17.7 / 12.5 against 8.8 / 15.7 / 11.6. Measured on an
/// H200 (bench_propagation.py --gpu-multigrid, the .cu's DMPN_GPU_MULTIGRID) against two
/// Gauss-Seidel sweeps: 600 x 800 forward + backward
/// 15.3 -> 13.8 ms on an image's affinities, 33.0 -> 24.2 ms on random ones, a batch of four
/// 320 x 320 crops 22.0 -> 17.8 ms (README, Performance, GPU); two SOR sweeps did about as
/// well, one or four worse, omega 1.7 no better.
const int kMultigridSweeps = 3;
const double kMultigridOmega = 1.5;

/// GPU path: levels this small run the V-cycle in one thread block. On an H200, in one process
/// each, 2048 was 5 to 10 % faster than 1024 and than 8192 (4096 splits the bench's sizes as
/// 2048 does); 0, all levels but the coarsest grid-wide, 5 to 25 % slower (README,
/// Performance, GPU). With the tiled smoother on an H100, 1024 and 4096 were within 2 % of 2048.
const int kGpuBlockLevelUnknowns = 2048;
const int kMaxGpuMultigridSweeps = 8;  // one digit; the tiled smoother's shared memory fits it

/// The GPU V-cycle's tuning: the smoothing sweeps before and after the coarse correction, on the
/// grid-wide levels and on those of the one-block V-cycle below the finest level (whose sweeps are
/// two barriers each: 0 there leaves only the coarse correction), the smoother's over-relaxation
/// omega (1: Gauss-Seidel), the level size at and below which the V-cycle runs in one thread block,
/// the tiled smoother or a launch per half-sweep (the same values bit for bit), the tiles a level
/// needs before it halves them, and a float32 hierarchy. The members' defaults are the layer's
/// (min_tiles: see the .cu).
struct GpuMultigridTuning {
  int sweeps = kMultigridSweeps;
  int block_sweeps = kMultigridSweeps;
  double omega = kMultigridOmega;
  int block_unknowns = kGpuBlockLevelUnknowns;
  bool tiled = true;
  int min_tiles = 0;
  bool float32 = false;
  /// The sweeps of a one-block V-cycle from level `first`. From the finest level (a solve grid
  /// of at most block_unknowns) that is `sweeps`: the finest level must be smoothed, since
  /// without it the V-cycle is z = P A_c^-1 P^T r, singular (no CG convergence: 0 sweeps
  /// there), and one sweep took about three times the iterations (a review's host run).
  int BlockVCycleSweeps(int first) const { return first == 0 ? sweeps : block_sweeps; }
  bool operator!=(const GpuMultigridTuning& o) const {
    return sweeps != o.sweeps || block_sweeps != o.block_sweeps || omega != o.omega ||
           block_unknowns != o.block_unknowns || tiled != o.tiled ||
           min_tiles != o.min_tiles || float32 != o.float32;
  }
};

/// The tuning as DMPN_GPU_MULTIGRID (and bench_propagation.py --gpu-multigrid) write it,
/// "SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS[,tiled[,MIN_TILES]][,float]": ASCII digits, OMEGA
/// with an optional fraction, no signs, spaces or exponents; 1 <= SWEEPS <= 8, 0 <=
/// BLOCK_SWEEPS <= 8 (default SWEEPS), 0 < OMEGA < 2, 0 <= BLOCK_UNKNOWNS < 10^9; ",tiled" for
/// the tiled smoother (grid-wide without), whose tiles a level with fewer than MIN_TILES (0 <=
/// MIN_TILES < 10^9, default 0) of them halves (LevelTileShape); ",float" for a float32
/// hierarchy (float64 without). False (the tuning untouched) for anything else.
bool ParseGpuMultigrid(const char* text, GpuMultigridTuning* tuning);
/// The CPU path's threads (its worker team, made once per process): DMPN_CPU_THREADS if set
/// (a whole number from 1 to kMaxCpuThreads; anything else is an error that names it), else
/// the CPUs this process may run on: its affinity mask (taskset, cpusets, batch schedulers),
/// capped by its cgroup's CPU quota (a container's or a job's CPU limit: the cgroup v2 cpu.max
/// of its cgroup and of each ancestor, v1 cpu.cfs_quota_us), rounded up. Not the machine's
/// CPUs: workers that spin while they wait (WorkerTeam) and outnumber the CPUs they get wait on
/// each other's time slices instead. On a 2-CPU machine, 600 x 800 forward + backward (image
/// affinities) pinned to one CPU (taskset -c 0): 203 to 209 ms with one thread, 518 to 528 ms
/// with two (the machine's count, as before); with 8 threads on both CPUs 785 to 796 ms
/// against 110 to 130 ms with two (README).
const int kMaxCpuThreads = 1024;
int SolveThreadCount();
/// The CPUs a CFS quota of quota_us per period_us amounts to, rounded up; 0 (no limit) for a
/// quota or period that is not positive (cgroup v1 writes -1 for none).
int CpusOfCpuQuota(long long quota_us, long long period_us);
/// The same for a cgroup v2 cpu.max line, "QUOTA PERIOD" or "max PERIOD" (0: no limit, or a line
/// that is neither).
int CpusOfCpuMax(const std::string& cpu_max);
/// CPU path: five symmetric red-black SOR sweeps with omega 1.5. Against two Gauss-Seidel
/// sweeps, three SOR sweeps took CG iterations (forward/backward) from 63/80 to 41/46 on random
/// affinities and from 29/33 to 22/25 on an image's; the wavefront smoother makes the extra
/// sweeps cheap (one pass over memory): 30 % less time. omega 1.4 and 1.6 did about as well,
/// 1.3 worse. With the coarse correction scaled by 1.5, five sweeps instead of three take 22 %
/// fewer iterations on a trained net's affinities of real images and 31/36 (random), 15/17
/// (image) instead of 39/45, 20/22, in the same time (A/B in alternation), and converge on
/// fields of extreme contrast where three did not (README, Performance). SOR with
/// 0 < omega < 2 in symmetric order keeps the V-cycle a symmetric positive definite
/// preconditioner.
const int kCpuMultigridSweeps = 5;
const float kCpuSmootherOmega = 1.5f;
/// The coarsest level's Cholesky pivots are kept at or above this fraction of their row's
/// diagonal (about 64 float64 epsilons, the round-off of the elimination's cancellation).
const double kPivotFloor = 1.5e-14;

/// The first node (index) of the solve grid, H x W input pixels shrunk by s, that no path of
/// edges with weight > 0 links to a known pixel of the trimap, or -1. ew / sw: the solve
/// grid's east / south edge weights, row-major. Where one exists, (L + C) is singular.
template <typename Dtype>
int FindUnanchoredNode(int H, int W, int s, const Dtype* trimap, const double* ew,
                       const double* sw);

/// The power of two by which a solve scales its right-hand side (and then its solution back):
/// exact in float64 and in the float32 V-cycle, so the same iterations. 1 for norms in [2^-40,
/// 2^40], the values as without; outside, the norm is brought into [1, 2), since the float32
/// V-cycle cannot hold residuals below float's range (a backward pass with a top diff of about
/// 1e-37 did not converge) or its preconditioned ones above it (1e36).
inline double RightHandSideScale(double bnorm) {
  if (!(bnorm > 0) || !std::isfinite(bnorm) || (bnorm >= 0x1p-40 && bnorm <= 0x1p40)) return 1;
  return std::ldexp(1.0, -std::ilogb(bnorm));
}

/// The power of two by which a solve scales its right-hand side b before RightHandSideScale
/// where b.b, summed in float64, has left the normal range: 0 or subnormal where every entry
/// is below about 1e-154 (a float64 net's top diff of 1e-170 was taken for 0, so its gradient
/// was 0), infinite where one is above about 1e154 (the solve did not converge). b.b is then
/// summed again: after 2^600 it is 0 only for b = 0 (2^-1074 becomes 2^-474, whose square is
/// normal); after 2^-600 it is finite (below 2^848 per entry). 1 otherwise, and for NaN. With
/// RightHandSideScale's up to 2^474 after it, the product can overflow: solves undo the two
/// scales one after the other.
inline double RightHandSidePrescale(double bb) {
  if (bb < DBL_MIN) return 0x1p600;
  if (bb > DBL_MAX) return 0x1p-600;
  return 1;
}

/// A level's diagonal in float32, rounded up by a relative 1e-6 so that the float operator stays
/// diagonally dominant (positive definite) despite the rounding of its edge weights to nearest:
/// the float V-cycles' levels (the CPU's, and the GPU's with DMPN_GPU_MULTIGRID "...,float").
DMPN_HOST_DEVICE inline float RoundUpDiag(double d) {
  float f = static_cast<float>(d * (1 + 1e-6));
  if (static_cast<double>(f) < d) f = nextafterf(f, FLT_MAX);
  return f;
}

/// Coarse cell I's entries of the Galerkin operator P^T A P (2 x 2 aggregation, P piecewise
/// constant; the coarse level has Wc columns) of a float64 fine level Hf x Wf: the aggregate's
/// diagonals less twice its inner edges, and the fine edges that cross to the next aggregate
/// east and south. Both paths: the CPU's Setup and the GPU's Coarsen kernel.
DMPN_HOST_DEVICE inline void GalerkinCell(int Hf, int Wf, int Wc, int I, const double* few,
    const double* fsw, const double* fdiag, double* cew, double* csw, double* cdiag) {
  const int Y = I / Wc, X = I % Wc;
  double d = 0, e = 0, so = 0;
  for (int y = 2 * Y; y < (Hf < 2 * Y + 2 ? Hf : 2 * Y + 2); ++y) {
    for (int x = 2 * X; x < (Wf < 2 * X + 2 ? Wf : 2 * X + 2); ++x) {
      const int i = y * Wf + x;
      d += fdiag[i];
      if (x + 1 < Wf) {
        if (x & 1) e += few[i]; else d -= 2 * few[i];
      }
      if (y + 1 < Hf) {
        if (y & 1) so += fsw[i]; else d -= 2 * fsw[i];
      }
    }
  }
  cew[I] = e;
  csw[I] = so;
  cdiag[I] = d;
}

/// The coarsest level's dense Cholesky factor, L L^T = A, both paths (the CPU solves with it,
/// the GPU inverts A with it). A is the operator of a w pixels wide grid in row-major order, so
/// it is zero more than w off its diagonal, and the elimination fills in only within that band:
/// L[i][k] = 0 for k < i - w. The sums below leave out those terms, exact zeros, and so give the
/// full sums' values in O(w) instead of O(n): O(n w^2) for the factor, O(n w) a solve (at
/// 600 x 800 the coarsest level is 10 x 13, w = 13 of n = 130). M is row-major n x n, with L
/// left of column j and A's lower triangle from column j on (the column-by-column elimination).
/// A[i][j] less the eliminated columns' share, for j <= i: the pivot squared (i == j) or
/// L[i][j] times the pivot.
DMPN_HOST_DEVICE inline double CholeskyEliminated(int n, int w, const double* M, int i, int j) {
  double v = M[i * n + j];
  for (int k = i - w > 0 ? i - w : 0; k < j; ++k) v -= M[i * n + k] * M[j * n + k];
  return v;
}

/// The end (exclusive) of the rows below j whose entry in column j may be nonzero.
DMPN_HOST_DEVICE inline int CholeskyBandEnd(int n, int w, int j) {
  return j + w + 1 < n ? j + w + 1 : n;
}

/// Solves L L^T x = b in place (x[i * stride] holds b_i on entry), by forward then back
/// substitution with the factor L (the lower triangle of row-major n x n L). b is zero before
/// index `first`, which the forward substitution skips (a column of the identity: the GPU's
/// inverse, column by column).
DMPN_HOST_DEVICE inline void CholeskySolve(int n, int w, const double* L, int first, int stride,
                                           double* x) {
  for (int i = first; i < n; ++i) {
    double s = x[i * stride];
    for (int k = i - w > first ? i - w : first; k < i; ++k) s -= L[i * n + k] * x[k * stride];
    x[i * stride] = s / L[i * n + i];
  }
  for (int i = n - 1; i >= 0; --i) {
    double s = x[i * stride];
    for (int k = i + 1; k < CholeskyBandEnd(n, w, i); ++k) s -= L[k * n + i] * x[k * stride];
    x[i * stride] = s / L[i * n + i];
  }
}

/// One red-black Gauss-Seidel update of pixel (y, x), at index i, of the 5-point operator
/// (neighbours outside the grid left out), with the west neighbour's coefficient at `west` and
/// the neighbours' values at v[ve], v[vw], v[vs], v[vn] (east, west, south, north): v may be laid
/// out otherwise than the coefficients (the GPU's tiles in shared memory).
template <typename T>
inline DMPN_HOST_DEVICE T GaussSeidelValue(int H, int W, int y, int x, int i, int west,
    const T* ew, const T* sw, const T* diag, const T* b, const T* v, int ve, int vw, int vs,
    int vn) {
  T s = b[i];
  if (x + 1 < W) s += ew[i] * v[ve];
  if (x > 0) s += ew[west] * v[vw];
  if (y + 1 < H) s += sw[i] * v[vs];
  if (y > 0) s += sw[i - W] * v[vn];
  return s / diag[i];
}

/// The same with v laid out as the coefficients, the east and west neighbours at `east` and
/// `west` (i + 1 and i - 1 in row-major order; see SplitIndex for the CPU's layout): the
/// smoother of the CPU path (float, its border pixels; the interior is the same sum without the
/// tests) and of the GPU path (double).
template <typename T>
inline DMPN_HOST_DEVICE T GaussSeidelUpdate(int H, int W, int y, int x, int i, int east,
    int west, const T* ew, const T* sw, const T* diag, const T* b, const T* v) {
  return GaussSeidelValue(H, W, y, x, i, west, ew, sw, diag, b, v, east, west, i + W, i - W);
}

/// Index of pixel (y, x) in the CPU solver's layout: rows in order, each row's even columns
/// first, then its odd ones (x = 2j at j, x = 2j + 1 at ceil(W / 2) + j). A red-black
/// half-sweep touches one of a row's two halves, so it reads and writes contiguous memory and
/// vectorises. Vertical neighbours stay W apart.
inline int SplitIndex(int W, int y, int x) {
  return y * W + ((x & 1) ? (W + 1) / 2 + (x >> 1) : (x >> 1));
}

/**
 * @brief One image's system A = L + C on a pixel grid, with a Galerkin multigrid hierarchy
 *        used as the preconditioner of conjugate gradients.
 *
 * A is the 5-point operator (A x)_i = diag_i x_i - sum_{j ~ i} w_ij x_j, stored as the east
 * and south edge weights of each pixel and its diagonal. Coarse levels aggregate 2 x 2 blocks
 * (piecewise-constant P) and take P^T A P, which is again a 5-point grid operator: high-contrast
 * learned affinities are coarsened through the operator itself, not through the geometry.
 * The V-cycle smooths with symmetric red-black SOR and solves the coarsest level by
 * dense Cholesky; it is a symmetric positive definite preconditioner. CG and the fine operator
 * run in float64; the V-cycle in float32 (half the memory traffic; a preconditioner needs no
 * more), with diagonals rounded up so that every level stays positive definite. The hierarchy
 * is built once per forward pass and reused by the backward solve. Large levels are split
 * across `threads` threads by rows. Inside, every level and the CG's vectors are stored in the
 * SplitIndex layout; Setup's and Solve's arguments are in row-major order.
 */
class GridMultigridSolver {
 public:
  /// One of a level's arrays, a view into the level's storage.
  struct FloatArray {
    float* ptr = nullptr;
    int n = 0;
    float* data() { return ptr; }
    const float* data() const { return ptr; }
    float& operator[](int i) { return ptr[i]; }
    const float& operator[](int i) const { return ptr[i]; }
    float* begin() { return ptr; }
    float* end() { return ptr + n; }
    const float* begin() const { return ptr; }
    const float* end() const { return ptr + n; }
    int size() const { return n; }
  };
  struct Level {  // every array H * W, in the SplitIndex layout
    Level() = default;
    Level(Level&&) = default;  // the storage moves with its buffer: the views stay valid
    Level& operator=(Level&&) = default;
    Level(const Level&) = delete;  // a copy's views would point into the original
    Level& operator=(const Level&) = delete;
    int H, W;
    FloatArray ew, sw, diag;  // east / south edge weights, diagonal
    FloatArray x, b;          // V-cycle work vectors
    std::vector<float> storage;  // the five arrays, staggered (Setup)
  };
  struct Stats {
    int iterations;
    double relative_residual;
    bool cuda_graphs = false;  // GPU path: the CG iterations ran as replayed CUDA graphs
  };

  /// Builds the hierarchy from the finest level's edge weights and diagonal (moved in; the
  /// vectors come back holding storage of the same size to reuse, contents unspecified).
  /// Returns false (with a reason) when the system is not positive definite, or when a
  /// diagonal of the coarsest level is not finite (overflow() says which).
  bool Setup(int H, int W, std::vector<double>* ew, std::vector<double>* sw,
             std::vector<double>* diag, std::string* why, int threads = 1);
  /// Whether the last Setup failed on a diagonal that overflowed (not a singular system).
  bool overflow() const { return overflow_; }
  /// Solves A x = b to ||b - A x|| <= tol ||b||; x is H * W. Returns false if it does not
  /// converge in max_iter iterations (stats say how far it got).
  bool Solve(const double* b, double* x, double tol, int max_iter, bool multigrid,
             Stats* stats);
  int num_levels() const { return static_cast<int>(levels_.size()); }
  Level* level(int l) { return &levels_[l]; }  // for tests
  /// Red-black SOR half-sweeps colors[0..K) on a level, in one wavefront pass.
  void SmoothSweeps(Level* L, const int* colors, int K);

 private:
  void VCycle(int l);
  template <typename F> void ForRows(int rows, int work, F f);
  /// A field of the solve grid into the SplitIndex layout (to_split) or back, by row blocks.
  void RearrangeRows(bool to_split, const double* in, double* out);
  int H_ = 0, W_ = 0, threads_ = 1;
  bool overflow_ = false;
  std::vector<double> ew_, sw_, diag_;  // the fine operator, float64 (edges: see Setup)
  bool edges_in_float_ = false;         // ew_, sw_ dropped: level 0's float copy is exact
  std::vector<Level> levels_;
  std::vector<double> chol_;  // coarsest level: dense Cholesky factor, row-major n x n
  std::vector<double> r_, z_, p_, q_, x_;  // CG vectors (z_ for Jacobi only)
  struct CoarseOperator {  // a coarse level in float64, row-major, while Setup coarsens
    std::vector<double> ew, sw, diag;
  };
  CoarseOperator coarse_[2];         // levels 1, 3, ... in [1], 2, 4, ... in [0]
  std::vector<double> split_buffer_;  // Setup's row-major -> SplitIndex rearrangement
};

/**
 * @brief DeepMattePropNet's matte propagation (Wang et al., IJCAI 2018, Sec. 3.3):
 *        alpha = (L + C)^-1 C alpha*, L = D - W the Laplacian of the 4-connected affinity
 *        graph, C = c on the trimap's known pixels, alpha* = 1 on foreground, 0 elsewhere.
 *
 * bottom[0]: affinities N x 2 x H x W (channel 0: edge (y, x)-(y, x+1); channel 1: edge
 * (y, x)-(y+1, x); as produced by AffinityExp). bottom[1]: trimap N x 1 x H x W in [0, 1]
 * (0 background, 1 foreground, anything strictly between unknown). top: alpha N x 1 x H x W.
 *
 * Backward is exact: with g = A^-1 dE/dalpha (one more solve with the forward's hierarchy),
 * dE/dw_ij = -(g_i - g_j)(alpha_i - alpha_j); W_ij = W_ji and D both depend on w_ij. No
 * gradient to the trimap. Optional shrink s: the system is aggregated onto an s-times coarser
 * grid (P^T A P), solved there and bilinearly upsampled; the gradient goes through both.
 * A trimap without known pixels or with values outside [0, 1], non-finite or negative
 * affinities, a region that affinities of 0 cut off from every known pixel, or a solve that
 * does not converge stop with an error naming the layer, the batch item and the reason; where
 * affinities so large that a degree or the solve's residual is not finite are the reason, it
 * names the largest. c and tolerance must be finite and > 0, shrink at most min(H, W), the
 * batch not empty.
 */
template <typename Dtype>
class SparseLaplacianSolveLayer : public Layer<Dtype> {
 public:
  explicit SparseLaplacianSolveLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual ~SparseLaplacianSolveLayer();
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "SparseLaplacianSolve"; }
  virtual inline int ExactNumBottomBlobs() const { return 2; }
  virtual inline int ExactNumTopBlobs() const { return 1; }
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index != 1;
  }

  /// Iterations and final relative residual of the last forward (and backward) solve of
  /// each batch item: for tests and benchmarks.
  const vector<GridMultigridSolver::Stats>& forward_stats() const { return fwd_stats_; }
  const vector<GridMultigridSolver::Stats>& backward_stats() const { return bwd_stats_; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  void ForwardItem(int n, const Dtype* w, const Dtype* trimap, Dtype* alpha);
  /// Stops, naming the layer, unless the last Forward solved affinities of bottom's shape:
  /// Backward reuses its systems, whose sizes a Reshape since then would not match.
  void CheckForwardMatches(const Blob<Dtype>& affinities) const;
  void BackwardItem(int n, const Dtype* w, const Dtype* top_diff, Dtype* w_diff);
  std::string Where(int n) const;
  /// Names the unanchored node (FindUnanchoredNode) as an input pixel, and what follows.
  std::string UnanchoredMessage(int node) const;
  /// The first invalid input of an item in raster order (a trimap value outside [0, 1], an
  /// affinity that is not finite or < 0; padding entries are not read), described with its
  /// pixel; empty when all are valid. The CPU path and the GPU path's error report share it.
  std::string InvalidInputMessage(const Dtype* w, const Dtype* trimap) const;
  /// The first non-finite entry of an item's top diff with its pixel; empty when none.
  std::string NonFiniteTopDiffMessage(const Dtype* top_diff) const;
  /// "... did not converge: relative residual r after k iterations (tolerance t)", and where
  /// the residual is not finite (overflow), TooLargeMessage of the item's affinities w;
  /// otherwise (a stall) the affinities' span, with what to change where it is extreme.
  std::string NotConvergedMessage(const char* pass, const GridMultigridSolver::Stats& s,
                                  const Dtype* w) const;
  /// "the affinities are too large: the largest is v at the edge (y, x)-(y', x') ...": the
  /// reason of an overflow, with the item's largest affinity (padding entries not read).
  std::string TooLargeMessage(const Dtype* w) const;
  /// The item's largest affinity (padding entries not read), in one pass with, where not NULL,
  /// its smallest nonzero one and the largest one's edge "(y, x)-(y', x')".
  double AffinityRange(const Dtype* w, double* smallest, std::string* edge) const;
  /// Above this an affinity's square overflows float (3.4e38): the float32 V-cycle's dot
  /// products become inf. Below it a non-finite residual is a breakdown from rounding.
  static constexpr double kOverflowingAffinity = 1e18;
  /// A degree (a pixel's sum of affinities plus c) that is not finite, with TooLargeMessage.
  std::string DegreeOverflowMessage(const Dtype* w) const;

  double c_;
  int shrink_;
  int H_, W_, Hc_, Wc_;  // input grid and solve grid (Hc = ceil(H / shrink))
  double tol_;
  int max_iter_;
  bool multigrid_;
  int threads_per_item_ = 1;  // a lone batch item's solve uses every core
  vector<int> solved_shape_;  // the affinities' shape at the last Forward (empty before)
  // CPU path: one solver and solution (on the solve grid) per batch item.
  vector<GridMultigridSolver> solvers_;
  vector<vector<double> > alpha_grid_;
  struct SystemBuffers {  // an item's system in row-major order, and the backward solution
    vector<double> ew, sw, diag, rhs, g;
  };
  vector<SystemBuffers> buffers_;
  vector<GridMultigridSolver::Stats> fwd_stats_, bwd_stats_;
  // GPU path (see the .cu): device state, opaque here.
  void* gpu_state_ = nullptr;
  void FreeGpuState();
};

}  // namespace caffe

#endif  // CAFFE_SPARSE_LAPLACIAN_SOLVE_LAYER_HPP_
