#ifndef CAFFE_LAYERS_DMPN_CHECKS_HPP_
#define CAFFE_LAYERS_DMPN_CHECKS_HPP_

#include <vector>

#include "caffe/blob.hpp"
#include "caffe/layer.hpp"

namespace caffe {

/// Every bottom of our layers holds at least one value: an empty batch (or an empty grid) stops
/// in Reshape with the layer's name and the blob's, not at a bare CHECK in Blob's data
/// accessors later. The Python layers say the same (layers/params.py, check_not_empty).
template <typename Dtype>
void CheckBottomsNotEmpty(const Layer<Dtype>& layer, const vector<Blob<Dtype>*>& bottom) {
  const LayerParameter& p = layer.layer_param();
  for (int i = 0; i < static_cast<int>(bottom.size()); ++i) {
    CHECK_GT(bottom[i]->count(), 0) << layer.type() << " layer '" << p.name() << "': bottom["
        << i << "] ('" << (i < p.bottom_size() ? p.bottom(i) : std::string()) << "') is empty ("
        << bottom[i]->shape_string() << "): a batch needs at least one item";
  }
}

}  // namespace caffe

#endif  // CAFFE_LAYERS_DMPN_CHECKS_HPP_
