#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "caffe/layers/sparse_laplacian_solve_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// ---------------------------------------------------------------------------------------------
// GridMultigridSolver

namespace {

const int kCoarsestUnknowns = 256;  // dense Cholesky below this size

inline double Dot(int n, const double* a, const double* b) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void GridMultigridSolver::Apply(const Level& L, const double* x, double* y) {
  const int H = L.H, W = L.W;
  for (int yy = 0; yy < H; ++yy) {
    for (int xx = 0; xx < W; ++xx) {
      const int i = yy * W + xx;
      double s = L.diag[i] * x[i];
      if (xx + 1 < W) s -= L.ew[i] * x[i + 1];
      if (xx > 0) s -= L.ew[i - 1] * x[i - 1];
      if (yy + 1 < H) s -= L.sw[i] * x[i + W];
      if (yy > 0) s -= L.sw[i - W] * x[i - W];
      y[i] = s;
    }
  }
}

bool GridMultigridSolver::Setup(int H, int W, std::vector<double>* ew,
    std::vector<double>* sw, std::vector<double>* diag, std::string* why) {
  levels_.assign(1, Level());
  Level& top = levels_[0];
  top.H = H;
  top.W = W;
  top.ew.swap(*ew);
  top.sw.swap(*sw);
  top.diag.swap(*diag);
  while (levels_.back().H * levels_.back().W > kCoarsestUnknowns) {
    const Level& F = levels_.back();
    Level C;
    C.H = (F.H + 1) / 2;
    C.W = (F.W + 1) / 2;
    const int nc = C.H * C.W;
    C.ew.assign(nc, 0.);
    C.sw.assign(nc, 0.);
    C.diag.assign(nc, 0.);
    // P^T A P for 2 x 2 aggregates: an edge inside a block cancels out of the block's row
    // sum (diag - 2 w), an edge between blocks adds to the coarse edge.
    for (int y = 0; y < F.H; ++y) {
      for (int x = 0; x < F.W; ++x) {
        const int i = y * F.W + x;
        const int I = (y / 2) * C.W + x / 2;
        C.diag[I] += F.diag[i];
        if (x + 1 < F.W) {
          if (x & 1) C.ew[I] += F.ew[i]; else C.diag[I] -= 2 * F.ew[i];
        }
        if (y + 1 < F.H) {
          if (y & 1) C.sw[I] += F.sw[i]; else C.diag[I] -= 2 * F.sw[i];
        }
      }
    }
    levels_.push_back(C);
  }
  for (size_t l = 0; l < levels_.size(); ++l) {
    const int n = levels_[l].H * levels_[l].W;
    levels_[l].x.assign(n, 0.);
    levels_[l].b.assign(n, 0.);
    levels_[l].r.assign(n, 0.);
  }
  // Coarsest level: dense Cholesky. A non-positive pivot means A is not positive definite.
  const Level& L = levels_.back();
  const int n = L.H * L.W;
  chol_.assign(n * n, 0.);
  for (int i = 0; i < n; ++i) {
    const int y = i / L.W, x = i % L.W;
    chol_[i * n + i] = L.diag[i];
    if (x + 1 < L.W) chol_[i * n + i + 1] = chol_[(i + 1) * n + i] = -L.ew[i];
    if (y + 1 < L.H) chol_[i * n + i + L.W] = chol_[(i + L.W) * n + i] = -L.sw[i];
  }
  double max_diag = 0;
  for (int i = 0; i < n; ++i) max_diag = std::max(max_diag, chol_[i * n + i]);
  for (int j = 0; j < n; ++j) {
    double d = chol_[j * n + j];
    for (int k = 0; k < j; ++k) d -= chol_[j * n + k] * chol_[j * n + k];
    if (!(d > 1e-13 * max_diag)) {
      if (why) *why = "the system is singular (a part of the image not connected to any "
                      "known pixel?)";
      return false;
    }
    d = std::sqrt(d);
    chol_[j * n + j] = d;
    for (int i = j + 1; i < n; ++i) {
      double s = chol_[i * n + j];
      for (int k = 0; k < j; ++k) s -= chol_[i * n + k] * chol_[j * n + k];
      chol_[i * n + j] = s / d;
    }
  }
  const int n0 = H * W;
  r_.assign(n0, 0.);
  z_.assign(n0, 0.);
  p_.assign(n0, 0.);
  q_.assign(n0, 0.);
  return true;
}

void GridMultigridSolver::SmoothRedBlack(Level* Lp, int color) {
  Level& L = *Lp;
  const int H = L.H, W = L.W;
  double* x = L.x.data();
  const double* b = L.b.data();
  for (int y = 0; y < H; ++y) {
    for (int xx = (y + color) & 1; xx < W; xx += 2) {
      const int i = y * W + xx;
      double s = b[i];
      if (xx + 1 < W) s += L.ew[i] * x[i + 1];
      if (xx > 0) s += L.ew[i - 1] * x[i - 1];
      if (y + 1 < H) s += L.sw[i] * x[i + W];
      if (y > 0) s += L.sw[i - W] * x[i - W];
      x[i] = s / L.diag[i];
    }
  }
}

void GridMultigridSolver::VCycle(int l) {
  Level& L = levels_[l];
  const int n = L.H * L.W;
  if (l + 1 == num_levels()) {
    // Forward and back substitution with the Cholesky factor.
    for (int i = 0; i < n; ++i) {
      double s = L.b[i];
      for (int k = 0; k < i; ++k) s -= chol_[i * n + k] * L.x[k];
      L.x[i] = s / chol_[i * n + i];
    }
    for (int i = n - 1; i >= 0; --i) {
      double s = L.x[i];
      for (int k = i + 1; k < n; ++k) s -= chol_[k * n + i] * L.x[k];
      L.x[i] = s / chol_[i * n + i];
    }
    return;
  }
  std::fill(L.x.begin(), L.x.end(), 0.);
  SmoothRedBlack(&L, 0);
  SmoothRedBlack(&L, 1);
  Apply(L, L.x.data(), L.r.data());
  for (int i = 0; i < n; ++i) L.r[i] = L.b[i] - L.r[i];
  Level& C = levels_[l + 1];
  std::fill(C.b.begin(), C.b.end(), 0.);
  for (int y = 0; y < L.H; ++y) {
    for (int x = 0; x < L.W; ++x) C.b[(y / 2) * C.W + x / 2] += L.r[y * L.W + x];
  }
  VCycle(l + 1);
  for (int y = 0; y < L.H; ++y) {
    for (int x = 0; x < L.W; ++x) L.x[y * L.W + x] += C.x[(y / 2) * C.W + x / 2];
  }
  // Post-smoothing in the opposite colour order keeps the preconditioner symmetric.
  SmoothRedBlack(&L, 1);
  SmoothRedBlack(&L, 0);
}

bool GridMultigridSolver::Solve(const double* b, double* x, double tol, int max_iter,
    bool multigrid, Stats* stats) {
  Level& L = levels_[0];
  const int n = L.H * L.W;
  std::fill(x, x + n, 0.);
  std::copy(b, b + n, r_.begin());
  const double bnorm = std::sqrt(Dot(n, b, b));
  stats->iterations = 0;
  stats->relative_residual = 0;
  if (bnorm == 0) return true;
  auto precondition = [&]() {
    if (multigrid) {
      std::copy(r_.begin(), r_.end(), L.b.begin());
      VCycle(0);
      std::copy(L.x.begin(), L.x.end(), z_.begin());
    } else {
      for (int i = 0; i < n; ++i) z_[i] = r_[i] / L.diag[i];
    }
  };
  precondition();
  std::copy(z_.begin(), z_.end(), p_.begin());
  double rz = Dot(n, r_.data(), z_.data());
  for (int k = 1; k <= max_iter; ++k) {
    Apply(L, p_.data(), q_.data());
    const double pq = Dot(n, p_.data(), q_.data());
    if (!(pq > 0)) {
      stats->iterations = k;
      stats->relative_residual = std::sqrt(Dot(n, r_.data(), r_.data())) / bnorm;
      return false;  // breakdown: A (or the preconditioner) is not positive definite
    }
    const double a = rz / pq;
    for (int i = 0; i < n; ++i) {
      x[i] += a * p_[i];
      r_[i] -= a * q_[i];
    }
    const double rel = std::sqrt(Dot(n, r_.data(), r_.data())) / bnorm;
    stats->iterations = k;
    stats->relative_residual = rel;
    if (!std::isfinite(rel)) return false;
    if (rel <= tol) return true;
    precondition();
    const double rz_new = Dot(n, r_.data(), z_.data());
    const double beta = rz_new / rz;
    rz = rz_new;
    for (int i = 0; i < n; ++i) p_[i] = z_[i] + beta * p_[i];
  }
  return false;
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

template <typename Dtype>
SparseLaplacianSolveLayer<Dtype>::~SparseLaplacianSolveLayer() {
  FreeGpuState();
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
  CHECK_GT(c_, 0) << this->type() << " layer '" << this->layer_param_.name()
      << "': c must be > 0";
  CHECK_GE(shrink_, 1) << this->type() << " layer '" << this->layer_param_.name()
      << "': shrink must be >= 1";
  CHECK_GT(tol_, 0) << this->type() << " layer '" << this->layer_param_.name()
      << "': tolerance must be > 0";
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
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
  Hc_ = (H_ + shrink_ - 1) / shrink_;
  Wc_ = (W_ + shrink_ - 1) / shrink_;
  top[0]->Reshape(bottom[0]->num(), 1, H_, W_);
}

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::ForwardItem(int n, const Dtype* w, const Dtype* trimap,
    Dtype* alpha) {
  const int H = H_, W = W_, HW = H * W, s = shrink_, Wc = Wc_, nc = Hc_ * Wc_;
  std::vector<double> ew(nc, 0.), sw(nc, 0.), diag(nc, 0.), rhs(nc, 0.);
  int known = 0;
  const double tol_known = 1e-3;
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const int i = y * W + x;
      const int I = (y / s) * Wc + x / s;
      const double t = trimap[i];
      CHECK(std::isfinite(t)) << Where(n) << "non-finite trimap value at (" << y << ", " << x
          << ")";
      if (t <= tol_known || t >= 1 - tol_known) {
        ++known;
        diag[I] += c_;
        if (t >= 1 - tol_known) rhs[I] += c_;
      }
      if (x + 1 < W) {
        const double e = w[i];
        CHECK(std::isfinite(e) && e >= 0) << Where(n) << "affinity " << e << " of the edge ("
            << y << ", " << x << ")-(" << y << ", " << x + 1 << ") is not a finite value >= 0";
        // The edge joins two pixels of the solve grid only where it crosses a block border.
        if ((x + 1) % s == 0) {
          ew[I] += e;
          diag[I] += e;
          diag[I + 1] += e;
        }
      }
      if (y + 1 < H) {
        const double e = w[HW + i];
        CHECK(std::isfinite(e) && e >= 0) << Where(n) << "affinity " << e << " of the edge ("
            << y << ", " << x << ")-(" << y + 1 << ", " << x << ") is not a finite value >= 0";
        if ((y + 1) % s == 0) {
          sw[I] += e;
          diag[I] += e;
          diag[I + Wc] += e;
        }
      }
    }
  }
  CHECK_GT(known, 0) << Where(n) << "the trimap has no known pixel (0 or 1), so the system "
      "(L + C) is singular";
  std::string why;
  GridMultigridSolver& solver = solvers_[n];
  CHECK(solver.Setup(Hc_, Wc_, &ew, &sw, &diag, &why)) << Where(n) << why;
  vector<double>& a = alpha_grid_[n];
  a.assign(nc, 0.);
  GridMultigridSolver::Stats stats;
  const bool ok = solver.Solve(rhs.data(), a.data(), tol_, max_iter_, multigrid_, &stats);
  fwd_stats_[n] = stats;
  VLOG(1) << Where(n) << "forward solve: " << solver.num_levels() << " levels, "
          << stats.iterations << " iterations, relative residual " << stats.relative_residual;
  CHECK(ok) << Where(n) << "the forward solve did not converge: relative residual "
      << stats.relative_residual << " after " << stats.iterations << " iterations (tolerance "
      << tol_ << ")";
  if (s == 1) {
    for (int i = 0; i < HW; ++i) alpha[i] = static_cast<Dtype>(a[i]);
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
void SparseLaplacianSolveLayer<Dtype>::BackwardItem(int n, const Dtype* top_diff,
    Dtype* w_diff) {
  const int H = H_, W = W_, HW = H * W, s = shrink_, Wc = Wc_, nc = Hc_ * Wc_;
  std::vector<double> rhs(nc, 0.), g(nc, 0.);
  if (s == 1) {
    for (int i = 0; i < HW; ++i) rhs[i] = top_diff[i];
  } else {  // U^T top_diff
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
  CHECK(ok) << Where(n) << "the backward solve did not converge: relative residual "
      << stats.relative_residual << " after " << stats.iterations << " iterations";
  const vector<double>& a = alpha_grid_[n];
  // dE/dw_ij = -(g_i - g_j)(alpha_i - alpha_j) on the solve grid; a fine edge gets the value
  // of the solve-grid edge it is part of, or 0 inside a block.
  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const int i = y * W + x;
      const int I = (y / s) * Wc + x / s;
      w_diff[i] = (x + 1 < W && (x + 1) % s == 0) ?
          static_cast<Dtype>(-(g[I] - g[I + 1]) * (a[I] - a[I + 1])) : Dtype(0);
      w_diff[HW + i] = (y + 1 < H && (y + 1) % s == 0) ?
          static_cast<Dtype>(-(g[I] - g[I + Wc]) * (a[I] - a[I + Wc])) : Dtype(0);
    }
  }
}

namespace {

// Runs f(n) for n in [0, count) on up to hardware_concurrency threads (batch items are
// independent systems).
template <typename F>
void ParallelFor(int count, F f) {
  const int threads = std::min<int>(count, std::max(1u, std::thread::hardware_concurrency()));
  if (threads <= 1) {
    for (int n = 0; n < count; ++n) f(n);
    return;
  }
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([=]() { for (int n = t; n < count; n += threads) f(n); });
  }
  for (size_t t = 0; t < pool.size(); ++t) pool[t].join();
}

}  // namespace

template <typename Dtype>
void SparseLaplacianSolveLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num();
  solvers_.resize(num);
  alpha_grid_.resize(num);
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
  CHECK_EQ(static_cast<int>(solvers_.size()), num) << this->type()
      << ": Backward without a Forward";
  const Dtype* top_diff = top[0]->cpu_diff();
  Dtype* w_diff = bottom[0]->mutable_cpu_diff();
  ParallelFor(num, [&](int n) {
    BackwardItem(n, top_diff + top[0]->offset(n), w_diff + bottom[0]->offset(n));
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
