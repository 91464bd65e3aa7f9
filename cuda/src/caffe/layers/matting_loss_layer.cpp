#include <cmath>
#include <vector>

#include "caffe/layers/dmpn_checks.hpp"
#include "caffe/layers/matting_loss_layer.hpp"
#include "caffe/util/math_functions.hpp"

namespace caffe {

template <typename Dtype>
void MattingLossLayer<Dtype>::LayerSetUp(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  LossLayer<Dtype>::LayerSetUp(bottom, top);
  const MattingLossParameter& param = this->layer_param_.matting_loss_param();
  eps_ = param.eps();
  alpha_weight_ = param.alpha_weight();
  composition_weight_ = param.composition_weight();
  // The Python layer's rules are the same (layers/matting_loss.py). eps > 0: with 0, a pixel
  // whose residual is 0 divides by sqrt(0) in the gradient.
  CHECK(std::isfinite(eps_) && eps_ > 0) << this->type() << " layer '"
      << this->layer_param_.name() << "': eps must be a finite number > 0, got " << eps_;
  CHECK(std::isfinite(alpha_weight_) && alpha_weight_ >= 0) << this->type() << " layer '"
      << this->layer_param_.name() << "': alpha_weight must be a finite number >= 0, got "
      << alpha_weight_;
  CHECK(std::isfinite(composition_weight_) && composition_weight_ >= 0) << this->type()
      << " layer '" << this->layer_param_.name() << "': composition_weight must be a finite "
      << "number >= 0, got " << composition_weight_;
  num_unknown_ = 0;
  block_sums_.reset(new SyncedMemory(3 * kMaxSumBlocks * sizeof(double)));
}

template <typename Dtype>
void MattingLossLayer<Dtype>::Reshape(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  CheckBottomsNotEmpty(*this, bottom);
  static const char* names[] = {"predicted alpha", "true alpha", "trimap", "foreground",
                                "background", "image"};
  const Blob<Dtype>& a = *bottom[0];
  CHECK(a.num_axes() == 4 && a.channels() == 1) << this->type() << " layer '"
      << this->layer_param_.name() << "': the predicted alpha (bottom[0]) must be N x 1 x H x W, "
      << "got " << a.shape_string();
  for (int b = 1; b < 6; ++b) {
    const int channels = b < 3 ? 1 : 3;
    CHECK(bottom[b]->num_axes() == 4 && bottom[b]->num() == a.num()
        && bottom[b]->channels() == channels && bottom[b]->height() == a.height()
        && bottom[b]->width() == a.width()) << this->type() << " layer '"
        << this->layer_param_.name() << "': the " << names[b] << " (bottom[" << b << "]) must be "
        << a.num() << " x " << channels << " x " << a.height() << " x " << a.width() << ", got "
        << bottom[b]->shape_string();
  }
  LossLayer<Dtype>::Reshape(bottom, top);  // after ours: its check names no layer
  pixel_.ReshapeLike(a);
  unknown_.ReshapeLike(a);
}

template <typename Dtype>
void MattingLossLayer<Dtype>::Forward_cpu(const vector<Blob<Dtype>*>& bottom,
    const vector<Blob<Dtype>*>& top) {
  const int HW = bottom[0]->height() * bottom[0]->width();
  const Dtype* pred = bottom[0]->cpu_data();
  const Dtype* alpha = bottom[1]->cpu_data();
  const Dtype* trimap = bottom[2]->cpu_data();
  Dtype* loss = pixel_.mutable_cpu_data();
  Dtype* grad = pixel_.mutable_cpu_diff();
  Dtype* unknown = unknown_.mutable_cpu_data();
  double sum = 0, count = 0;
  for (int n = 0; n < bottom[0]->num(); ++n) {
    const Dtype* F = bottom[3]->cpu_data() + bottom[3]->offset(n);
    const Dtype* B = bottom[4]->cpu_data() + bottom[4]->offset(n);
    const Dtype* C = bottom[5]->cpu_data() + bottom[5]->offset(n);
    for (int i = 0; i < HW; ++i) {
      const int j = n * HW + i;
      const double t = trimap[j];
      if (!TrimapValid(t)) FailOnTrimapOutsideUnitRange(*bottom[2]);
      if (!(t > kTrimapKnownTol && t < 1 - kTrimapKnownTol)) {
        loss[j] = grad[j] = unknown[j] = 0;
        continue;
      }
      const Dtype r = pred[j] - alpha[j];
      const Dtype la = std::sqrt(r * r + eps_);
      Dtype d2 = 0, dd = 0;  // ||c_hat - c||^2 and (c_hat - c) . (F - B)
      for (int k = 0; k < 3; ++k) {
        const Dtype fb = F[k * HW + i] - B[k * HW + i];
        const Dtype d = B[k * HW + i] + pred[j] * fb - C[k * HW + i];
        d2 += d * d;
        dd += d * fb;
      }
      const Dtype lc = std::sqrt(d2 + eps_);
      loss[j] = alpha_weight_ * la + composition_weight_ * lc;
      grad[j] = alpha_weight_ * r / la + composition_weight_ * dd / lc;
      unknown[j] = 1;
      sum += loss[j];
      count += 1;
    }
  }
  num_unknown_ = count;
  top[0]->mutable_cpu_data()[0] = count > 0 ? sum / count : 0;
}

template <typename Dtype>
void MattingLossLayer<Dtype>::FailOnTrimapOutsideUnitRange(const Blob<Dtype>& trimap) const {
  const int H = trimap.height(), W = trimap.width(), HW = H * W;
  const Dtype* t = trimap.cpu_data();
  for (int j = 0; j < trimap.count(); ++j) {
    if (!TrimapValid(t[j])) {
      const int n = j / HW, i = j % HW;
      LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name() << "': the trimap "
                 << "(bottom[2]) value " << t[j] << " of item " << n << " at (" << i / W << ", "
                 << i % W << ") is not in [0, 1] (0 background, 1 foreground, between unknown)";
    }
  }
}

template <typename Dtype>
void MattingLossLayer<Dtype>::CheckPropagateDown(const vector<bool>& propagate_down) const {
  for (int b = 1; b < 6; ++b) {
    if (propagate_down[b]) {
      LOG(FATAL) << this->type() << " layer '" << this->layer_param_.name()
                 << "' cannot backpropagate to bottom[" << b << "], only to the prediction.";
    }
  }
}

template <typename Dtype>
void MattingLossLayer<Dtype>::Backward_cpu(const vector<Blob<Dtype>*>& top,
    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {
  CheckPropagateDown(propagate_down);
  if (!propagate_down[0]) return;
  const Dtype scale = BackwardScale(top);
  caffe_cpu_scale(pixel_.count(), scale, pixel_.cpu_diff(), bottom[0]->mutable_cpu_diff());
}

#ifdef CPU_ONLY
STUB_GPU(MattingLossLayer);
#endif

INSTANTIATE_CLASS(MattingLossLayer);
REGISTER_LAYER_CLASS(MattingLoss);

}  // namespace caffe
