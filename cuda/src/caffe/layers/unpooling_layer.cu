#include <climits>
#include <vector>

#include "caffe/layers/unpooling_layer.hpp"
#include "caffe/util/gpu_util.cuh"
#include "caffe/util/math_functions.hpp"

namespace caffe {

// One thread per pooled element: scatter-add its value to the position the mask names. A bad
// mask entry writes nothing and records its index (the smallest one wins).
template <typename Dtype>
__global__ void UnpoolingForward(const int count, const int hw, const int HW,
    const Dtype* value, const Dtype* mask, Dtype* out, int* first_bad) {
  CUDA_KERNEL_LOOP(index, count) {
    const Dtype m = mask[index];
    if (m >= 0 && m < HW && m == floor(m)) {
      caffe_gpu_atomic_add(value[index], out + (index / hw) * HW + static_cast<int>(m));
    } else {
      atomicMin(first_bad, index);
    }
  }
}

// One thread per pooled element: gather the top diff at the mask. A bad mask entry (one
// changed since Forward) reads nothing and records its index, as in Forward.
template <typename Dtype>
__global__ void UnpoolingBackward(const int count, const int hw, const int HW,
    const Dtype* top_diff, const Dtype* mask, Dtype* diff, int* first_bad) {
  CUDA_KERNEL_LOOP(index, count) {
    const Dtype m = mask[index];
    if (m >= 0 && m < HW && m == floor(m)) {
      diff[index] = top_diff[(index / hw) * HW + static_cast<int>(m)];
    } else {
      diff[index] = 0;
      atomicMin(first_bad, index);
    }
  }
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int count = bottom[0]->count();
  const int hw = bottom[0]->height() * bottom[0]->width();
  const int HW = top[0]->height() * top[0]->width();
  caffe_gpu_set(top[0]->count(), Dtype(0), top[0]->mutable_gpu_data());
  caffe_gpu_set(1, INT_MAX, first_bad_.mutable_gpu_data());
  // NOLINT_NEXT_LINE(whitespace/operators)
  UnpoolingForward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, hw, HW, bottom[0]->gpu_data(), bottom[1]->gpu_data(), top[0]->mutable_gpu_data(),
      first_bad_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  const int bad = first_bad_.cpu_data()[0];  // one int comes back, the mask only on failure
  CHECK_EQ(bad, INT_MAX) << BadMask(*bottom[1], bad, HW);
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  for (int b = 1; b < bottom.size(); ++b) {
    if (propagate_down[b]) {
      caffe_gpu_set(bottom[b]->count(), Dtype(0), bottom[b]->mutable_gpu_diff());
    }
  }
  if (!propagate_down[0]) return;
  const int count = bottom[0]->count();
  const int hw = bottom[0]->height() * bottom[0]->width();
  const int HW = top[0]->height() * top[0]->width();
  caffe_gpu_set(1, INT_MAX, first_bad_.mutable_gpu_data());
  // NOLINT_NEXT_LINE(whitespace/operators)
  UnpoolingBackward<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      count, hw, HW, top[0]->gpu_diff(), bottom[1]->gpu_data(), bottom[0]->mutable_gpu_diff(),
      first_bad_.mutable_gpu_data());
  CUDA_POST_KERNEL_CHECK;
  const int bad = first_bad_.cpu_data()[0];
  CHECK_EQ(bad, INT_MAX) << BadMask(*bottom[1], bad, HW);
}

INSTANTIATE_LAYER_GPU_FUNCS(UnpoolingLayer);

}  // namespace caffe
