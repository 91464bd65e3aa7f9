#ifndef CAFFE_LAYERS_GPU_VCYCLE_HPP_
#define CAFFE_LAYERS_GPU_VCYCLE_HPP_

// The GPU path's V-cycle (SparseLaplacianSolve) one pixel at a time: the steps that its
// grid-wide kernels, its one-block kernel and its tiled kernels share, compiled for the host
// too, so that the CPU gtests (GpuVCycleTilesTest, GpuBlockVCycleTest) check the tiled smoother
// and the one-block V-cycle against the grid-wide steps with the very functions the kernels
// run. Real: the hierarchy's type, double (the default) or float (DMPN_GPU_MULTIGRID
// "...,float", as the CPU's V-cycle). With the Galerkin coarsening (GalerkinCell, the layer's
// header) the whole V-cycle runs on the host as CG's preconditioner (GpuVCycleCgTest). Also the
// CG's new direction with its product with A (GpuCgDirectionTest).
//
// A level is H x W, row-major: east / south edge weights ew / sw, diagonal diag. Red-black
// colour of pixel (y, x): (y + x) & 1.

#include "caffe/layers/host_device.hpp"
#include "caffe/layers/sparse_laplacian_solve_layer.hpp"

namespace caffe {

DMPN_HOST_DEVICE inline int VCycleMin(int a, int b) { return a < b ? a : b; }

/// A level of the hierarchy in float64 (set-up, the fine operator) or, for a float32 V-cycle,
/// its float copy: H x W, edge weights, diagonal, the V-cycle's x and b, and scratch r. Plain
/// data: also copied to the device for the one-block V-cycle.
template <typename Real>
struct GpuLevelOf {
  int H, W;
  Real *ew, *sw, *diag, *x, *b, *r;
};

/// SOR's update of x towards its Gauss-Seidel value gs; gs itself where omega is 1.
template <typename Real>
DMPN_HOST_DEVICE inline Real Relaxed(Real x, Real gs, Real omega) {
  return (omega == 1) ? gs : x + omega * (gs - x);
}

/// (A v)_i at pixel (y, x), index i, with v's entries at j, j +- 1 and j +- stride.
template <typename Real>
DMPN_HOST_DEVICE inline Real OperatorAt(int H, int W, int y, int x, int i, const Real* ew,
    const Real* sw, const Real* diag, const Real* v, int j, int stride) {
  Real s = diag[i] * v[j];
  if (x + 1 < W) s -= ew[i] * v[j + 1];
  if (x > 0) s -= ew[i - 1] * v[j - 1];
  if (y + 1 < H) s -= sw[i] * v[j + stride];
  if (y > 0) s -= sw[i - W] * v[j - stride];
  return s;
}

/// (A x)_i, x laid out as the level.
template <typename Real>
DMPN_HOST_DEVICE inline Real OperatorPoint(int H, int W, int i, const Real* ew, const Real* sw,
                                           const Real* diag, const Real* x) {
  return OperatorAt(H, W, i / W, i % W, i, ew, sw, diag, x, i, W);
}

/// The CG's new direction at index j: z + beta p_old, or z for a solve's first direction.
template <typename Z>
DMPN_HOST_DEVICE inline double DirectionAt(const Z* z, const double* p_old, double beta,
                                           bool first, int j) {
  return first ? static_cast<double>(z[j]) : fma(beta, p_old[j], static_cast<double>(z[j]));
}

/// (A p)_i of the new direction p, which it forms at i and at i's four neighbours from z and
/// p_old (one kernel makes p and A p: DirectionOperatorDot); *p_i: p at i.
template <typename Z>
DMPN_HOST_DEVICE inline double DirectionOperatorPoint(int H, int W, int i, const double* ew,
    const double* sw, const double* diag, const Z* z, const double* p_old, double beta,
    bool first, double* p_i) {
  const int y = i / W, x = i % W;
  double v[9] = {};  // p's 3 x 3 neighbourhood, row by row, as OperatorAt reads it
  v[4] = DirectionAt(z, p_old, beta, first, i);
  if (x + 1 < W) v[5] = DirectionAt(z, p_old, beta, first, i + 1);
  if (x > 0) v[3] = DirectionAt(z, p_old, beta, first, i - 1);
  if (y + 1 < H) v[7] = DirectionAt(z, p_old, beta, first, i + W);
  if (y > 0) v[1] = DirectionAt(z, p_old, beta, first, i - W);
  *p_i = v[4];
  return OperatorAt(H, W, y, x, i, ew, sw, diag, v, 4, 3);
}

/// Pixel (y, x) after the first pre-smoothing half-sweep (colour 0) from x = 0: a colour-0
/// pixel's neighbours are all 0, so its Gauss-Seidel value is b / diag; colour 1 stays 0.
template <typename Real>
DMPN_HOST_DEVICE inline Real FirstSweepValue(int y, int x, int i, Real omega, const Real* diag,
                                             const Real* b) {
  return ((y + x) & 1) ? Real(0) : Relaxed(Real(0), b[i] / diag[i], omega);
}

/// Red-black SOR at point k of colour `color` (k counts that colour's points row by row).
template <typename Real>
DMPN_HOST_DEVICE inline void SmoothPoint(int H, int W, int color, int k, Real omega,
    const Real* ew, const Real* sw, const Real* diag, const Real* b, Real* x) {
  const int half = (W + 1) / 2;
  const int y = k / half;
  const int xx = 2 * (k % half) + ((y + color) & 1);
  if (xx >= W) return;
  const int i = y * W + xx;
  x[i] = Relaxed(x[i], GaussSeidelUpdate(H, W, y, xx, i, i + 1, i - 1, ew, sw, diag, b, x),
                 omega);
}

/// x_i plus the scaled coarse correction of its aggregate (P xc, piecewise constant).
template <typename Real>
DMPN_HOST_DEVICE inline Real Prolonged(Real x, int y, int xx, Real scale, const Real* xc,
                                       int Wc) {
  return x + scale * xc[(y / 2) * Wc + xx / 2];
}

/// Coarse cell I's sum of value(i, y, x) over its 2 x 2 aggregate of the fine level (P^T), in
/// one order (rows, then columns) for every restriction, so that they agree bit for bit.
template <typename Value>
DMPN_HOST_DEVICE inline typename Value::Real RestrictSum(int Hf, int Wf, int Wc, int I,
                                                         const Value& value) {
  const int Y = I / Wc, X = I % Wc;
  typename Value::Real s = 0;
  for (int y = 2 * Y; y < VCycleMin(Hf, 2 * Y + 2); ++y) {
    for (int x = 2 * X; x < VCycleMin(Wf, 2 * X + 2); ++x) s += value(y * Wf + x, y, x);
  }
  return s;
}

/// RestrictSum's values: a fine vector's entries (P^T r) ...
template <typename Real_>
struct FineEntry {
  typedef Real_ Real;
  const Real* r;
  DMPN_HOST_DEVICE Real operator()(int i, int, int) const { return r[i]; }
};

/// ... or the fine residual b - A x, v holding x at j = (y - y0) * stride + (x - x0): the level
/// itself (y0 = x0 = 0, stride W) or a tile.
template <typename Real_>
struct FineResidual {
  typedef Real_ Real;
  int H, W;
  const Real *ew, *sw, *diag, *b, *v;
  int y0, x0, stride;
  DMPN_HOST_DEVICE Real operator()(int i, int y, int x) const {
    const int j = (y - y0) * stride + (x - x0);
    return b[i] - OperatorAt(H, W, y, x, i, ew, sw, diag, v, j, stride);
  }
};

// ---- the tiled smoother ---------------------------------------------------------------------
//
// One thread block per tile of the level (tile_h x tile_w pixels, both even, so that a tile
// holds whole 2 x 2 aggregates) runs all of the level's pre-smoothing half-sweeps, the residual
// and its restriction (TiledPreSmooth), or the prolongation and all the post-smoothing
// half-sweeps (TiledPostSmooth): two launches a level instead of one per half-sweep. The block
// keeps its tile and a halo of TileHalo(sweeps) pixels around it in shared memory. A half-sweep
// can only update the pixels whose neighbours the block holds, so each one spoils one more ring
// of the halo: with a halo as wide as the half-sweeps (and, before the residual, one more ring
// for its neighbours; the first pre-smoothing half-sweep from 0 needs none) the tile's own
// pixels get the grid-wide half-sweeps' values, bit for bit, at the cost of smoothing the halo
// too. Pixels of the halo outside the level are left alone.

/// The halo for `sweeps` symmetric sweeps (2 * sweeps half-sweeps either side).
DMPN_HOST_DEVICE constexpr int TileHalo(int sweeps) { return 2 * sweeps; }

/// A level's tile shape: rows x cols, halved (both) while the level would have fewer than
/// min_tiles tiles, at most `halvings` times. On the small levels of a hierarchy few large tiles
/// would leave most multiprocessors idle while each block does all of its tile's half-sweeps;
/// smaller tiles share the work out, at the cost of more halo per pixel. min_tiles 0: rows x
/// cols on every level.
struct TileShape {
  int rows, cols;
  /// Tiles down and across an H x W level (the kernels' grid).
  DMPN_HOST_DEVICE int Down(int H) const { return (H + rows - 1) / rows; }
  DMPN_HOST_DEVICE int Across(int W) const { return (W + cols - 1) / cols; }
};
DMPN_HOST_DEVICE inline TileShape LevelTileShape(int H, int W, int rows, int cols,
                                                 int halvings, int min_tiles) {
  TileShape t{rows, cols};
  for (int h = 0; h < halvings; ++h) {
    if (static_cast<long long>(t.Down(H)) * t.Across(W) >= min_tiles) break;
    t.rows /= 2;
    t.cols /= 2;
  }
  return t;
}

/// Tile (ty, tx) of an H x W level with its halo, as laid out in shared memory: `rows` x `cols`
/// values from the level's pixel (y0, x0), which may lie outside the level.
struct VCycleTile {
  int H, W, tile_h, tile_w, halo, y0, x0, rows, cols;
  DMPN_HOST_DEVICE VCycleTile(int H_, int W_, int tile_h_, int tile_w_, int halo_, int ty,
                              int tx)
      : H(H_), W(W_), tile_h(tile_h_), tile_w(tile_w_), halo(halo_),
        y0(ty * tile_h_ - halo_), x0(tx * tile_w_ - halo_), rows(tile_h_ + 2 * halo_),
        cols(tile_w_ + 2 * halo_) {}
  /// shared-memory values the block needs
  DMPN_HOST_DEVICE int size() const { return rows * cols; }
  DMPN_HOST_DEVICE bool Inside(int y, int x) const {
    return y >= 0 && y < H && x >= 0 && x < W;
  }
};

/// Sync: the block's barrier between phases (__syncthreads() on the device; nothing for one
/// host thread, which does every thread's share of a phase in turn).
struct BlockSync {
  DMPN_HOST_DEVICE void operator()() const {
#ifdef __CUDA_ARCH__
    __syncthreads();
#endif
  }
};

/// One red-black half-sweep of colour `color` over the pixels of the tile at least `margin`
/// (>= 1: their neighbours are in v) from the halo's edge, whose neighbours are at least
/// margin - 1 from it: those still hold the grid-wide values. Thread t of nt; k counts the
/// colour's pixels, row by row.
template <typename Real, typename Sync>
DMPN_HOST_DEVICE inline void TileHalfSweep(const VCycleTile& T, int color, int margin,
    Real omega, const Real* ew, const Real* sw, const Real* diag, const Real* b, Real* v,
    int t, int nt, const Sync& sync) {
  const int rows = T.rows - 2 * margin, cols = T.cols - 2 * margin, half = (cols + 1) / 2;
  const int count = (rows > 0 && cols > 0) ? rows * half : 0;
  for (int k = t; k < count; k += nt) {
    const int ly = margin + k / half, y = T.y0 + ly;
    // the row's first pixel of the colour: (y + x) & 1 == color, x from T.x0 + margin
    const int lx = margin + 2 * (k % half) + ((color - y - T.x0 - margin) & 1);
    const int x = T.x0 + lx;
    if (lx >= T.cols - margin || !T.Inside(y, x)) continue;
    const int i = y * T.W + x, j = ly * T.cols + lx;
    v[j] = Relaxed(v[j], GaussSeidelValue(T.H, T.W, y, x, i, i - 1, ew, sw, diag, b, v, j + 1,
                                          j - 1, j + T.cols, j - T.cols), omega);
  }
  sync();
}

/// The tile's own pixels of v written to x (the halo belongs to other tiles).
template <typename Real>
DMPN_HOST_DEVICE inline void TileStore(const VCycleTile& T, const Real* v, Real* x, int t,
                                       int nt) {
  for (int k = t; k < T.tile_h * T.tile_w; k += nt) {
    const int ly = T.halo + k / T.tile_w, lx = T.halo + k % T.tile_w;
    const int y = T.y0 + ly, xx = T.x0 + lx;
    if (T.Inside(y, xx)) x[y * T.W + xx] = v[ly * T.cols + lx];
  }
}

/// Pre-smoothing from x = 0 (`sweeps` sweeps, colour 0 first) of the tile, its values written
/// to x; then the residual b - A x restricted to the coarse cells of the tile's aggregates,
/// written to cb (the coarse level has Wc columns). v: T.size() values of scratch (shared).
/// Needs T.halo >= TileHalo(sweeps).
template <typename Real, typename Sync>
DMPN_HOST_DEVICE void TiledPreSmooth(const VCycleTile& T, int sweeps, Real omega,
    const Real* ew, const Real* sw, const Real* diag, const Real* b, Real* x, int Wc, Real* cb,
    Real* v, int t, int nt, const Sync& sync) {
  for (int k = t; k < T.size(); k += nt) {
    const int y = T.y0 + k / T.cols, xx = T.x0 + k % T.cols;
    if (T.Inside(y, xx)) v[k] = FirstSweepValue(y, xx, y * T.W + xx, omega, diag, b);
  }
  sync();
  for (int step = 1; step < 2 * sweeps; ++step) {
    TileHalfSweep(T, step & 1, step, omega, ew, sw, diag, b, v, t, nt, sync);
  }
  TileStore(T, v, x, t, nt);
  const int Hc = (T.H + 1) / 2, Y0 = (T.y0 + T.halo) / 2, X0 = (T.x0 + T.halo) / 2;
  const int rows = VCycleMin(T.tile_h / 2, Hc - Y0), cols = VCycleMin(T.tile_w / 2, Wc - X0);
  const FineResidual<Real> residual = {T.H, T.W, ew, sw, diag, b, v, T.y0, T.x0, T.cols};
  for (int k = t; k < rows * cols; k += nt) {
    const int I = (Y0 + k / cols) * Wc + X0 + k % cols;
    cb[I] = RestrictSum(T.H, T.W, Wc, I, residual);
  }
}

/// Post-smoothing of the tile (`sweeps` sweeps, colour 1 first) from x plus the scaled coarse
/// correction xc (Wc columns), written to x_out (not x: other tiles read x for their halos).
/// Needs T.halo >= TileHalo(sweeps).
template <typename Real, typename Sync>
DMPN_HOST_DEVICE void TiledPostSmooth(const VCycleTile& T, int sweeps, Real omega, Real scale,
    const Real* ew, const Real* sw, const Real* diag, const Real* b, const Real* x,
    const Real* xc, int Wc, Real* x_out, Real* v, int t, int nt, const Sync& sync) {
  for (int k = t; k < T.size(); k += nt) {
    const int y = T.y0 + k / T.cols, xx = T.x0 + k % T.cols;
    if (T.Inside(y, xx)) v[k] = Prolonged(x[y * T.W + xx], y, xx, scale, xc, Wc);
  }
  sync();
  for (int step = 0; step < 2 * sweeps; ++step) {
    TileHalfSweep(T, 1 - (step & 1), step + 1, omega, ew, sw, diag, b, v, t, nt, sync);
  }
  TileStore(T, v, x_out, t, nt);
}

// ---- the one-block V-cycle -------------------------------------------------------------------

/// The V-cycle of levels[first..last] (right-hand side b_first, result x_first; the other
/// levels' b and x their own) run by one thread block, thread t of nt, with a barrier (sync)
/// between phases: on the way down, pre-smoothing from x = 0 (FirstSweepValue, then the other
/// half-sweeps) and the residual restricted in one pass; the coarsest level, `last`, solved
/// with its inverse (float64, n x n, symmetric: column reads coalesce); on the way up, the
/// prolongation and post-smoothing. The grid-wide kernels' values, bit for bit. sweeps 0
/// leaves the coarse correction alone: b restricted, x = scale P xc (a barrier per phase,
/// and each smoothing sweep costs two).
template <typename Real, typename Sync>
DMPN_HOST_DEVICE void BlockVCycleSteps(const GpuLevelOf<Real>* levels, int first, int last,
    int sweeps, Real omega, Real scale, const double* inverse, const Real* b_first,
    Real* x_first, int t, int nt, const Sync& sync) {
  for (int l = first; l < last; ++l) {
    const GpuLevelOf<Real> L = levels[l];
    const GpuLevelOf<Real> C = levels[l + 1];
    const Real* b = (l == first) ? b_first : L.b;
    Real* x = (l == first) ? x_first : L.x;
    const int n = L.H * L.W, half = L.H * ((L.W + 1) / 2), nc = C.H * C.W;
    if (sweeps > 0) {
      for (int i = t; i < n; i += nt) {
        x[i] = FirstSweepValue(i / L.W, i % L.W, i, omega, L.diag, b);
      }
      sync();
      for (int step = 1; step < 2 * sweeps; ++step) {
        for (int k = t; k < half; k += nt) {
          SmoothPoint(L.H, L.W, step & 1, k, omega, L.ew, L.sw, L.diag, b, x);
        }
        sync();
      }
      const FineResidual<Real> residual = {L.H, L.W, L.ew, L.sw, L.diag, b, x, 0, 0, L.W};
      for (int I = t; I < nc; I += nt) C.b[I] = RestrictSum(L.H, L.W, C.W, I, residual);
    } else {  // x = 0: the residual is b
      const FineEntry<Real> fine = {b};
      for (int I = t; I < nc; I += nt) C.b[I] = RestrictSum(L.H, L.W, C.W, I, fine);
    }
    sync();
  }
  {
    const GpuLevelOf<Real> K = levels[last];
    const Real* b = (last == first) ? b_first : K.b;
    Real* x = (last == first) ? x_first : K.x;
    const int n = K.H * K.W;
    for (int i = t; i < n; i += nt) {
      double acc = 0;
      for (int j = 0; j < n; ++j) acc += inverse[j * n + i] * b[j];
      x[i] = static_cast<Real>(acc);
    }
    sync();
  }
  for (int l = last - 1; l >= first; --l) {
    const GpuLevelOf<Real> L = levels[l];
    const GpuLevelOf<Real> C = levels[l + 1];
    const Real* b = (l == first) ? b_first : L.b;
    Real* x = (l == first) ? x_first : L.x;
    const int n = L.H * L.W, half = L.H * ((L.W + 1) / 2);
    for (int i = t; i < n; i += nt) {
      x[i] = Prolonged(sweeps > 0 ? x[i] : Real(0), i / L.W, i % L.W, scale, C.x, C.W);
    }
    sync();
    for (int step = 0; step < 2 * sweeps; ++step) {
      for (int k = t; k < half; k += nt) {
        SmoothPoint(L.H, L.W, 1 - (step & 1), k, omega, L.ew, L.sw, L.diag, b, x);
      }
      sync();
    }
  }
}

}  // namespace caffe

#endif  // CAFFE_LAYERS_GPU_VCYCLE_HPP_
