#include <climits>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "caffe/layers/dmpn_checks.hpp"
#include "caffe/layers/unpooling_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void UnpoolingLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const UnpoolingParameter& param = this->layer_param_.unpooling_param();
  const std::pair<const char*, uint32_t> sizes[] = {{"out_height", param.out_height()},
                                                     {"out_width", param.out_width()}};
  for (const auto& size : sizes) {  // uint32 fields, but Caffe's dimensions are int
    CHECK_LE(size.second, static_cast<uint32_t>(INT_MAX)) << this->type() << " layer '"
        << this->layer_param_.name() << "': " << size.first << " must be a whole number from 0 "
        << "to " << INT_MAX << ", got " << size.second;
  }
  out_height_ = param.out_height();
  out_width_ = param.out_width();
  first_bad_.Reshape(vector<int>{1});
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CheckBottomsNotEmpty(*this, bottom);
  CHECK_EQ(bottom[0]->num_axes(), 4) << this->type() << " layer '"
      << this->layer_param_.name() << "': bottom[0] must be N x C x h x w, got "
      << bottom[0]->shape_string();
  CHECK(bottom[1]->shape() == bottom[0]->shape()) << this->type() << " layer '"
      << this->layer_param_.name() << "': the mask (bottom[1]) is " << bottom[1]->shape_string()
      << ", the pooled values (bottom[0]) are " << bottom[0]->shape_string();
  int H, W;
  if (bottom.size() > 2) {
    CHECK_EQ(bottom[2]->num_axes(), 4) << this->type() << " layer '"
        << this->layer_param_.name() << "': the size reference (bottom[2]) must be 4-D, got "
        << bottom[2]->shape_string();
    H = bottom[2]->height();
    W = bottom[2]->width();
  } else {
    H = out_height_ > 0 ? out_height_ : 2 * bottom[0]->height();
    W = out_width_ > 0 ? out_width_ : 2 * bottom[0]->width();
  }
  CHECK(H > 0 && W > 0) << this->type() << " layer '" << this->layer_param_.name()
      << "': empty output size " << H << " x " << W;
  // BVLC's MAX Pooling writes its mask in Dtype, and float holds every whole number only up to
  // 2^24: a larger plane's indices would round to other pixels, unseen (dmpn.unpooling).
  CHECK(sizeof(Dtype) > sizeof(float) || static_cast<int64_t>(H) * W <= (1 << 24))
      << this->type() << " layer '" << this->layer_param_.name() << "': the output plane " << H
      << " x " << W << " has more than 2^24 = " << (1 << 24) << " pixels, and a float32 mask "
      << "(MAX Pooling's second top) cannot hold their indices exactly: use smaller images";
  top[0]->Reshape(bottom[0]->num(), bottom[0]->channels(), H, W);
  top_width_ = W;
}

template <typename Dtype>
std::string UnpoolingLayer<Dtype>::BadMask(const Blob<Dtype>& mask, int i, int HW) const {
  const int h = mask.height(), w = mask.width();
  const int plane = i / (h * w), c = plane % mask.channels(), n = plane / mask.channels();
  std::ostringstream s;
  s << this->type() << " layer '" << this->layer_param_.name() << "': mask value "
    << mask.cpu_data()[i] << " at (n " << n << ", c " << c << ", y " << (i / w) % h << ", x "
    << i % w << ") is not an integer flat index in [0, " << HW << ") of the " << HW / top_width_
    << " x " << top_width_ << " output";
  return s.str();
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int planes = bottom[0]->num() * bottom[0]->channels();
  const int hw = bottom[0]->height() * bottom[0]->width();
  const int HW = top[0]->height() * top[0]->width();
  const Dtype* value = bottom[0]->cpu_data();
  const Dtype* mask = bottom[1]->cpu_data();
  Dtype* out = top[0]->mutable_cpu_data();
  caffe_set(top[0]->count(), Dtype(0), out);
  for (int p = 0; p < planes; ++p) {
    for (int i = p * hw; i < (p + 1) * hw; ++i) {
      const Dtype m = mask[i];
      CHECK(m >= 0 && m < HW && m == std::floor(m)) << BadMask(*bottom[1], i, HW);
      out[p * HW + static_cast<int>(m)] += value[i];
    }
  }
}

template <typename Dtype>
void UnpoolingLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  for (int b = 1; b < bottom.size(); ++b) {
    if (propagate_down[b]) caffe_set(bottom[b]->count(), Dtype(0), bottom[b]->mutable_cpu_diff());
  }
  if (!propagate_down[0]) return;
  const int hw = bottom[0]->height() * bottom[0]->width();
  const int HW = top[0]->height() * top[0]->width();
  const Dtype* mask = bottom[1]->cpu_data();
  const Dtype* top_diff = top[0]->cpu_diff();
  Dtype* diff = bottom[0]->mutable_cpu_diff();
  for (int i = 0; i < bottom[0]->count(); ++i) {
    const Dtype m = mask[i];  // as in Forward: a mask changed since then must not index out
    CHECK(m >= 0 && m < HW && m == std::floor(m)) << BadMask(*bottom[1], i, HW);
    diff[i] = top_diff[(i / hw) * HW + static_cast<int>(m)];
  }
}

#ifdef CPU_ONLY
STUB_GPU(UnpoolingLayer);
#endif

INSTANTIATE_CLASS(UnpoolingLayer);
REGISTER_LAYER_CLASS(Unpooling);

}  // namespace caffe
