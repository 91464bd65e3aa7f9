#ifndef CAFFE_AFFINITY_EXP_LAYER_HPP_
#define CAFFE_AFFINITY_EXP_LAYER_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/layers/host_device.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/// The largest exponent_bound accepted: e^80 is 5.5e34, float32 ends at 3.4e38 (e^88.7), and a
/// degree sums four weights. The Python layer's limit is the same number
/// (dmpn/propagation.py, MAX_EXPONENT_BOUND).
const float kMaxExponentBound = 80;

/// clip(z, -bound, bound) that keeps a NaN: std::min/max and CUDA's fmin/fmax would turn it
/// into a bound, and a broken feature would pass as a weak edge instead of reaching
/// SparseLaplacianSolve's non-finite check (the numpy reference's np.clip keeps it too).
template <typename Dtype>
inline DMPN_HOST_DEVICE Dtype ClipExponent(Dtype z, Dtype bound) {
  return z < -bound ? -bound : (z > bound ? bound : z);
}

/**
 * @brief Learned pixel affinities of DeepMattePropNet (Wang et al., IJCAI 2018, Sec. 3.2):
 *        for each 4-connected neighbour pair (i, j), i the left or upper pixel,
 *        w_ij = exp(clip(theta_1 . f_i + theta_2 . f_j + b, -bound, bound)),
 *        the paper's 1 x 1 x 2T convolution of [f_i; f_j] followed by an exponential.
 *
 * The Nn x 2T pair-feature matrix is never built: two per-pixel projections (one GEMM) and a
 * shifted add. bottom: features N x T x H x W. top: N x 2 x H x W, channel 0 the edge
 * (y, x)-(y, x+1), channel 1 the edge (y, x)-(y+1, x); the last column of channel 0 and the
 * last row of channel 1 are 0. blobs_[0]: 2 x T (theta_1; theta_2), blobs_[1]: 1 (b).
 * Where the exponent is clipped the gradient is 0, consistent with the forward.
 */
template <typename Dtype>
class AffinityExpLayer : public Layer<Dtype> {
 public:
  explicit AffinityExpLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "AffinityExp"; }
  virtual inline int ExactNumBottomBlobs() const { return 1; }
  virtual inline int ExactNumTopBlobs() const { return 1; }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);

  int channels_;  // T
  Dtype bound_;
  /// Per-pixel projections (theta_1 . f, theta_2 . f): N x 2 x H x W; then, in backward,
  /// their gradients.
  Blob<Dtype> proj_;
  Blob<Dtype> proj_diff_;
};

}  // namespace caffe

#endif  // CAFFE_AFFINITY_EXP_LAYER_HPP_
