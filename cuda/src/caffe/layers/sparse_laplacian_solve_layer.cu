// GPU path of SparseLaplacianSolve: the same Galerkin-multigrid-preconditioned conjugate
// gradients as the CPU path (see the .cpp), all on the device: set-up, V-cycles, the coarsest
// dense Cholesky (one thread block), forward and backward solves. float64 throughout.
#include <algorithm>
#include <cmath>
#include <vector>

#include "caffe/layers/sparse_laplacian_solve_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

namespace {

const int kCholThreads = 256;

struct GpuLevel {
  int H, W;
  double *ew, *sw, *diag, *x, *b, *r;
};

struct GpuItem {
  std::vector<GpuLevel> levels;
  double* chol;   // coarsest level's n x n Cholesky factor (lower, row-major)
  double* alpha;  // solution on the solve grid
};

struct GpuState {
  int num, Hc, Wc;
  std::vector<GpuItem> items;
  double *rhs, *sol, *r, *z, *p, *q;  // solve-grid vectors shared by the items' solves
  int* flags;                          // [0] bad affinity, [1] known pixels, [2] bad trimap
};

double* DeviceAlloc(size_t n) {
  void* ptr = NULL;
  CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(double)));
  return static_cast<double*>(ptr);
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
        if (!isfinite(t)) bad_trimap = 1;
        if (t <= kTrimapKnownTol || t >= 1 - kTrimapKnownTol) {
          ++known;
          cdiag += c;
          if (t >= 1 - kTrimapKnownTol) b += c;
        }
        if (x + 1 < W) {
          const double e = w[i];
          if (!(isfinite(e) && e >= 0)) bad = 1;
          if ((x + 1) % s == 0) e_east += e;
        }
        if (y + 1 < H) {
          const double e = w[HW + i];
          if (!(isfinite(e) && e >= 0)) bad = 1;
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
  }
}

// diag_i += sum of the weights of the edges at i (a gather: no atomics).
__global__ void AddDegrees(const int H, const int W, const double* ew, const double* sw,
    double* diag) {
  CUDA_KERNEL_LOOP(i, H * W) {
    const int y = i / W, x = i % W;
    double d = ew[i] + sw[i];
    if (x > 0) d += ew[i - 1];
    if (y > 0) d += sw[i - W];
    diag[i] += d;
  }
}

// P^T A P for 2 x 2 aggregates, one thread per coarse cell.
__global__ void Coarsen(const int Hf, const int Wf, const double* few, const double* fsw,
    const double* fdiag, const int Hc, const int Wc, double* cew, double* csw, double* cdiag) {
  CUDA_KERNEL_LOOP(I, Hc * Wc) {
    const int Y = I / Wc, X = I % Wc;
    double d = 0, e = 0, so = 0;
    for (int y = 2 * Y; y < min(Hf, 2 * Y + 2); ++y) {
      for (int x = 2 * X; x < min(Wf, 2 * X + 2); ++x) {
        const int i = y * Wf + x;
        d += fdiag[i];
        if (x + 1 < Wf) { if (x & 1) e += few[i]; else d -= 2 * few[i]; }
        if (y + 1 < Hf) { if (y & 1) so += fsw[i]; else d -= 2 * fsw[i]; }
      }
    }
    cew[I] = e;
    csw[I] = so;
    cdiag[I] = d;
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

// In-place dense Cholesky (lower) in one thread block; flags[3] = 1 if not positive definite.
__global__ void CholeskyFactor(const int n, double* A, int* flags) {
  __shared__ double pivot;
  __shared__ double max_diag;
  if (threadIdx.x == 0) {
    double m = 0;
    for (int i = 0; i < n; ++i) m = fmax(m, A[i * n + i]);
    max_diag = m;
  }
  __syncthreads();
  for (int j = 0; j < n; ++j) {
    if (threadIdx.x == 0) {
      double d = A[j * n + j];
      for (int k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
      if (!(d > 1e-13 * max_diag)) { flags[3] = 1; d = 1; }
      pivot = sqrt(d);
      A[j * n + j] = pivot;
    }
    __syncthreads();
    for (int i = j + 1 + threadIdx.x; i < n; i += blockDim.x) {
      double v = A[i * n + j];
      for (int k = 0; k < j; ++k) v -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = v / pivot;
    }
    __syncthreads();
  }
}

// x = (L L^T)^-1 b in one thread block (b is overwritten).
__global__ void CholeskySolve(const int n, const double* L, double* b, double* x) {
  for (int j = 0; j < n; ++j) {
    if (threadIdx.x == 0) x[j] = b[j] / L[j * n + j];
    __syncthreads();
    for (int i = j + 1 + threadIdx.x; i < n; i += blockDim.x) b[i] -= L[i * n + j] * x[j];
    __syncthreads();
  }
  for (int j = n - 1; j >= 0; --j) {
    if (threadIdx.x == 0) x[j] = x[j] / L[j * n + j];
    __syncthreads();
    for (int i = threadIdx.x; i < j; i += blockDim.x) x[i] -= L[j * n + i] * x[j];
    __syncthreads();
  }
}

// ---- V-cycle and CG kernels -----------------------------------------------------------------

__global__ void SmoothColor(const int H, const int W, const int color, const double* ew,
    const double* sw, const double* diag, const double* b, double* x) {
  const int half = (W + 1) / 2;
  CUDA_KERNEL_LOOP(k, H * half) {
    const int y = k / half;
    const int xx = 2 * (k % half) + ((y + color) & 1);
    if (xx < W) {
      const int i = y * W + xx;
      double s = b[i];
      if (xx + 1 < W) s += ew[i] * x[i + 1];
      if (xx > 0) s += ew[i - 1] * x[i - 1];
      if (y + 1 < H) s += sw[i] * x[i + W];
      if (y > 0) s += sw[i - W] * x[i - W];
      x[i] = s / diag[i];
    }
  }
}

// y = A x, or y = b - A x when b is given.
__global__ void ApplyOperator(const int H, const int W, const double* ew, const double* sw,
    const double* diag, const double* x, const double* b, double* y) {
  CUDA_KERNEL_LOOP(i, H * W) {
    const int yy = i / W, xx = i % W;
    double s = diag[i] * x[i];
    if (xx + 1 < W) s -= ew[i] * x[i + 1];
    if (xx > 0) s -= ew[i - 1] * x[i - 1];
    if (yy + 1 < H) s -= sw[i] * x[i + W];
    if (yy > 0) s -= sw[i - W] * x[i - W];
    y[i] = b ? b[i] - s : s;
  }
}

__global__ void Restrict(const int Hf, const int Wf, const double* r, const int Hc,
    const int Wc, double* b) {
  CUDA_KERNEL_LOOP(I, Hc * Wc) {
    const int Y = I / Wc, X = I % Wc;
    double s = 0;
    for (int y = 2 * Y; y < min(Hf, 2 * Y + 2); ++y) {
      for (int x = 2 * X; x < min(Wf, 2 * X + 2); ++x) s += r[y * Wf + x];
    }
    b[I] = s;
  }
}

__global__ void ProlongAdd(const int Hf, const int Wf, const int Wc, const double scale,
    const double* xc, double* x) {
  CUDA_KERNEL_LOOP(i, Hf * Wf) {
    x[i] += scale * xc[(i / Wf / 2) * Wc + (i % Wf) / 2];
  }
}

__global__ void DivideByDiag(const int n, const double* r, const double* diag, double* z) {
  CUDA_KERNEL_LOOP(i, n) { z[i] = r[i] / diag[i]; }
}

// x += a p; r -= a q
__global__ void CgUpdate(const int n, const double a, const double* p, const double* q,
    double* x, double* r) {
  CUDA_KERNEL_LOOP(i, n) {
    x[i] += a * p[i];
    r[i] -= a * q[i];
  }
}

// p = z + beta p
__global__ void CgDirection(const int n, const double beta, const double* z, double* p) {
  CUDA_KERNEL_LOOP(i, n) { p[i] = z[i] + beta * p[i]; }
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

template <typename Dtype>
__global__ void CopyToDouble(const int n, const Dtype* in, double* out) {
  CUDA_KERNEL_LOOP(i, n) { out[i] = in[i]; }
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

#define LAUNCH(n) CAFFE_GET_BLOCKS(n), CAFFE_CUDA_NUM_THREADS

void VCycleGpu(GpuItem* item, int l) {
  GpuLevel& L = item->levels[l];
  const int n = L.H * L.W;
  if (l + 1 == static_cast<int>(item->levels.size())) {
    CholeskySolve<<<1, kCholThreads>>>(n, item->chol, L.b, L.x);
    return;
  }
  CUDA_CHECK(cudaMemset(L.x, 0, n * sizeof(double)));
  const int half = L.H * ((L.W + 1) / 2);
  for (int s = 0; s < kMultigridSweeps; ++s) {
    SmoothColor<<<LAUNCH(half)>>>(L.H, L.W, 0, L.ew, L.sw, L.diag, L.b, L.x);
    SmoothColor<<<LAUNCH(half)>>>(L.H, L.W, 1, L.ew, L.sw, L.diag, L.b, L.x);
  }
  ApplyOperator<<<LAUNCH(n)>>>(L.H, L.W, L.ew, L.sw, L.diag, L.x, L.b, L.r);
  GpuLevel& C = item->levels[l + 1];
  Restrict<<<LAUNCH(C.H * C.W)>>>(L.H, L.W, L.r, C.H, C.W, C.b);
  VCycleGpu(item, l + 1);
  ProlongAdd<<<LAUNCH(n)>>>(L.H, L.W, C.W, kMultigridCoarseScale, C.x, L.x);
  for (int s = 0; s < kMultigridSweeps; ++s) {
    SmoothColor<<<LAUNCH(half)>>>(L.H, L.W, 1, L.ew, L.sw, L.diag, L.b, L.x);
    SmoothColor<<<LAUNCH(half)>>>(L.H, L.W, 0, L.ew, L.sw, L.diag, L.b, L.x);
  }
}

// Preconditioned CG on the device; b and x are solve-grid vectors.
bool SolveGpu(GpuState* st, GpuItem* item, const double* b, double* x, double tol,
    int max_iter, bool multigrid, GridMultigridSolver::Stats* stats) {
  GpuLevel& L = item->levels[0];
  const int n = L.H * L.W;
  CUDA_CHECK(cudaMemset(x, 0, n * sizeof(double)));
  CUDA_CHECK(cudaMemcpy(st->r, b, n * sizeof(double), cudaMemcpyDeviceToDevice));
  double bb;
  caffe_gpu_dot<double>(n, b, b, &bb);
  const double bnorm = std::sqrt(bb);
  stats->iterations = 0;
  stats->relative_residual = 0;
  if (bnorm == 0) return true;
  auto precondition = [&]() {
    if (multigrid) {
      CUDA_CHECK(cudaMemcpy(L.b, st->r, n * sizeof(double), cudaMemcpyDeviceToDevice));
      VCycleGpu(item, 0);
      CUDA_CHECK(cudaMemcpy(st->z, L.x, n * sizeof(double), cudaMemcpyDeviceToDevice));
    } else {
      DivideByDiag<<<LAUNCH(n)>>>(n, st->r, L.diag, st->z);
    }
  };
  precondition();
  CUDA_CHECK(cudaMemcpy(st->p, st->z, n * sizeof(double), cudaMemcpyDeviceToDevice));
  double rz;
  caffe_gpu_dot<double>(n, st->r, st->z, &rz);
  for (int k = 1; k <= max_iter; ++k) {
    ApplyOperator<<<LAUNCH(n)>>>(L.H, L.W, L.ew, L.sw, L.diag, st->p, NULL, st->q);
    double pq;
    caffe_gpu_dot<double>(n, st->p, st->q, &pq);
    stats->iterations = k;
    if (!(pq > 0)) return false;
    const double a = rz / pq;
    CgUpdate<<<LAUNCH(n)>>>(n, a, st->p, st->q, x, st->r);
    double rr;
    caffe_gpu_dot<double>(n, st->r, st->r, &rr);
    const double rel = std::sqrt(rr) / bnorm;
    stats->relative_residual = rel;
    if (!std::isfinite(rel)) return false;
    if (rel <= tol) return true;
    precondition();
    double rz_new;
    caffe_gpu_dot<double>(n, st->r, st->z, &rz_new);
    const double beta = rz_new / rz;
    rz = rz_new;
    CgDirection<<<LAUNCH(n)>>>(n, beta, st->z, st->p);
  }
  return false;
}

void FreeItem(GpuItem* item) {
  for (size_t l = 0; l < item->levels.size(); ++l) {
    GpuLevel& L = item->levels[l];
    double* arrays[] = {L.ew, L.sw, L.diag, L.x, L.b, L.r};
    for (double* a : arrays) CUDA_CHECK(cudaFree(a));
  }
  item->levels.clear();
  CUDA_CHECK(cudaFree(item->chol));
  CUDA_CHECK(cudaFree(item->alpha));
}

}  // namespace

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::FreeGpuState() {
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  if (!st) return;
  for (size_t n = 0; n < st->items.size(); ++n) FreeItem(&st->items[n]);
  double* vectors[] = {st->rhs, st->sol, st->r, st->z, st->p, st->q};
  for (double* v : vectors) CUDA_CHECK(cudaFree(v));
  CUDA_CHECK(cudaFree(st->flags));
  delete st;
  gpu_state_ = nullptr;
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num();
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  if (!st || st->num != num || st->Hc != Hc_ || st->Wc != Wc_) {
    FreeGpuState();
    st = new GpuState();
    gpu_state_ = st;
    st->num = num;
    st->Hc = Hc_;
    st->Wc = Wc_;
    const int nc = Hc_ * Wc_;
    double** vectors[] = {&st->rhs, &st->sol, &st->r, &st->z, &st->p, &st->q};
    for (double** v : vectors) *v = DeviceAlloc(nc);
    CUDA_CHECK(cudaMalloc(&st->flags, 4 * sizeof(int)));
    st->items.resize(num);
    for (int n = 0; n < num; ++n) {
      GpuItem& item = st->items[n];
      int h = Hc_, w = Wc_;
      while (true) {
        GpuLevel L;
        L.H = h;
        L.W = w;
        double** arrays[] = {&L.ew, &L.sw, &L.diag, &L.x, &L.b, &L.r};
        for (double** a : arrays) *a = DeviceAlloc(h * w);
        item.levels.push_back(L);
        if (h * w <= kMultigridCoarsestUnknowns) break;
        h = (h + 1) / 2;
        w = (w + 1) / 2;
      }
      const int m = h * w;
      item.chol = DeviceAlloc(m * m);
      item.alpha = DeviceAlloc(nc);
    }
  }
  fwd_stats_.resize(num);
  bwd_stats_.resize(num);
  for (int n = 0; n < num; ++n) {
    GpuItem& item = st->items[n];
    GpuLevel& F = item.levels[0];
    const int nc = Hc_ * Wc_;
    CUDA_CHECK(cudaMemset(st->flags, 0, 4 * sizeof(int)));
    BuildSystem<Dtype><<<LAUNCH(nc)>>>(Hc_, Wc_, H_, W_, shrink_,
        bottom[0]->gpu_data() + bottom[0]->offset(n),
        bottom[1]->gpu_data() + bottom[1]->offset(n), c_, F.ew, F.sw, F.diag, st->rhs,
        st->flags);
    AddDegrees<<<LAUNCH(nc)>>>(Hc_, Wc_, F.ew, F.sw, F.diag);
    for (size_t l = 1; l < item.levels.size(); ++l) {
      const GpuLevel& f = item.levels[l - 1];
      GpuLevel& c = item.levels[l];
      Coarsen<<<LAUNCH(c.H * c.W)>>>(f.H, f.W, f.ew, f.sw, f.diag, c.H, c.W, c.ew, c.sw,
                                     c.diag);
    }
    const GpuLevel& K = item.levels.back();
    const int m = K.H * K.W;
    Densify<<<LAUNCH(m * m)>>>(K.H, K.W, K.ew, K.sw, K.diag, item.chol);
    CholeskyFactor<<<1, kCholThreads>>>(m, item.chol, st->flags);
    CUDA_POST_KERNEL_CHECK;
    int flags[4];
    CUDA_CHECK(cudaMemcpy(flags, st->flags, sizeof(flags), cudaMemcpyDeviceToHost));
    CHECK(!flags[0]) << Where(n) << "some affinities are not finite values >= 0";
    CHECK(!flags[2]) << Where(n) << "non-finite trimap values";
    CHECK_GT(flags[1], 0) << Where(n) << "the trimap has no known pixel (0 or 1), so the "
        "system (L + C) is singular";
    CHECK(!flags[3]) << Where(n) << "the system is singular (a part of the image not "
        "connected to any known pixel?)";
    GridMultigridSolver::Stats stats;
    const bool ok = SolveGpu(st, &item, st->rhs, item.alpha, tol_, max_iter_, multigrid_,
                             &stats);
    fwd_stats_[n] = stats;
    CHECK(ok) << Where(n) << "the forward solve did not converge: relative residual "
        << stats.relative_residual << " after " << stats.iterations << " iterations";
    Dtype* alpha = top[0]->mutable_gpu_data() + top[0]->offset(n);
    Upsample<Dtype><<<LAUNCH(H_ * W_)>>>(H_, W_, Hc_, Wc_, shrink_, item.alpha, alpha);
    CUDA_POST_KERNEL_CHECK;
  }
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  if (propagate_down[1]) {
    LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name()
               << "' cannot backpropagate to the trimap";
  }
  if (!propagate_down[0]) return;
  GpuState* st = static_cast<GpuState*>(gpu_state_);
  CHECK(st && st->num == bottom[0]->num()) << this->type() << ": Backward without a Forward";
  for (int n = 0; n < st->num; ++n) {
    GpuItem& item = st->items[n];
    const Dtype* top_diff = top[0]->gpu_diff() + top[0]->offset(n);
    if (shrink_ == 1) {
      CopyToDouble<Dtype><<<LAUNCH(H_ * W_)>>>(H_ * W_, top_diff, st->rhs);
    } else {
      UpsampleTranspose<Dtype><<<LAUNCH(Hc_ * Wc_)>>>(H_, W_, Hc_, Wc_, shrink_, top_diff,
                                                       st->rhs);
    }
    GridMultigridSolver::Stats stats;
    const bool ok = SolveGpu(st, &item, st->rhs, st->sol, tol_, max_iter_, multigrid_,
                             &stats);
    bwd_stats_[n] = stats;
    CHECK(ok) << Where(n) << "the backward solve did not converge: relative residual "
        << stats.relative_residual << " after " << stats.iterations << " iterations";
    EdgeGradient<Dtype><<<LAUNCH(H_ * W_)>>>(H_, W_, Wc_, shrink_, st->sol, item.alpha,
        bottom[0]->mutable_gpu_diff() + bottom[0]->offset(n));
    CUDA_POST_KERNEL_CHECK;
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(SparseLaplacianSolveLayer);
template void SparseLaplacianSolveLayer<float>::FreeGpuState();
template void SparseLaplacianSolveLayer<double>::FreeGpuState();

}  // namespace caffe
