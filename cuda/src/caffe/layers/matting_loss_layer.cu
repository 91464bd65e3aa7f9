#include <algorithm>
#include <vector>

#include "caffe/layers/matting_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One thread per pixel: its loss, its derivative in a_hat and whether it is unknown.
template <typename Dtype>
__global__ void MattingLossForward(const int count, const int HW, const Dtype* pred,
    const Dtype* alpha, const Dtype* trimap, const Dtype* F, const Dtype* B, const Dtype* C,
    const Dtype eps, const Dtype alpha_weight, const Dtype composition_weight,
    const double known_tol, Dtype* loss, Dtype* grad, Dtype* unknown) {
  CUDA_KERNEL_LOOP(j, count) {
    const int n = j / HW, i = j % HW;
    const double t = trimap[j];  // compared in double, as on the CPU and in numpy
    if (!(t > known_tol && t < 1 - known_tol)) {
      loss[j] = grad[j] = unknown[j] = 0;
      continue;
    }
    const Dtype r = pred[j] - alpha[j];
    const Dtype la = sqrt(r * r + eps);
    Dtype d2 = 0, dd = 0;
    for (int k = 0; k < 3; ++k) {
      const int c = (n * 3 + k) * HW + i;
      const Dtype fb = F[c] - B[c];
      const Dtype d = B[c] + pred[j] * fb - C[c];
      d2 += d * d;
      dd += d * fb;
    }
    const Dtype lc = sqrt(d2 + eps);
    loss[j] = alpha_weight * la + composition_weight * lc;
    grad[j] = alpha_weight * r / la + composition_weight * dd / lc;
    unknown[j] = 1;
  }
}

// Per-block sums of the losses, of the unknown flags and of the trimap values outside [0, 1],
// accumulated in double as the CPU path sums them (cuBLAS's asum of a float blob sums in
// float). blockDim.x must be CAFFE_CUDA_NUM_THREADS, a power of two.
template <typename Dtype>
__global__ void MattingLossBlockSums(const int count, const Dtype* loss, const Dtype* unknown,
    const Dtype* trimap, double* partial) {
  __shared__ double sums[3][CAFFE_CUDA_NUM_THREADS];
  double l = 0, u = 0, bad = 0;
  CUDA_KERNEL_LOOP(j, count) {
    l += loss[j];
    u += unknown[j];
    bad += TrimapValid(trimap[j]) ? 0 : 1;  // the CPU path's check, in double as there
  }
  sums[0][threadIdx.x] = l;
  sums[1][threadIdx.x] = u;
  sums[2][threadIdx.x] = bad;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      for (int k = 0; k < 3; ++k) sums[k][threadIdx.x] += sums[k][threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    for (int k = 0; k < 3; ++k) partial[3 * blockIdx.x + k] = sums[k][0];
  }
}

template <typename Dtype>
void MattingLossLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int count = bottom[0]->count();
  const int HW = bottom[0]->height() * bottom[0]->width();
  // NOLINT_NEXT_LINE(whitespace/operators)
  MattingLossForward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, HW, bottom[0]->gpu_data(), bottom[1]->gpu_data(), bottom[2]->gpu_data(),
      bottom[3]->gpu_data(), bottom[4]->gpu_data(), bottom[5]->gpu_data(), eps_, alpha_weight_,
      composition_weight_, kTrimapKnownTol, pixel_.mutable_gpu_data(),
      pixel_.mutable_gpu_diff(), unknown_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  const int blocks = std::min(CAFFE_GET_BLOCKS(count), kMaxSumBlocks);
  // NOLINT_NEXT_LINE(whitespace/operators)
  MattingLossBlockSums<Dtype><<<blocks, CAFFE_CUDA_NUM_THREADS>>>(count, pixel_.gpu_data(),
      unknown_.gpu_data(), bottom[2]->gpu_data(),
      static_cast<double*>(block_sums_->mutable_gpu_data()));
  CUDA_POST_KERNEL_CHECK;
  const double* partial = static_cast<const double*>(block_sums_->cpu_data());
  double sum = 0, unknown = 0, bad = 0;
  for (int b = 0; b < blocks; ++b) {
    sum += partial[3 * b];
    unknown += partial[3 * b + 1];
    bad += partial[3 * b + 2];
  }
  // rare: the first value outside [0, 1] is named from the host's copy, as on the CPU
  if (bad > 0) FailOnTrimapOutsideUnitRange(*bottom[2]);
  num_unknown_ = unknown;
  top[0]->mutable_cpu_data()[0] = unknown > 0 ? sum / unknown : 0;
}

template <typename Dtype>
void MattingLossLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  CheckPropagateDown(propagate_down);
  if (!propagate_down[0]) return;
  const Dtype scale = BackwardScale(top);
  caffe_gpu_scale(pixel_.count(), scale, pixel_.gpu_diff(), bottom[0]->mutable_gpu_diff());
}

INSTANTIATE_LAYER_GPU_FUNCS(MattingLossLayer);

}  // namespace caffe
