#ifndef CAFFE_UNPOOLING_LAYER_HPP_
#define CAFFE_UNPOOLING_LAYER_HPP_

#include <string>
#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"
#include "caffe/proto/caffe.pb.h"

namespace caffe {

/**
 * @brief SegNet-style unpooling (Badrinarayanan et al. 2017) for DeepMattePropNet's semantic
 *        decoder (Wang et al., IJCAI 2018, Sec. 3.1): each pooled value goes back to the
 *        position its max pooling took it from; every other output is 0. BVLC has no such
 *        layer, but its MAX Pooling emits the argmax mask this one needs as a second top.
 *
 * bottom[0]: pooled values N x C x h x w. bottom[1]: the mask, same shape, each entry the flat
 * index y * W + x within its (n, c) plane of the unpooled output, stored as Dtype. Optional
 * bottom[2]: any blob whose H x W is the output size (the blob that was pooled: this recovers
 * odd sizes, e.g. 25 -> 13 -> 25 with BVLC's ceil-mode pooling). Without it the size is
 * unpooling_param's out_height x out_width, each 0 meaning twice the input.
 * top: N x C x H x W. A mask entry that is not an integer in [0, H * W) is a CHECK failure.
 *
 * Forward scatters with accumulation: a position named by several pooled cells (only possible
 * when pooling windows overlap, kernel > stride) receives their sum, so that backward, the
 * gather top_diff[mask], is its exact adjoint. No gradient flows to the mask or to bottom[2];
 * their diffs are set to 0 when asked (a Split above them may add them up).
 */
template <typename Dtype>
class UnpoolingLayer : public Layer<Dtype> {
 public:
  explicit UnpoolingLayer(const LayerParameter& param) : Layer<Dtype>(param) {}
  virtual void LayerSetUp(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);
  virtual void Reshape(const vector<Blob<Dtype>*>& bottom,
      const vector<Blob<Dtype>*>& top);

  virtual inline const char* type() const { return "Unpooling"; }
  virtual inline int MinBottomBlobs() const { return 2; }
  virtual inline int MaxBottomBlobs() const { return 3; }
  virtual inline int ExactNumTopBlobs() const { return 1; }
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

  /// The CHECK message for the mask entry at flat index i of bottom[1].
  std::string BadMask(const Blob<Dtype>& mask, int i, int HW) const;

  int out_height_, out_width_;  // from unpooling_param (0: twice the input)
  int top_width_;
  /// GPU forward and backward: the smallest flat index of a bad mask entry (INT_MAX if none).
  Blob<int> first_bad_;
};

}  // namespace caffe

#endif  // CAFFE_UNPOOLING_LAYER_HPP_
