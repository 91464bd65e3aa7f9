#include <vector>

#include "caffe/layers/affinity_exp_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
__global__ void AffinityExpForward(const int count, const int H, const int W,
    const Dtype* proj, const Dtype b, const Dtype bound, Dtype* w) {
  // count = N * H * W; proj and w are N x 2 x H x W.
  CUDA_KERNEL_LOOP(index, count) {
    const int HW = H * W;
    const int n = index / HW, i = index % HW, y = i / W, x = i % W;
    const Dtype* p1 = proj + n * 2 * HW;
    const Dtype* p2 = p1 + HW;
    Dtype* wn = w + n * 2 * HW;
    wn[i] = x + 1 < W ? exp(ClipExponent(p1[i] + p2[i + 1] + b, bound)) : Dtype(0);
    wn[HW + i] = y + 1 < H ? exp(ClipExponent(p1[i] + p2[i + W] + b, bound)) : Dtype(0);
  }
}

// Per-pixel gradients of the two projections, and each pixel's share of the bias gradient
// (the gradients of the edges that start at it), gathered without atomics.
template <typename Dtype>
__global__ void AffinityExpBackward(const int count, const int H, const int W,
    const Dtype* proj, const Dtype b, const Dtype bound, const Dtype* w, const Dtype* dw,
    Dtype* dproj, Dtype* dbias) {
  CUDA_KERNEL_LOOP(index, count) {
    const int HW = H * W;
    const int n = index / HW, i = index % HW, y = i / W, x = i % W;
    const Dtype* p1 = proj + n * 2 * HW;
    const Dtype* p2 = p1 + HW;
    const Dtype* wn = w + n * 2 * HW;
    const Dtype* dwn = dw + n * 2 * HW;
    // edges starting at i: right (channel 0 at i), down (channel 1 at i)
    Dtype dz_right = 0, dz_down = 0;
    if (x + 1 < W && fabs(p1[i] + p2[i + 1] + b) < bound) dz_right = dwn[i] * wn[i];
    if (y + 1 < H && fabs(p1[i] + p2[i + W] + b) < bound) dz_down = dwn[HW + i] * wn[HW + i];
    // edges ending at i: from the left (channel 0 at i - 1), from above (channel 1 at i - W)
    Dtype dz_in = 0;
    if (x > 0 && fabs(p1[i - 1] + p2[i] + b) < bound) dz_in += dwn[i - 1] * wn[i - 1];
    if (y > 0 && fabs(p1[i - W] + p2[i] + b) < bound) dz_in += dwn[HW + i - W] * wn[HW + i - W];
    dproj[n * 2 * HW + i] = dz_right + dz_down;
    dproj[n * 2 * HW + HW + i] = dz_in;
    dbias[index] = dz_right + dz_down;
  }
}

template <typename Dtype>
void AffinityExpLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num(), H = bottom[0]->height(), W = bottom[0]->width();
  const int HW = H * W;
  const Dtype* theta = this->blobs_[0]->gpu_data();
  const Dtype b = this->blobs_[1]->cpu_data()[0];
  for (int n = 0; n < num; ++n) {
    caffe_gpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, 2, HW, channels_, Dtype(1), theta,
        bottom[0]->gpu_data() + bottom[0]->offset(n), Dtype(0),
        proj_.mutable_gpu_data() + proj_.offset(n));
  }
  const int count = num * HW;
  // NOLINT_NEXT_LINE(whitespace/operators)
  AffinityExpForward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, H, W, proj_.gpu_data(), b, bound_, top[0]->mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void AffinityExpLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->num(), H = bottom[0]->height(), W = bottom[0]->width();
  const int HW = H * W;
  const int count = num * HW;
  const Dtype* theta = this->blobs_[0]->gpu_data();
  const Dtype b = this->blobs_[1]->cpu_data()[0];
  // proj_diff_'s diff holds the per-pixel bias shares (count <= its size).
  Dtype* dbias = proj_diff_.mutable_gpu_diff();
  // NOLINT_NEXT_LINE(whitespace/operators)
  AffinityExpBackward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, H, W, proj_.gpu_data(), b, bound_, top[0]->gpu_data(), top[0]->gpu_diff(),
      proj_diff_.mutable_gpu_data(), dbias);
  CUDA_POST_KERNEL_CHECK;
  for (int n = 0; n < num; ++n) {
    const Dtype* dp = proj_diff_.gpu_data() + proj_diff_.offset(n);
    const Dtype* f = bottom[0]->gpu_data() + bottom[0]->offset(n);
    if (this->param_propagate_down_[0]) {
      caffe_gpu_gemm<Dtype>(CblasNoTrans, CblasTrans, 2, channels_, HW, Dtype(1), dp, f,
          Dtype(1), this->blobs_[0]->mutable_gpu_diff());
    }
    if (propagate_down[0]) {
      caffe_gpu_gemm<Dtype>(CblasTrans, CblasNoTrans, channels_, HW, 2, Dtype(1), theta, dp,
          Dtype(0), bottom[0]->mutable_gpu_diff() + bottom[0]->offset(n));
    }
  }
  if (this->param_propagate_down_[1]) {
    // The signed sum of the shares, as a product with ones (proj_diff_'s data is free again
    // once the GEMMs above, queued on the same stream, have read it), added on the device:
    // multi-GPU training all-reduces the device copy of the gradients, so an addition on
    // the host copy would be lost there (and cost a round trip here).
    Blob<Dtype>& ones = proj_diff_;
    caffe_gpu_set(count, Dtype(1), ones.mutable_gpu_data());
    caffe_gpu_gemv<Dtype>(CblasNoTrans, 1, count, Dtype(1), dbias, ones.gpu_data(), Dtype(1),
        this->blobs_[1]->mutable_gpu_diff());
  }
}

INSTANTIATE_LAYER_GPU_FUNCS(AffinityExpLayer);

}  // namespace caffe
