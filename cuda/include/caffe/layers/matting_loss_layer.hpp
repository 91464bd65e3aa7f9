#ifndef CAFFE_MATTING_LOSS_LAYER_HPP_
#define CAFFE_MATTING_LOSS_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/layers/loss_layer.hpp"
#include "caffe/layers/sparse_laplacian_solve_layer.hpp"  // kTrimapKnownTol
#include "caffe/proto/caffe.pb.h"
#include "caffe/syncedmem.hpp"

namespace caffe {

/**
 * @brief The loss of DeepMattePropNet (Wang et al., IJCAI 2018, Sec. 3.4), taken from Deep
 *        Image Matting (Xu et al. 2017): per pixel of the trimap's unknown region,
 *        alpha_weight * sqrt((a_hat - a)^2 + eps)
 *          + composition_weight * sqrt(||c_hat - c||^2 + eps),  c_hat = a_hat F + (1 - a_hat) B,
 *        averaged over the unknown pixels of the whole batch. BVLC has no loss that composites.
 *
 * bottoms: 0 predicted alpha N x 1 x H x W, 1 true alpha N x 1 x H x W, 2 trimap N x 1 x H x W
 * in [0, 1] (unknown: strictly between kTrimapKnownTol and 1 - kTrimapKnownTol, as for
 * SparseLaplacianSolve), 3 foreground F, 4 background B, 5 composited image c, each
 * N x 3 x H x W. top: the scalar loss; 0 (and a 0 gradient) when no pixel is unknown.
 * A trimap value outside [0, 1] (a trimap in 0-255 would make every pixel known) stops the
 * forward pass with an error naming the item and the pixel, on both devices.
 * Only the prediction gets a gradient; asking for one to another bottom is a fatal error.
 * Forward keeps each pixel's derivative, so backward is one scaling.
 */
template <typename Dtype>
class MattingLossLayer : public LossLayer<Dtype> {
 public:
  explicit MattingLossLayer(const LayerParameter& param) : LossLayer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "MattingLoss"; }
  virtual inline int ExactNumBottomBlobs() const { return 6; }
  virtual inline bool AllowForceBackward(const int bottom_index) const {
    return bottom_index == 0;
  }

 protected:
  virtual void Forward_cpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Forward_gpu(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Backward_cpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  virtual void Backward_gpu(const vector<Blob<Dtype>*>& top,
      const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom);
  /// Fails when asked for a gradient to anything but the prediction (both devices).
  void CheckPropagateDown(const vector<bool>& propagate_down) const;
  /// d loss / d a_hat = top diff / num_unknown_ (both devices).
  Dtype BackwardScale(const vector<Blob<Dtype>*>& top) const {
    return num_unknown_ > 0 ? top[0]->cpu_diff()[0] / num_unknown_ : Dtype(0);
  }
  /// Stops with the first trimap value (bottom[2], host copy) outside [0, 1], named with its
  /// item and pixel (both devices; dmpn/matting_loss.py's check_trimap says the same).
  void FailOnTrimapOutsideUnitRange(const Blob<Dtype>& trimap) const;

  Dtype eps_, alpha_weight_, composition_weight_;
  /// Per pixel, N x 1 x H x W: data = the loss, diff = its derivative in a_hat (both 0 on
  /// known pixels).
  Blob<Dtype> pixel_;
  /// Per pixel: 1 where unknown, else 0.
  Blob<Dtype> unknown_;
  Dtype num_unknown_;  // of the last forward
  /// GPU forward: per-block (loss, unknown, invalid trimap) sums in double, at most
  /// kMaxSumBlocks blocks.
  static constexpr int kMaxSumBlocks = 256;  // constexpr: inline (C++17), so std::min may bind to it
  shared_ptr<SyncedMemory> block_sums_;
};

}  // namespace caffe

#endif  // CAFFE_MATTING_LOSS_LAYER_HPP_
