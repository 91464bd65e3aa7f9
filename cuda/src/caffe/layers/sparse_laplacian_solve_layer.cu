// GPU path of SparseLaplacianSolve: the same Galerkin-multigrid-preconditioned conjugate
// gradients as the CPU path (see the .cpp), all on the device: set-up, V-cycles, the coarsest
// level's dense Cholesky and inverse (one thread block), forward and backward solves. float64
// throughout, or with DMPN_GPU_MULTIGRID "...,float" a float32 copy of the hierarchy for the
// V-cycle, as the CPU path's (CG, the fine operator and the coarsest inverse stay float64).
//
// A 600 x 800 solve is bound by launch and synchronisation latency, not by memory bandwidth
// (measured on an H200: 0.5 ms per CG iteration with a kernel per step and three cuBLAS dots, each
// a host round trip). So: the levels below kGpuBlockLevelUnknowns run as one thread block (one
// launch for the whole lower V-cycle), the coarsest solve is a product with the inverse (no
// sequential triangular solves), dot products are fused into the kernels that produce their
// operands (and the new direction into the product with A), CG's scalars stay on the device, the
// host reads the residual once per iteration while the GPU already runs the next preconditioner,
// and the items of a batch run on their own streams in lockstep. Figures: README, Performance,
// GPU.
//
// Each CG iteration's kernels (about 60 launches at 600 x 800, most of them the V-cycle's) are
// captured once per item as CUDA graphs and replayed, two graph launches an iteration instead:
// the same kernels with the same arguments in the same order, so the same results bit for bit,
// with less launch latency (measured on an H200: 8 to 12 % less time for one 600 x 800 image,
// 3x less for a batch of four crops, whose launches queued behind each other). Where no graph can
// be made, the launches run directly (one warning); DMPN_CUDA_GRAPHS=0 launches directly.
//
// The tiled smoother (the default; DMPN_GPU_MULTIGRID="...,tiled[,MIN_TILES]") smooths each
// grid-wide level by tiles: two launches a level (pre-smoothing with the residual and
// restriction; prolongation with post-smoothing), the same values bit for bit as a launch per
// half-sweep (gpu_vcycle.hpp); levels with fewer than MIN_TILES tiles use smaller ones.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "caffe/layers/gpu_vcycle.hpp"
#include "caffe/layers/sparse_laplacian_solve_layer.hpp"

namespace caffe {

namespace {

const int kCholThreads = 256;
const int kBlockLevelThreads = 1024;  // the one-block V-cycle's (kGpuBlockLevelUnknowns)
// The tiled smoother's largest tiles (even sizes: whole 2 x 2 aggregates) and threads per
// tile: a 600 x 800 level is 19 x 13 tiles; with 3 sweeps a tile and its halo are 1.63 times
// the tile's pixels, the smoothing work (the smoothed area shrinks a ring per half-sweep) about
// 1.3 times the grid-wide kernels'. A level with fewer than GpuMultigridTuning::min_tiles of them
// halves its tiles, at most kTileHalvings times (down to 8 x 16; LevelTileShape).
const int kTileRows = 32;
const int kTileCols = 64;
const int kTileHalvings = 2;
const int kTileThreads = 512;
static_assert(kTileRows % (2 << kTileHalvings) == 0 && kTileCols % (2 << kTileHalvings) == 0,
              "tiles, halved kTileHalvings times, hold whole 2 x 2 aggregates");
// With the most sweeps ParseGpuMultigrid allows, the shared memory fits the 48 KB a kernel gets
// without opting in to more (float64: the float32 hierarchy's tiles take half).
static_assert((kTileRows + 2 * TileHalo(kMaxGpuMultigridSweeps)) *
              (kTileCols + 2 * TileHalo(kMaxGpuMultigridSweeps)) * sizeof(double) <= 48 * 1024,
              "a tile and its halo at the most sweeps must fit in 48 KB of shared memory");
const int kReduceThreads = 256;        // block size of the fused dot-product kernels
const int kReduceMaxBlocks = 1024;
const int kNumFlags = 7;               // an item's set-up flags (GpuItem::flags)

// The GPU V-cycle's tuning (GpuMultigridTuning): DMPN_GPU_MULTIGRID=
// "SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS[,tiled[,MIN_TILES]][,float]" overrides the
// defaults, to measure other choices on another GPU (tools/bench_propagation.py
// --gpu-multigrid); read at each forward pass. The default, tiles halved on levels with fewer
// tiles than the device has multiprocessors (min_tiles), was the fastest of the tunings timed
// on an H100 (132 multiprocessors): 600 x 800 forward + backward 12.8 -> 9.1 ms on an image's
// affinities, 23.6 -> 16.5 ms on random ones, four 320 x 320 crops 18.1 -> 12.1 ms against the
// grid-wide smoother, 11.5 / 21.1 / 14.4 ms with 32 x 64 tiles everywhere (README,
// Performance, GPU). Not the default until a GPU has timed them: ",float", the V-cycle on a
// float32 copy of the hierarchy (half the bytes the smoother moves, float arithmetic), as the
// CPU's; BLOCK_SWEEPS below SWEEPS, fewer barriers in the one-block V-cycle (0 or 1 sweep there
// took 0 to 1 more CG iteration than 3 at 600 x 800, in a float64 prototype of this V-cycle).

// The default tuning on the current device, or DMPN_GPU_MULTIGRID's.
GpuMultigridTuning GpuMultigridFromEnv() {
  GpuMultigridTuning m;
  const char* v = std::getenv("DMPN_GPU_MULTIGRID");
  if (!v || !*v) {
    // a tile per multiprocessor at least, where halving (at most kTileHalvings times) gets there
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&m.min_tiles, cudaDevAttrMultiProcessorCount, device));
    return m;
  }
  CHECK(ParseGpuMultigrid(v, &m))
      << "DMPN_GPU_MULTIGRID='" << v << "': want "
      << "SWEEPS[/BLOCK_SWEEPS],OMEGA,BLOCK_UNKNOWNS[,tiled[,MIN_TILES]][,float] with 1 <= "
      << "SWEEPS <= " << kMaxGpuMultigridSweeps << ", 0 <= BLOCK_SWEEPS <= "
      << kMaxGpuMultigridSweeps << ", 0 < OMEGA < 2 (1: Gauss-Seidel) "
      << "and 0 <= BLOCK_UNKNOWNS, MIN_TILES < 10^9, for example '" << kMultigridSweeps << ","
      << kMultigridOmega << "," << kGpuBlockLevelUnknowns << "' or '" << kMultigridSweeps
      << "/1," << kMultigridOmega << "," << kGpuBlockLevelUnknowns << ",tiled,132,float'";
  return m;
}

typedef GpuLevelOf<double> GpuLevel;

// CG's scalars, on the device. r.z is double-buffered by iteration parity so that one kernel
// can read the old value while another writes the new one.
struct CgScalars {
  double rz[2];
  double pq;
  double check[2];  // [0] r.r after the update, [1] 1 if p.q was not positive (breakdown)
  int have_direction;  // 0 at a solve's start: its first direction is z (DirectionOperatorDot)
};

// One batch item: its hierarchy, its CG workspace and its own stream, so that the items'
// solves (each bound by latency, not bandwidth) run side by side. The streams are blocking:
// Caffe's work on the legacy default stream stays ordered with them.
struct GpuItem {
  std::vector<GpuLevel> levels;
  GpuLevel* dev_levels;  // device copy of levels
  // GpuMultigridTuning::float32: the levels' float copies (the V-cycle's), and their device copy;
  // the CG update writes float(r) to flevels[0].b, the V-cycle leaves z in flevels[0].x.
  std::vector<GpuLevelOf<float> > flevels;
  GpuLevelOf<float>* dev_flevels = NULL;
  double* chol;          // coarsest level's n x n Cholesky factor (lower, row-major)
  double* inverse;       // coarsest level's inverse (symmetric, n x n)
  double *alpha, *rhs, *sol, *r, *z, *q;  // solve-grid vectors
  double* p[2];  // CG's directions, by iteration parity (DirectionOperatorDot reads the last)
  int* flags;  // [0] bad affinity, [1] known pixels, [2] bad trimap, [3] singular, [4] a 0 edge,
               // [5] a degree (diagonal) that is not finite: overflow, [6] the same on the
               // coarsest level (the coarsening summed degrees beyond double's range)
  CgScalars* cg;
  double* partial;       // per-block partial sums of the dot products
  unsigned* retired;     // blocks done with a dot product (the last one sums up)
  double* host_check;    // pinned copy of cg->check
  cudaStream_t stream;
  cudaEvent_t checked;
  // CUDA graphs (unless DMPN_CUDA_GRAPHS=0): one CG iteration as two graphs (SolveGpu),
  // captured on first use and kept with the item's buffers, whose addresses they hold (also z's,
  // which the tuning's hierarchy and the preconditioner fix: a change of tuning makes new items).
  // update[x is sol][parity]: the new p, q = A p, x and r updated, r.r copied to the host;
  // precondition[multigrid][parity]: z = M^-1 r and r.z. NULL: not captured yet.
  cudaGraphExec_t update[2][2] = {};
  cudaGraphExec_t precondition[2][2] = {};
  bool graphs_failed = false;  // capture failed once: this item launches directly
};

struct GpuState {
  int num, Hc, Wc;
  GpuMultigridTuning tuning;  // the graphs of the items hold its values
  std::vector<GpuItem> items;
};

template <typename T = double>
T* DeviceAlloc(size_t n) {
  void* ptr = NULL;
  CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(ptr);
}

// ---- set-up ---------------------------------------------------------------------------------

// One thread per solve-grid cell I = (Y, X), gathering its s x s block of input pixels.
template <typename Dtype>
__global__ void BuildSystem(const int Hc, const int Wc, const int H, const int W, const int s,
    const Dtype* w, const Dtype* trimap, const double c, double* ew, double* sw, double* diag,
    double* rhs, int* flags) {
  CUDA_KERNEL_LOOP(I, Hc * Wc) {
    const int Y = I / Wc, X = I % Wc, HW = H * W;
    double e_east = 0, e_south = 0, cdiag = 0, b = 0;
    int bad = 0, known = 0, bad_trimap = 0;
    for (int y = Y * s; y < min(H, (Y + 1) * s); ++y) {
      for (int x = X * s; x < min(W, (X + 1) * s); ++x) {
        const int i = y * W + x;
        const double t = trimap[i];
        if (!TrimapValid(t)) bad_trimap = 1;
        if (TrimapKnown(t)) {
          ++known;
          cdiag += c;
          if (TrimapForeground(t)) b += c;
        }
        if (x + 1 < W) {
          const double e = w[i];
          if (!AffinityValid(e)) bad = 1;
          if ((x + 1) % s == 0) e_east += e;
        }
        if (y + 1 < H) {
          const double e = w[HW + i];
          if (!AffinityValid(e)) bad = 1;
          if ((y + 1) % s == 0) e_south += e;
        }
      }
    }
    ew[I] = e_east;
    sw[I] = e_south;
    diag[I] = cdiag;  // edge weights are added by AddDegrees
    rhs[I] = b;
    if (bad) atomicOr(flags, 1);
    if (known) atomicAdd(flags + 1, known);
    if (bad_trimap) atomicOr(flags + 2, 1);
    // Only where an edge of the solve grid is 0 can a region be cut off from the known pixels.
    if ((X + 1 < Wc && e_east == 0) || (Y + 1 < Hc && e_south == 0)) atomicOr(flags + 4, 1);
  }
}

// diag_i += sum of the weights of the edges at i (a gather: no atomics); flags[5] = 1 where the
// sum is not finite (overflow, as the CPU path checks its degrees).
__global__ void AddDegrees(const int H, const int W, const double* ew, const double* sw,
    double* diag, int* flags) {
  CUDA_KERNEL_LOOP(i, H * W) {
    const int y = i / W, x = i % W;
    double d = ew[i] + sw[i];
    if (x > 0) d += ew[i - 1];
    if (y > 0) d += sw[i - W];
    diag[i] += d;
    if (!isfinite(diag[i])) atomicOr(flags + 5, 1);
  }
}

// P^T A P for 2 x 2 aggregates, one thread per coarse cell.
__global__ void Coarsen(const int Hf, const int Wf, const double* few, const double* fsw,
    const double* fdiag, const int Hc, const int Wc, double* cew, double* csw, double* cdiag) {
  CUDA_KERNEL_LOOP(I, Hc * Wc) { GalerkinCell(Hf, Wf, Wc, I, few, fsw, fdiag, cew, csw, cdiag); }
}

// A level's float32 copy for the float V-cycle: edge weights rounded to nearest, diagonals up
// (RoundUpDiag, as the CPU's levels).
__global__ void LevelToFloat(const int n, const double* ew, const double* sw, const double* diag,
    float* few, float* fsw, float* fdiag) {
  CUDA_KERNEL_LOOP(i, n) {
    few[i] = static_cast<float>(ew[i]);
    fsw[i] = static_cast<float>(sw[i]);
    fdiag[i] = RoundUpDiag(diag[i]);
  }
}

// Dense n x n matrix of the coarsest level.
__global__ void Densify(const int H, const int W, const double* ew, const double* sw,
    const double* diag, double* A) {
  const int n = H * W;
  CUDA_KERNEL_LOOP(k, n * n) {
    const int i = k / n, j = k % n;
    double v = 0;
    if (i == j) v = diag[i];
    else if (j == i + 1 && (i % W) + 1 < W) v = -ew[i];
    else if (i == j + 1 && (j % W) + 1 < W) v = -ew[j];
    else if (j == i + W) v = -sw[i];
    else if (i == j + W) v = -sw[j];
    A[k] = v;
  }
}

// In-place dense Cholesky (lower) in one thread block, of the operator of a w pixels wide grid
// (CholeskyEliminated: the band); flags[3] = 1 if a diagonal is not positive, flags[6] = 1 if
// one is not finite (overflow, as the CPU's Setup). Pivots are clamped at kPivotFloor of their
// diagonal, as on the CPU (round-off: singular systems are ruled out before,
// FindUnanchoredNode).
__global__ void CholeskyFactor(const int n, const int w, double* A, int* flags) {
  __shared__ double pivot;
  for (int j = 0; j < n; ++j) {
    if (threadIdx.x == 0) {
      const double a = A[j * n + j];
      double d;
      if (!(a > 0 && isfinite(a))) {
        flags[isfinite(a) ? 3 : 6] = 1;
        d = 1;
      } else {
        d = fmax(CholeskyEliminated(n, w, A, j, j), kPivotFloor * a);
      }
      pivot = sqrt(d);
      A[j * n + j] = pivot;
    }
    __syncthreads();
    for (int i = j + 1 + threadIdx.x; i < CholeskyBandEnd(n, w, j); i += blockDim.x) {
      A[i * n + j] = CholeskyEliminated(n, w, A, i, j) / pivot;
    }
    __syncthreads();
  }
}

// The inverse of L L^T, one column per thread (a solve of the identity's column in place);
// threads read the same L entries at a time and write adjacent columns.
__global__ void CholeskyInverse(const int n, const int w, const double* L, double* inv) {
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    for (int i = 0; i < n; ++i) inv[i * n + j] = (i == j) ? 1 : 0;
    CholeskySolve(n, w, L, j, n, inv + j);
  }
}

// ---- V-cycle steps (their one-point maths: gpu_vcycle.hpp) ----------------------------------

template <typename Real>
__global__ void SmoothColor(const int H, const int W, const int color, const Real omega,
    const Real* ew, const Real* sw, const Real* diag, const Real* b, Real* x) {
  CUDA_KERNEL_LOOP(k, H * ((W + 1) / 2)) {
    SmoothPoint(H, W, color, k, omega, ew, sw, diag, b, x);
  }
}

// x = the first half-sweep (colour 0) from x = 0: one kernel instead of a memset and a
// SmoothColor, with the same values bit for bit.
template <typename Real>
__global__ void FirstHalfSweep(const int H, const int W, const Real omega, const Real* diag,
    const Real* b, Real* x) {
  CUDA_KERNEL_LOOP(i, H * W) { x[i] = FirstSweepValue(i / W, i % W, i, omega, diag, b); }
}

// Coarse right-hand side I: the sum of the fine residuals b - A x of its 2 x 2 aggregate: the
// residual and the restriction in one kernel, without the fine r.
template <typename Real>
__global__ void ResidualRestrict(const int Hf, const int Wf, const Real* ew, const Real* sw,
    const Real* diag, const Real* x, const Real* b, const int Hc, const int Wc, Real* cb) {
  const FineResidual<Real> residual = {Hf, Wf, ew, sw, diag, b, x, 0, 0, Wf};
  CUDA_KERNEL_LOOP(I, Hc * Wc) { cb[I] = RestrictSum(Hf, Wf, Wc, I, residual); }
}

template <typename Real>
__global__ void ProlongAdd(const int Hf, const int Wf, const int Wc, const Real scale,
    const Real* xc, Real* x) {
  CUDA_KERNEL_LOOP(i, Hf * Wf) { x[i] = Prolonged(x[i], i / Wf, i % Wf, scale, xc, Wc); }
}

// The tiled smoother (GpuMultigridTuning::tiled; gpu_vcycle.hpp): a level's pre-smoothing,
// residual and restriction in one launch, its prolongation and post-smoothing in another, one
// block per tile_h x tile_w tile, the tile and its halo in shared memory (at kTileRows x
// kTileCols, 26 KB with 3 sweeps, 48 KB with 8, half in float32). Grid: (tile columns, tile
// rows). The shared array is declared as bytes: its type differs between the kernels' instances.
template <typename Real>
__global__ void __launch_bounds__(kTileThreads) TiledPreSmoothKernel(const int H, const int W,
    const int tile_h, const int tile_w, const int sweeps, const Real omega, const Real* ew,
    const Real* sw, const Real* diag, const Real* b, Real* x, const int Wc, Real* cb) {
  extern __shared__ __align__(sizeof(double)) unsigned char tile_bytes[];
  const VCycleTile T(H, W, tile_h, tile_w, TileHalo(sweeps), blockIdx.y, blockIdx.x);
  TiledPreSmooth(T, sweeps, omega, ew, sw, diag, b, x, Wc, cb,
                 reinterpret_cast<Real*>(tile_bytes), threadIdx.x, blockDim.x, BlockSync());
}

template <typename Real>
__global__ void __launch_bounds__(kTileThreads) TiledPostSmoothKernel(const int H, const int W,
    const int tile_h, const int tile_w, const int sweeps, const Real omega, const Real scale,
    const Real* ew, const Real* sw, const Real* diag, const Real* b, const Real* x,
    const Real* xc, const int Wc, Real* x_out) {
  extern __shared__ __align__(sizeof(double)) unsigned char tile_bytes[];
  const VCycleTile T(H, W, tile_h, tile_w, TileHalo(sweeps), blockIdx.y, blockIdx.x);
  TiledPostSmooth(T, sweeps, omega, scale, ew, sw, diag, b, x, xc, Wc, x_out,
                  reinterpret_cast<Real*>(tile_bytes), threadIdx.x, blockDim.x, BlockSync());
}

// The V-cycle from level `first` (right-hand side b, result x) down to the coarsest level, in
// one thread block (BlockVCycleSteps): below GpuMultigridTuning::block_unknowns a level's steps
// take less time than their launches would.
template <typename Real>
__global__ void __launch_bounds__(kBlockLevelThreads) BlockVCycle(
    const GpuLevelOf<Real>* levels, const int first, const int last, const int sweeps,
    const Real omega, const Real scale, const double* inverse, const Real* b_first,
    Real* x_first) {
  BlockVCycleSteps(levels, first, last, sweeps, omega, scale, inverse, b_first, x_first,
                   static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), BlockSync());
}

// ---- CG with its scalars on the device -----------------------------------------------------

// Sums one value per thread over the grid, deterministically: each block writes its partial
// sum, and the last block to finish adds the partials in a fixed order into *out.
__device__ void GridSum(double v, double* partial, unsigned* retired, double* out) {
  __shared__ double s[kReduceThreads];
  __shared__ bool last;
  const int t = threadIdx.x;
  s[t] = v;
  __syncthreads();
  for (int k = kReduceThreads / 2; k > 0; k >>= 1) {
    if (t < k) s[t] += s[t + k];
    __syncthreads();
  }
  if (t == 0) {
    partial[blockIdx.x] = s[0];
    __threadfence();
    // wraps to 0 after the last block, ready for the next sum
    last = atomicInc(retired, gridDim.x - 1) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();  // acquire side of the partials' hand-over (the memory model wants both)
  double acc = 0;
  for (int b = t; b < gridDim.x; b += kReduceThreads) acc += ((volatile double*)partial)[b];
  s[t] = acc;
  __syncthreads();
  for (int k = kReduceThreads / 2; k > 0; k >>= 1) {
    if (t < k) s[t] += s[t + k];
    __syncthreads();
  }
  if (t == 0) *out = s[0];
}

inline int ReduceBlocks(int n) {
  return std::min(kReduceMaxBlocks, (n + kReduceThreads - 1) / kReduceThreads);
}

// a . b; b float32 where it is the float V-cycle's z.
template <typename B>
__global__ void Dot(const int n, const double* a, const B* b, double* partial,
    unsigned* retired, double* out) {
  double acc = 0;
  CUDA_KERNEL_LOOP(i, n) { acc += a[i] * b[i]; }
  GridSum(acc, partial, retired, out);
}

// CG's new direction p = z + beta p_old (beta = r.z new / r.z old; p = z for a solve's first),
// q = A p and p.q, in one pass: each thread forms p at its pixel and at its four neighbours
// (DirectionOperatorPoint: the values a kernel of its own would store for them), so p_old and p
// are two buffers. parity: that of the iteration before, whose r.z is rz[parity].
template <typename Z>
__global__ void DirectionOperatorDot(const int H, const int W, const int parity,
    const double* ew, const double* sw, const double* diag, const Z* z, const double* p_old,
    double* p, double* q, double* partial, unsigned* retired, CgScalars* cg) {
  const bool first = !cg->have_direction;
  const double beta = first ? 0 : cg->rz[parity] / cg->rz[parity ^ 1];
  double acc = 0;
  CUDA_KERNEL_LOOP(i, H * W) {
    double pi;
    const double qi = DirectionOperatorPoint(H, W, i, ew, sw, diag, z, p_old, beta, first, &pi);
    p[i] = pi;
    q[i] = qi;
    acc += pi * qi;
  }
  GridSum(acc, partial, retired, &cg->pq);
}

// x += a p, r -= a q with a = r.z / p.q, and r.r; a breakdown (p.q not > 0) is flagged for
// the host and leaves x and r as they are. r_float (not NULL for the float V-cycle): float(r),
// the V-cycle's right-hand side, written here rather than by a kernel of its own.
__global__ void CgUpdateDot(const int n, const int parity, const double* p, const double* q,
    double* x, double* r, float* r_float, double* partial, unsigned* retired, CgScalars* cg) {
  const double pq = cg->pq;
  const bool ok = pq > 0;
  const double a = ok ? cg->rz[parity] / pq : 0;
  double acc = 0;
  CUDA_KERNEL_LOOP(i, n) {
    x[i] += a * p[i];
    const double ri = r[i] - a * q[i];
    r[i] = ri;
    if (r_float) r_float[i] = static_cast<float>(ri);
    acc += ri * ri;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    cg->check[1] = ok ? 0 : 1;
    cg->have_direction = 1;  // DirectionOperatorDot, which made p, has finished
  }
  GridSum(acc, partial, retired, &cg->check[0]);
}

__global__ void DivideByDiag(const int n, const double* r, const double* diag, double* z) {
  CUDA_KERNEL_LOOP(i, n) { z[i] = r[i] / diag[i]; }
}

// ---- shrinking: bilinear upsampling (pixel centres, clamped) and its transpose ---------------

__device__ inline void Interp(const int i, const int nc, const int s, int* lo, int* hi,
    double* frac) {
  double pos = (i + 0.5) / s - 0.5;
  pos = fmin(fmax(pos, 0.), static_cast<double>(nc - 1));
  *lo = static_cast<int>(floor(pos));
  *hi = min(*lo + 1, nc - 1);
  *frac = pos - *lo;
}

template <typename Dtype>
__global__ void Upsample(const int H, const int W, const int Hc, const int Wc, const int s,
    const double* a, Dtype* out) {
  CUDA_KERNEL_LOOP(i, H * W) {
    const int y = i / W, x = i % W;
    int y0, y1, x0, x1;
    double fy, fx;
    Interp(y, Hc, s, &y0, &y1, &fy);
    Interp(x, Wc, s, &x0, &x1, &fx);
    out[i] = static_cast<Dtype>(
        (1 - fy) * ((1 - fx) * a[y0 * Wc + x0] + fx * a[y0 * Wc + x1]) +
        fy * ((1 - fx) * a[y1 * Wc + x0] + fx * a[y1 * Wc + x1]));
  }
}

// U^T d as a gather: a coarse cell collects the fine pixels within s + 1 of its centre.
template <typename Dtype>
__global__ void UpsampleTranspose(const int H, const int W, const int Hc, const int Wc,
    const int s, const Dtype* d, double* out) {
  CUDA_KERNEL_LOOP(I, Hc * Wc) {
    const int Y = I / Wc, X = I % Wc;
    double acc = 0;
    for (int y = max(0, (Y - 1) * s); y < min(H, (Y + 2) * s); ++y) {
      int y0, y1;
      double fy;
      Interp(y, Hc, s, &y0, &y1, &fy);
      const double wy = (y0 == Y ? 1 - fy : 0) + (y1 == Y ? fy : 0);
      if (wy == 0) continue;
      for (int x = max(0, (X - 1) * s); x < min(W, (X + 2) * s); ++x) {
        int x0, x1;
        double fx;
        Interp(x, Wc, s, &x0, &x1, &fx);
        const double wx = (x0 == X ? 1 - fx : 0) + (x1 == X ? fx : 0);
        acc += wy * wx * d[y * W + x];
      }
    }
    out[I] = acc;
  }
}

// out = in, converted (the blobs' Dtype and the float V-cycle's vectors to and from float64)
template <typename In, typename Out>
__global__ void Convert(const int n, const In* in, Out* out) {
  CUDA_KERNEL_LOOP(i, n) { out[i] = static_cast<Out>(in[i]); }
}

// x *= s (a power of two: RightHandSidePrescale, RightHandSideScale)
__global__ void ScaleInPlace(const int n, const double s, double* x) {
  CUDA_KERNEL_LOOP(i, n) { x[i] *= s; }
}

// dE/dw_ij = -(g_i - g_j)(alpha_i - alpha_j) on the solve grid, spread to the input edges.
template <typename Dtype>
__global__ void EdgeGradient(const int H, const int W, const int Wc, const int s,
    const double* g, const double* a, Dtype* w_diff) {
  CUDA_KERNEL_LOOP(i, H * W) {
    const int y = i / W, x = i % W, HW = H * W;
    const int I = (y / s) * Wc + x / s;
    w_diff[i] = (x + 1 < W && (x + 1) % s == 0) ?
        static_cast<Dtype>(-(g[I] - g[I + 1]) * (a[I] - a[I + 1])) : Dtype(0);
    w_diff[HW + i] = (y + 1 < H && (y + 1) % s == 0) ?
        static_cast<Dtype>(-(g[I] - g[I + Wc]) * (a[I] - a[I + Wc])) : Dtype(0);
  }
}

#define LAUNCH(n, stream) CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS, 0, stream

// An item's hierarchy of Real: its levels on the host and on the device.
template <typename Real> struct Hierarchy {
  const std::vector<GpuLevelOf<Real> >& levels;
  const GpuLevelOf<Real>* dev_levels;
};
inline Hierarchy<double> HierarchyOf(const GpuItem& item, double) {
  return Hierarchy<double>{item.levels, item.dev_levels};
}
inline Hierarchy<float> HierarchyOf(const GpuItem& item, float) {
  return Hierarchy<float>{item.flevels, item.dev_flevels};
}

// z = V-cycle(r) from level l of the item's hierarchy of Real, with r and z that level's
// right-hand side and result.
template <typename Real>
void VCycleGpu(const GpuItem& item, const GpuMultigridTuning& mg, int l, const Real* r,
               Real* z) {
  const Hierarchy<Real> h = HierarchyOf(item, Real());
  const GpuLevelOf<Real>& L = h.levels[l];
  const int last = static_cast<int>(h.levels.size()) - 1;
  const int n = L.H * L.W;
  const Real omega = static_cast<Real>(mg.omega);
  const Real scale = static_cast<Real>(kMultigridCoarseScale);
  cudaStream_t st = item.stream;
  if (n <= mg.block_unknowns || l == last) {
    BlockVCycle<Real><<<1, kBlockLevelThreads, 0, st>>>(h.dev_levels, l, last,
        mg.BlockVCycleSweeps(l), omega, scale, item.inverse, r, z);
    return;
  }
  const GpuLevelOf<Real>& C = h.levels[l + 1];
  if (mg.tiled) {  // the pre-smoothed x in L.r (scratch here), read by the post-smoothing
    const TileShape tile = LevelTileShape(L.H, L.W, kTileRows, kTileCols, kTileHalvings,
                                          mg.min_tiles);
    const dim3 tiles(tile.Across(L.W), tile.Down(L.H));
    const size_t bytes = VCycleTile(L.H, L.W, tile.rows, tile.cols, TileHalo(mg.sweeps), 0, 0)
                         .size() * sizeof(Real);  // the tile and its halo
    TiledPreSmoothKernel<Real><<<tiles, kTileThreads, bytes, st>>>(L.H, L.W, tile.rows, tile.cols,
        mg.sweeps, omega, L.ew, L.sw, L.diag, r, L.r, C.W, C.b);
    VCycleGpu(item, mg, l + 1, C.b, C.x);
    TiledPostSmoothKernel<Real><<<tiles, kTileThreads, bytes, st>>>(L.H, L.W, tile.rows,
        tile.cols, mg.sweeps, omega, scale, L.ew, L.sw, L.diag, r, L.r, C.x, C.W, z);
    return;
  }
  const int half = L.H * ((L.W + 1) / 2);
  FirstHalfSweep<Real><<<LAUNCH(n, st)>>>(L.H, L.W, omega, L.diag, r, z);  // z = 0, then colour 0
  for (int s = 0; s < mg.sweeps; ++s) {
    if (s > 0) {
      SmoothColor<Real><<<LAUNCH(half, st)>>>(L.H, L.W, 0, omega, L.ew, L.sw, L.diag, r, z);
    }
    SmoothColor<Real><<<LAUNCH(half, st)>>>(L.H, L.W, 1, omega, L.ew, L.sw, L.diag, r, z);
  }
  ResidualRestrict<Real><<<LAUNCH(C.H * C.W, st)>>>(L.H, L.W, L.ew, L.sw, L.diag, z, r, C.H, C.W,
                                               C.b);
  VCycleGpu(item, mg, l + 1, C.b, C.x);
  ProlongAdd<Real><<<LAUNCH(n, st)>>>(L.H, L.W, C.W, scale, C.x, z);
  for (int s = 0; s < mg.sweeps; ++s) {
    SmoothColor<Real><<<LAUNCH(half, st)>>>(L.H, L.W, 1, omega, L.ew, L.sw, L.diag, r, z);
    SmoothColor<Real><<<LAUNCH(half, st)>>>(L.H, L.W, 0, omega, L.ew, L.sw, L.diag, r, z);
  }
}

// z = M^-1 r: the V-cycle (with a float32 hierarchy: from its float(r), which the CG update
// wrote, to its float z, which the CG reads: WithPreconditionedZ) or Jacobi.
void Precondition(const GpuItem& item, const GpuMultigridTuning* multigrid) {
  if (multigrid && multigrid->float32) {
    const GpuLevelOf<float>& F = item.flevels[0];
    VCycleGpu<float>(item, *multigrid, 0, F.b, F.x);
  } else if (multigrid) {
    VCycleGpu<double>(item, *multigrid, 0, item.r, item.z);
  } else {
    const GpuLevel& L = item.levels[0];
    const int n = L.H * L.W;
    DivideByDiag<<<LAUNCH(n, item.stream)>>>(n, item.r, L.diag, item.z);
  }
}

// The float V-cycle's right-hand side float(r) (flevels[0].b), or NULL without one.
float* FloatRhs(const GpuItem& item, const GpuMultigridTuning* multigrid) {
  return (multigrid && multigrid->float32) ? item.flevels[0].b : NULL;
}

// use(z) with z where Precondition left it: the float V-cycle's float32 z (flevels[0].x), or
// item.z (float64).
template <typename Use>
void WithPreconditionedZ(const GpuItem& item, const GpuMultigridTuning* multigrid, Use use) {
  if (multigrid && multigrid->float32) {
    use(static_cast<const float*>(item.flevels[0].x));
  } else {
    use(static_cast<const double*>(item.z));
  }
}

// On unless DMPN_CUDA_GRAPHS is "0".
bool CudaGraphsWanted() {
  const char* v = std::getenv("DMPN_CUDA_GRAPHS");
  return !(v && std::strcmp(v, "0") == 0);
}

// The one warning of a process whose CUDA graphs could not be made; clears the error.
void WarnNoGraphs(cudaError_t err) {
  static bool warned = false;
  if (!warned) {
    LOG(WARNING) << "SparseLaplacianSolve: no CUDA graph (" << cudaGetErrorString(err)
                 << "); launching directly";
    warned = true;
  }
  cudaGetLastError();  // the direct launches check their own
}

// What `queue` puts on `stream`, captured as an executable graph (not run), or NULL where
// capture cannot begin, a call that `queue` makes fails (it returns the first such error) or
// the graph cannot be made (WarnNoGraphs; the caller launches directly). The queued work must
// not synchronise or touch the legacy default stream.
template <typename Queue>
cudaGraphExec_t CaptureGraph(cudaStream_t stream, Queue queue) {
  // An error left by earlier direct launches is reported here: WarnNoGraphs would clear it.
  CUDA_POST_KERNEL_CHECK;
  cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    WarnNoGraphs(err);
    return NULL;
  }
  const cudaError_t queued = queue();
  cudaGraph_t graph = NULL;
  err = cudaStreamEndCapture(stream, &graph);  // always: the stream leaves capture mode
  if (queued != cudaSuccess) err = queued;
  cudaGraphExec_t exec = NULL;
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  if (err != cudaSuccess) {
    WarnNoGraphs(err);
    return NULL;
  }
  return exec;
}

// Preconditioned CG for every item of the batch, in lockstep: each iteration is queued on all
// the items' streams before the host waits for any of them. x_i = A_i^-1 b_i, with b and x
// solve-grid vectors of each item (pointers into its workspace). The host waits once per
// iteration, for r.r, while the GPU goes on with the next preconditioner (wasted only on the
// last iteration). Returns whether each item converged; stats say how far each got.
// multigrid: the V-cycle's tuning, or NULL for the Jacobi preconditioner.
std::vector<bool> SolveGpu(std::vector<GpuItem>* items, double* GpuItem::*b,
    double* GpuItem::*x, double tol, int max_iter, const GpuMultigridTuning* multigrid,
    std::vector<GridMultigridSolver::Stats>* stats) {
  const int num = static_cast<int>(items->size());
  std::vector<bool> converged(num, false), active(num, false);
  // b's scales (powers of two, nearly always 1): prescale[i] where b.b left float64's range,
  // then norm_scale[i]. Their product can overflow (2^600 times up to 2^474), so they are
  // undone one after the other.
  std::vector<double> bnorm(num), prescale(num, 1.), norm_scale(num, 1.);
  // v.v of an item's vector, queued on its stream to reach host_check[0]
  auto queue_square_norm = [](GpuItem& it, int n, const double* v) {
    Dot<<<ReduceBlocks(n), kReduceThreads, 0, it.stream>>>(n, v, v, it.partial, it.retired,
                                                           &it.cg->check[0]);
    CUDA_CHECK(cudaMemcpyAsync(it.host_check, it.cg->check, 2 * sizeof(double),
                               cudaMemcpyDeviceToHost, it.stream));
  };
  for (int i = 0; i < num; ++i) {
    GpuItem& it = (*items)[i];
    const int n = it.levels[0].H * it.levels[0].W;
    CUDA_CHECK(cudaMemsetAsync(it.*x, 0, n * sizeof(double), it.stream));
    CUDA_CHECK(cudaMemcpyAsync(it.r, it.*b, n * sizeof(double), cudaMemcpyDeviceToDevice,
                               it.stream));
    queue_square_norm(it, n, it.*b);
  }
  for (int i = 0; i < num; ++i) {
    GpuItem& it = (*items)[i];
    const int n = it.levels[0].H * it.levels[0].W;
    CUDA_CHECK(cudaStreamSynchronize(it.stream));
    prescale[i] = RightHandSidePrescale(it.host_check[0]);
    if (prescale[i] != 1) {  // r = prescale b, exactly, and r.r again
      ScaleInPlace<<<LAUNCH(n, it.stream)>>>(n, prescale[i], it.r);
      queue_square_norm(it, n, it.r);
      CUDA_CHECK(cudaStreamSynchronize(it.stream));
    }
    bnorm[i] = std::sqrt(it.host_check[0]);
    (*stats)[i].iterations = 0;
    (*stats)[i].relative_residual = 0;
    (*stats)[i].cuda_graphs = false;
    if (bnorm[i] == 0) {  // x = 0 is exact
      prescale[i] = 1;
      converged[i] = true;
      continue;
    }
    active[i] = true;
    norm_scale[i] = RightHandSideScale(bnorm[i]);
    if (norm_scale[i] != 1) {  // r = norm_scale prescale b, exactly
      ScaleInPlace<<<LAUNCH(n, it.stream)>>>(n, norm_scale[i], it.r);
      bnorm[i] *= norm_scale[i];
    }
    if (float* r_float = FloatRhs(it, multigrid)) {
      Convert<<<LAUNCH(n, it.stream)>>>(n, it.r, r_float);
    }
    Precondition(it, multigrid);
    WithPreconditionedZ(it, multigrid, [&](const auto* z) {  // r.z
      Dot<<<ReduceBlocks(n), kReduceThreads, 0, it.stream>>>(n, it.r, z, it.partial, it.retired,
                                                             &it.cg->rz[0]);
    });
    CUDA_CHECK(cudaMemsetAsync(&it.cg->have_direction, 0, sizeof(int), it.stream));
  }
  const bool graphs = CudaGraphsWanted();
  const int solution = x == &GpuItem::sol;  // which update graph: x enters its kernels
  for (int k = 1; k <= max_iter; ++k) {
    bool any = false;
    for (int i = 0; i < num; ++i) {
      if (!active[i]) continue;
      any = true;
      GpuItem& it = (*items)[i];
      const GpuLevel& L = it.levels[0];
      const int n = L.H * L.W, blocks = ReduceBlocks(n);
      float* r_float = FloatRhs(it, multigrid);
      // Iteration k's two halves; their arguments depend on k only through its parity. Each
      // returns the error of the runtime call it makes (kernel launches are checked after),
      // so that a capture can fall back where the call fails.
      auto update = [&, k]() {
        WithPreconditionedZ(it, multigrid, [&](const auto* z) {
          DirectionOperatorDot<<<blocks, kReduceThreads, 0, it.stream>>>(L.H, L.W, (k - 1) & 1,
              L.ew, L.sw, L.diag, z, it.p[(k - 1) & 1], it.p[k & 1], it.q, it.partial,
              it.retired, it.cg);
        });
        CgUpdateDot<<<blocks, kReduceThreads, 0, it.stream>>>(n, (k - 1) & 1, it.p[k & 1],
            it.q, it.*x, it.r, r_float, it.partial, it.retired, it.cg);
        return cudaMemcpyAsync(it.host_check, it.cg->check, 2 * sizeof(double),
                               cudaMemcpyDeviceToHost, it.stream);
      };
      auto precondition = [&, k]() {
        Precondition(it, multigrid);
        WithPreconditionedZ(it, multigrid, [&](const auto* z) {
          Dot<<<blocks, kReduceThreads, 0, it.stream>>>(n, it.r, z, it.partial, it.retired,
                                                        &it.cg->rz[k & 1]);
        });
        return cudaSuccess;
      };
      cudaGraphExec_t& up = it.update[solution][(k - 1) & 1];
      cudaGraphExec_t& pre = it.precondition[multigrid != NULL][k & 1];
      if (graphs && !it.graphs_failed && (!up || !pre)) {
        if (!up) up = CaptureGraph(it.stream, update);
        if (!pre) pre = CaptureGraph(it.stream, precondition);
        it.graphs_failed = !up || !pre;
      }
      const bool replay = graphs && up && pre;
      (*stats)[i].cuda_graphs = replay;
      CUDA_CHECK(replay ? cudaGraphLaunch(up, it.stream) : update());
      CUDA_CHECK(cudaEventRecord(it.checked, it.stream));
      CUDA_CHECK(replay ? cudaGraphLaunch(pre, it.stream) : precondition());
    }
    // A failed launch shows here, not later as a "did not converge" with stale scalars.
    CUDA_POST_KERNEL_CHECK;
    if (!any) break;
    for (int i = 0; i < num; ++i) {
      if (!active[i]) continue;
      GpuItem& it = (*items)[i];
      CUDA_CHECK(cudaEventSynchronize(it.checked));
      (*stats)[i].iterations = k;
      const double rel = std::sqrt(it.host_check[0]) / bnorm[i];
      (*stats)[i].relative_residual = rel;
      if (it.host_check[1] != 0 || !std::isfinite(rel)) {  // p.q <= 0: not positive definite
        active[i] = false;
        // a breakdown reads as nan, as on the CPU (NotConvergedMessage: an overflow)
        if (it.host_check[1] != 0) {
          (*stats)[i].relative_residual = std::numeric_limits<double>::quiet_NaN();
        }
      } else if (rel <= tol) {
        active[i] = false;
        converged[i] = true;
      }
    }
  }
  for (int i = 0; i < num; ++i) {  // the right-hand side's scales undone
    GpuItem& it = (*items)[i];
    const int n = it.levels[0].H * it.levels[0].W;
    for (double s : {norm_scale[i], prescale[i]}) {
      if (s != 1) ScaleInPlace<<<LAUNCH(n, it.stream)>>>(n, 1 / s, it.*x);
    }
  }
  CUDA_POST_KERNEL_CHECK;
  return converged;
}

double Milliseconds(std::chrono::steady_clock::time_point from,
    std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// An h x w level's six arrays.
template <typename Real>
GpuLevelOf<Real> AllocLevel(int h, int w) {
  GpuLevelOf<Real> L;
  L.H = h;
  L.W = w;
  Real** arrays[] = {&L.ew, &L.sw, &L.diag, &L.x, &L.b, &L.r};
  for (Real** a : arrays) *a = DeviceAlloc<Real>(h * w);
  return L;
}

// The levels' device copy (for the one-block V-cycle).
template <typename Real>
GpuLevelOf<Real>* DeviceCopy(const std::vector<GpuLevelOf<Real> >& levels) {
  const size_t bytes = levels.size() * sizeof(GpuLevelOf<Real>);
  GpuLevelOf<Real>* dev = NULL;
  CUDA_CHECK(cudaMalloc(&dev, bytes));
  CUDA_CHECK(cudaMemcpy(dev, levels.data(), bytes, cudaMemcpyHostToDevice));
  return dev;
}

// The levels' arrays and their device copy freed (NULL: none made), the levels cleared.
template <typename Real>
void FreeLevels(std::vector<GpuLevelOf<Real> >* levels, GpuLevelOf<Real>* dev) {
  for (GpuLevelOf<Real>& L : *levels) {
    Real* arrays[] = {L.ew, L.sw, L.diag, L.x, L.b, L.r};
    for (Real* a : arrays) CUDA_CHECK(cudaFree(a));
  }
  levels->clear();
  CUDA_CHECK(cudaFree(dev));
}

// An item's buffers for an Hc x Wc solve grid; float32: the float copy of the hierarchy too.
void AllocItem(int Hc, int Wc, bool float32, GpuItem* item) {
  const int nc = Hc * Wc;
  int h = Hc, w = Wc;
  while (true) {
    item->levels.push_back(AllocLevel<double>(h, w));
    if (float32) item->flevels.push_back(AllocLevel<float>(h, w));
    if (h * w <= kMultigridCoarsestUnknowns) break;
    h = (h + 1) / 2;
    w = (w + 1) / 2;
  }
  const int m = h * w;
  item->chol = DeviceAlloc(m * m);
  item->inverse = DeviceAlloc(m * m);
  item->dev_levels = DeviceCopy(item->levels);
  if (float32) item->dev_flevels = DeviceCopy(item->flevels);
  double** vectors[] = {&item->alpha, &item->rhs, &item->sol, &item->r, &item->z, &item->p[0],
                        &item->p[1], &item->q};
  for (double** v : vectors) *v = DeviceAlloc(nc);
  CUDA_CHECK(cudaMalloc(&item->flags, kNumFlags * sizeof(int)));
  CUDA_CHECK(cudaMalloc(&item->cg, sizeof(CgScalars)));
  item->partial = DeviceAlloc(kReduceMaxBlocks);
  CUDA_CHECK(cudaMalloc(&item->retired, sizeof(unsigned)));
  CUDA_CHECK(cudaMemset(item->retired, 0, sizeof(unsigned)));
  CUDA_CHECK(cudaMallocHost(&item->host_check, 2 * sizeof(double)));
  CUDA_CHECK(cudaStreamCreate(&item->stream));
  CUDA_CHECK(cudaEventCreateWithFlags(&item->checked, cudaEventDisableTiming));
}

void FreeItem(GpuItem* item) {
  FreeLevels(&item->levels, item->dev_levels);
  FreeLevels(&item->flevels, item->dev_flevels);  // none without the float hierarchy
  double* vectors[] = {item->chol, item->inverse, item->alpha, item->rhs, item->sol, item->r,
                       item->z, item->p[0], item->p[1], item->q, item->partial};
  for (double* v : vectors) CUDA_CHECK(cudaFree(v));
  CUDA_CHECK(cudaFree(item->flags));
  CUDA_CHECK(cudaFree(item->cg));
  CUDA_CHECK(cudaFree(item->retired));
  CUDA_CHECK(cudaFreeHost(item->host_check));
  CUDA_CHECK(cudaStreamDestroy(item->stream));
  CUDA_CHECK(cudaEventDestroy(item->checked));
  for (int a = 0; a < 2; ++a) {
    for (int b = 0; b < 2; ++b) {
      if (item->update[a][b]) CUDA_CHECK(cudaGraphExecDestroy(item->update[a][b]));
      if (item->precondition[a][b]) CUDA_CHECK(cudaGraphExecDestroy(item->precondition[a][b]));
    }
  }
}

}  // namespace

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::FreeGpuState() {
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  if (!st) return;
  for (size_t n = 0; n < st->items.size(); ++n) FreeItem(&st->items[n]);
  delete st;
  gpu_state_ = nullptr;
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num();
  solved_shape_ = bottom[0]->shape();
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  // the V-cycle's tuning (the Jacobi preconditioner has none)
  const GpuMultigridTuning tuning = multigrid_ ? GpuMultigridFromEnv() : GpuMultigridTuning();
  if (!st || st->num != num || st->Hc != Hc_ || st->Wc != Wc_ || st->tuning != tuning) {
    FreeGpuState();
    st = new GpuState();
    gpu_state_ = st;
    st->num = num;
    st->Hc = Hc_;
    st->Wc = Wc_;
    st->tuning = tuning;
    st->items.resize(num);
    for (int n = 0; n < num; ++n) AllocItem(Hc_, Wc_, tuning.float32, &st->items[n]);
  }
  fwd_stats_.resize(num);
  bwd_stats_.resize(num);
  const int nc = Hc_ * Wc_;
  // Host clocks around phases the host waits for anyway (logged at GLOG_v=1): the set-up's
  // share of a solve and the time per CG iteration, without profiler.
  const auto start = std::chrono::steady_clock::now();
  // The inputs were written on the legacy default stream, which the (blocking) item streams
  // wait for.
  for (int n = 0; n < num; ++n) {
    GpuItem& item = st->items[n];
    cudaStream_t s = item.stream;
    GpuLevel& F = item.levels[0];
    CUDA_CHECK(cudaMemsetAsync(item.flags, 0, kNumFlags * sizeof(int), s));
    BuildSystem<Dtype><<<LAUNCH(nc, s)>>>(Hc_, Wc_, H_, W_, shrink_,
        bottom[0]->gpu_data() + bottom[0]->offset(n),
        bottom[1]->gpu_data() + bottom[1]->offset(n), c_, F.ew, F.sw, F.diag, item.rhs,
        item.flags);
    AddDegrees<<<LAUNCH(nc, s)>>>(Hc_, Wc_, F.ew, F.sw, F.diag, item.flags);
    for (size_t l = 1; l < item.levels.size(); ++l) {
      const GpuLevel& f = item.levels[l - 1];
      GpuLevel& c = item.levels[l];
      Coarsen<<<LAUNCH(c.H * c.W, s)>>>(f.H, f.W, f.ew, f.sw, f.diag, c.H, c.W, c.ew, c.sw,
                                        c.diag);
    }
    for (size_t l = 0; l < item.flevels.size(); ++l) {  // the float V-cycle's copy
      const GpuLevel& L = item.levels[l];
      const GpuLevelOf<float>& F = item.flevels[l];
      LevelToFloat<<<LAUNCH(L.H * L.W, s)>>>(L.H * L.W, L.ew, L.sw, L.diag, F.ew, F.sw, F.diag);
    }
    const GpuLevel& K = item.levels.back();
    const int m = K.H * K.W;
    Densify<<<LAUNCH(m * m, s)>>>(K.H, K.W, K.ew, K.sw, K.diag, item.chol);
    CholeskyFactor<<<1, kCholThreads, 0, s>>>(m, K.W, item.chol, item.flags);
    CholeskyInverse<<<1, kCholThreads, 0, s>>>(m, K.W, item.chol, item.inverse);
    CUDA_POST_KERNEL_CHECK;
  }
  for (int n = 0; n < num; ++n) {
    GpuItem& item = st->items[n];
    int flags[kNumFlags];
    CUDA_CHECK(cudaMemcpyAsync(flags, item.flags, sizeof(flags), cudaMemcpyDeviceToHost,
                               item.stream));
    CUDA_CHECK(cudaStreamSynchronize(item.stream));
    if (flags[0] || flags[2]) {  // rare: the first invalid input is named on the host
      const std::string invalid = InvalidInputMessage(
          bottom[0]->cpu_data() + bottom[0]->offset(n),
          bottom[1]->cpu_data() + bottom[1]->offset(n));
      LOG(FATAL) << Where(n) << (invalid.empty() ? (flags[0]
          ? "some affinities are not finite values >= 0"
          : "some trimap values are not in [0, 1] (0 background, 1 foreground, between "
            "unknown)") : invalid);
    }
    CHECK_GT(flags[1], 0) << Where(n) << "the trimap has no known pixel (0 or 1), so the "
        "system (L + C) is singular";
    CHECK(!flags[5]) << Where(n) << DegreeOverflowMessage(bottom[0]->cpu_data()
                                                          + bottom[0]->offset(n));
    if (flags[4]) {  // rare (AffinityExp's weights are > 0): the search runs on the host
      std::vector<double> ew(nc), sw(nc);
      const GpuLevel& F = item.levels[0];
      CUDA_CHECK(cudaMemcpy(ew.data(), F.ew, nc * sizeof(double), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(sw.data(), F.sw, nc * sizeof(double), cudaMemcpyDeviceToHost));
      const int node = FindUnanchoredNode(H_, W_, shrink_,
          bottom[1]->cpu_data() + bottom[1]->offset(n), ew.data(), sw.data());
      CHECK_LT(node, 0) << Where(n) << UnanchoredMessage(node);
    }
    // After the search, as the CPU path finds a coarsened overflow in its Setup.
    CHECK(!flags[6]) << Where(n) << DegreeOverflowMessage(bottom[0]->cpu_data()
                                                          + bottom[0]->offset(n));
    CHECK(!flags[3]) << Where(n) << "the system is singular (a part of the image not "
        "connected to any known pixel?)";
  }
  const auto set_up = std::chrono::steady_clock::now();
  const std::vector<bool> ok = SolveGpu(&st->items, &GpuItem::rhs, &GpuItem::alpha, tol_,
      max_iter_, multigrid_ ? &st->tuning : NULL, &fwd_stats_);
  const auto solved = std::chrono::steady_clock::now();
  for (int n = 0; n < num; ++n) {
    VLOG(1) << Where(n) << "forward solve (GPU): " << st->items[n].levels.size() << " levels, "
            << fwd_stats_[n].iterations << " iterations, relative residual "
            << fwd_stats_[n].relative_residual << "; the batch's set-up "
            << Milliseconds(start, set_up) << " ms, its solves " << Milliseconds(set_up, solved)
            << " ms";
    CHECK(ok[n]) << Where(n) << NotConvergedMessage("forward", fwd_stats_[n],
                                                    bottom[0]->cpu_data() + bottom[0]->offset(n));
    GpuItem& item = st->items[n];
    Dtype* alpha = top[0]->mutable_gpu_data() + top[0]->offset(n);
    Upsample<Dtype><<<LAUNCH(H_ * W_, item.stream)>>>(H_, W_, Hc_, Wc_, shrink_, item.alpha,
                                                      alpha);
  }
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name()
               << "' cannot backpropagate to the trimap";
  }
  if (!propagate_down[0]) return;
  CheckForwardMatches(*bottom[0]);
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  CHECK(st && st->num == bottom[0]->num()) << this->type() << " layer '"
      << this->layer_param_.name() << "': Backward without a Forward on the GPU";
  for (int n = 0; n < st->num; ++n) {
    GpuItem& item = st->items[n];
    const Dtype* top_diff = top[0]->gpu_diff() + top[0]->offset(n);
    if (shrink_ == 1) {
      Convert<<<LAUNCH(H_ * W_, item.stream)>>>(H_ * W_, top_diff, item.rhs);
    } else {
      UpsampleTranspose<Dtype><<<LAUNCH(Hc_ * Wc_, item.stream)>>>(H_, W_, Hc_, Wc_, shrink_,
                                                                   top_diff, item.rhs);
    }
  }
  const auto start = std::chrono::steady_clock::now();
  const std::vector<bool> ok = SolveGpu(&st->items, &GpuItem::rhs, &GpuItem::sol, tol_,
      max_iter_, multigrid_ ? &st->tuning : NULL, &bwd_stats_);
  const auto solved = std::chrono::steady_clock::now();
  for (int n = 0; n < st->num; ++n) {
    VLOG(1) << Where(n) << "backward solve (GPU): " << bwd_stats_[n].iterations
            << " iterations, relative residual " << bwd_stats_[n].relative_residual
            << "; the batch's solves " << Milliseconds(start, solved) << " ms";
    if (!ok[n]) {  // a non-finite gradient from above is the likelier cause
      const std::string non_finite = NonFiniteTopDiffMessage(top[0]->cpu_diff()
                                                             + top[0]->offset(n));
      CHECK(non_finite.empty()) << Where(n) << non_finite;
    }
    CHECK(ok[n]) << Where(n) << NotConvergedMessage("backward", bwd_stats_[n],
                                                    bottom[0]->cpu_data() + bottom[0]->offset(n));
    GpuItem& item = st->items[n];
    EdgeGradient<Dtype><<<LAUNCH(H_ * W_, item.stream)>>>(H_, W_, Wc_, shrink_, item.sol,
        item.alpha, bottom[0]->mutable_gpu_diff() + bottom[0]->offset(n));
  }
  CUDA_POST_KERNEL_CHECK;
}

INSTANTIATE_LAYER_GPU_FUNCS(SparseLaplacianSolveLayer);
template void SparseLaplacianSolveLayer<float>::FreeGpuState();
template void SparseLaplacianSolveLayer<double>::FreeGpuState();

}  // namespace caffe
