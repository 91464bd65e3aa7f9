#include <algorithm>
#include <cmath>
#include <iomanip>
#include <vector>

#include "caffe/filler.hpp"
#include "caffe/layers/affinity_exp_layer.hpp"
#include "caffe/layers/dmpn_checks.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void AffinityExpLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const AffinityExpParameter& param = this->layer_param_.affinity_exp_param();
  CHECK_EQ(bottom[0]->num_axes(), 4) << this->type() << " layer '" << this->layer_param_.name()
      << "': bottom must be N x T x H x W";
  bound_ = param.exponent_bound();
  CHECK(bound_ > 0 && bound_ <= kMaxExponentBound) << this->type() << " layer '"
      << this->layer_param_.name() << "': exponent_bound must be a finite number > 0 and <= "
      << kMaxExponentBound << " (a larger one lets float32 affinities overflow), got "
      << std::setprecision(9) << param.exponent_bound();  // 80.00001 is not "80"
  channels_ = bottom[0]->channels();
  if (this->blobs_.size() > 0) {
    CHECK_EQ(this->blobs_[0]->count(), 2 * channels_) << this->type() << " layer '"
        << this->layer_param_.name() << "': blobs[0] must be 2 x " << channels_;
    LOG(INFO) << "Skipping parameter initialization";
  } else {
    this->blobs_.resize(2);
    this->blobs_[0].reset(new Blob<Dtype>(vector<int>{2, channels_}));
    this->blobs_[1].reset(new Blob<Dtype>(vector<int>{1}));
    shared_ptr<Filler<Dtype> > weight_filler(GetFiller<Dtype>(param.weight_filler()));
    weight_filler->Fill(this->blobs_[0].get());
    shared_ptr<Filler<Dtype> > bias_filler(GetFiller<Dtype>(param.bias_filler()));
    bias_filler->Fill(this->blobs_[1].get());
  }
  this->param_propagate_down_.resize(this->blobs_.size(), true);
}

template <typename Dtype>
void AffinityExpLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CheckBottomsNotEmpty(*this, bottom);
  CHECK_EQ(bottom[0]->channels(), channels_) << this->type() << " layer '"
      << this->layer_param_.name() << "': feature channels changed from " << channels_
      << " to " << bottom[0]->channels();
  vector<int> shape{bottom[0]->num(), 2, bottom[0]->height(), bottom[0]->width()};
  top[0]->Reshape(shape);
  proj_.Reshape(shape);
  proj_diff_.Reshape(shape);
}

template <typename Dtype>
void AffinityExpLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int num = bottom[0]->num(), H = bottom[0]->height(), W = bottom[0]->width();
  const int HW = H * W;
  const Dtype* theta = this->blobs_[0]->cpu_data();
  const Dtype b = this->blobs_[1]->cpu_data()[0];
  for (int n = 0; n < num; ++n) {
    Dtype* p = proj_.mutable_cpu_data() + proj_.offset(n);
    // p (2 x HW) = theta (2 x T) * f (T x HW)
    caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasNoTrans, 2, HW, channels_, Dtype(1), theta,
        bottom[0]->cpu_data() + bottom[0]->offset(n), Dtype(0), p);
    const Dtype* p1 = p;
    const Dtype* p2 = p + HW;
    Dtype* w = top[0]->mutable_cpu_data() + top[0]->offset(n);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x) {
        const int i = y * W + x;
        w[i] = x + 1 < W ? std::exp(ClipExponent(p1[i] + p2[i + 1] + b, bound_))
                         : Dtype(0);
        w[HW + i] = y + 1 < H ?
            std::exp(ClipExponent(p1[i] + p2[i + W] + b, bound_)) : Dtype(0);
      }
    }
  }
}

template <typename Dtype>
void AffinityExpLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  const int num = bottom[0]->num(), H = bottom[0]->height(), W = bottom[0]->width();
  const int HW = H * W;
  const Dtype* theta = this->blobs_[0]->cpu_data();
  const Dtype b = this->blobs_[1]->cpu_data()[0];
  double bias_diff = 0;  // a sum over 2 N H W edges: in float32 it would lose ~1e-3
  for (int n = 0; n < num; ++n) {
    const Dtype* p1 = proj_.cpu_data() + proj_.offset(n);
    const Dtype* p2 = p1 + HW;
    const Dtype* w = top[0]->cpu_data() + top[0]->offset(n);
    const Dtype* dw = top[0]->cpu_diff() + top[0]->offset(n);
    Dtype* dp1 = proj_diff_.mutable_cpu_data() + proj_diff_.offset(n);
    Dtype* dp2 = dp1 + HW;
    caffe_set(2 * HW, Dtype(0), dp1);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x) {
        const int i = y * W + x;
        if (x + 1 < W && std::fabs(p1[i] + p2[i + 1] + b) < bound_) {
          const Dtype dz = dw[i] * w[i];
          dp1[i] += dz;
          dp2[i + 1] += dz;
          bias_diff += dz;
        }
        if (y + 1 < H && std::fabs(p1[i] + p2[i + W] + b) < bound_) {
          const Dtype dz = dw[HW + i] * w[HW + i];
          dp1[i] += dz;
          dp2[i + W] += dz;
          bias_diff += dz;
        }
      }
    }
    const Dtype* f = bottom[0]->cpu_data() + bottom[0]->offset(n);
    if (this->param_propagate_down_[0]) {
      // d theta (2 x T) += dp (2 x HW) * f^T (HW x T)
      caffe_cpu_gemm<Dtype>(CblasNoTrans, CblasTrans, 2, channels_, HW, Dtype(1), dp1, f,
          Dtype(1), this->blobs_[0]->mutable_cpu_diff());
    }
    if (propagate_down[0]) {
      // d f (T x HW) = theta^T (T x 2) * dp (2 x HW)
      caffe_cpu_gemm<Dtype>(CblasTrans, CblasNoTrans, channels_, HW, 2, Dtype(1), theta, dp1,
          Dtype(0), bottom[0]->mutable_cpu_diff() + bottom[0]->offset(n));
    }
  }
  if (this->param_propagate_down_[1]) {
    this->blobs_[1]->mutable_cpu_diff()[0] += bias_diff;
  }
}

#ifdef CPU_ONLY
STUB_GPU(AffinityExpLayer);
#endif

INSTANTIATE_CLASS(AffinityExpLayer);
REGISTER_LAYER_CLASS(AffinityExp);

}  // namespace caffe
