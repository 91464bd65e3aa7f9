#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/matting_loss_layer.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class MattingLossLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  MattingLossLayerTest() : top_(new Blob<Dtype>()) {
    for (int b = 0; b < 6; ++b) {
      blobs_.push_back(new Blob<Dtype>());
      bottom_vec_.push_back(blobs_[b]);
    }
    top_vec_.push_back(top_);
  }
  virtual ~MattingLossLayerTest() {
    for (int b = 0; b < 6; ++b) delete blobs_[b];
    delete top_;
  }

  void Reshape(int num, int H, int W) {
    for (int b = 0; b < 6; ++b) blobs_[b]->Reshape(num, b < 3 ? 1 : 3, H, W);
  }

  // Random inputs with residuals away from 0 (where the Charbonnier terms have a kink): the
  // prediction is 0.2 to 0.5 off the truth, and the image is not the predicted composite.
  void Fill(int num, int H, int W, unsigned seed) {
    Caffe::set_random_seed(seed);
    Reshape(num, H, W);
    FillerParameter fp;
    fp.set_min(0);
    fp.set_max(1);
    UniformFiller<Dtype> uniform(fp);
    for (int b = 0; b < 6; ++b) uniform.Fill(blobs_[b]);
    Dtype* pred = blobs_[0]->mutable_cpu_data();
    const Dtype* alpha = blobs_[1]->cpu_data();
    Dtype* trimap = blobs_[2]->mutable_cpu_data();
    for (int i = 0; i < blobs_[0]->count(); ++i) {
      pred[i] = alpha[i] + (i % 2 ? 1 : -1) * (0.2 + 0.3 * pred[i]);
      const int k = i % 5;  // background, foreground, and three kinds of unknown
      trimap[i] = k == 0 ? 0 : (k == 1 ? 1 : (k == 2 ? 0.5 : (k == 3 ? 128. / 255. : 0.01)));
    }
    Dtype* image = blobs_[5]->mutable_cpu_data();
    for (int i = 0; i < blobs_[5]->count(); ++i) image[i] = 2 * image[i] - 0.5;
  }

  // The loss and its gradient in double, straight from the formula.
  double Reference(double aw, double cw, double eps, std::vector<double>* grad) {
    const int N = blobs_[0]->num(), H = blobs_[0]->height(), W = blobs_[0]->width();
    double sum = 0;
    int count = 0;
    grad->assign(N * H * W, 0.);
    for (int n = 0; n < N; ++n) {
      for (int y = 0; y < H; ++y) {
        for (int x = 0; x < W; ++x) {
          const double t = blobs_[2]->data_at(n, 0, y, x);
          if (t <= 1e-3 || t >= 1 - 1e-3) continue;
          const double p = blobs_[0]->data_at(n, 0, y, x), a = blobs_[1]->data_at(n, 0, y, x);
          double d2 = 0, dd = 0;
          for (int k = 0; k < 3; ++k) {
            const double F = blobs_[3]->data_at(n, k, y, x), B = blobs_[4]->data_at(n, k, y, x);
            const double d = p * F + (1 - p) * B - blobs_[5]->data_at(n, k, y, x);
            d2 += d * d;
            dd += d * (F - B);
          }
          sum += aw * std::sqrt((p - a) * (p - a) + eps) + cw * std::sqrt(d2 + eps);
          (*grad)[(n * H + y) * W + x] = aw * (p - a) / std::sqrt((p - a) * (p - a) + eps)
              + cw * dd / std::sqrt(d2 + eps);
          ++count;
        }
      }
    }
    for (size_t i = 0; i < grad->size(); ++i) (*grad)[i] /= std::max(count, 1);
    return count ? sum / count : 0.;
  }

  LayerParameter Param(float aw = 0.5, float cw = 0.5) {
    LayerParameter p;
    p.set_name("loss");
    p.mutable_matting_loss_param()->set_alpha_weight(aw);
    p.mutable_matting_loss_param()->set_composition_weight(cw);
    return p;
  }

  vector<Blob<Dtype>*> blobs_;
  Blob<Dtype>* const top_;
  vector<Blob<Dtype>*> bottom_vec_, top_vec_;
};

TYPED_TEST_CASE(MattingLossLayerTest, TestDtypesAndDevices);

TYPED_TEST(MattingLossLayerTest, TestForwardHandComputed) {
  typedef typename TypeParam::Dtype Dtype;
  // 1 x 1 x 2 x 2: pixels 0 and 2 unknown (0.5 and the trimap file's 128), 1 and 3 known.
  this->Reshape(1, 2, 2);
  const Dtype pred[] = {0.7, 0.9, 0.2, 0.0}, alpha[] = {0.4, 0.0, 0.6, 1.0};
  const Dtype trimap[] = {0.5, 0, Dtype(128. / 255.), 1};
  // pixel 0: F = 1, B = 0, c = 0.4: c_hat - c = 0.3 (1, 1, 1).
  // pixel 2: F = (1, 0, .5), B = (0, 1, .5), c = (.6, .4, .5): c_hat - c = (-.4, .4, 0).
  const Dtype F[] = {1, 5, 1, 5,  1, 5, 0, 5,  1, 5, 0.5, 5};
  const Dtype B[] = {0, 3, 0, 3,  0, 3, 1, 3,  0, 3, 0.5, 3};
  const Dtype C[] = {0.4, 9, 0.6, 9,  0.4, 9, 0.4, 9,  0.4, 9, 0.5, 9};
  const Dtype* src[] = {pred, alpha, trimap, F, B, C};
  for (int b = 0; b < 6; ++b) {
    caffe_copy(this->blobs_[b]->count(), src[b], this->blobs_[b]->mutable_cpu_data());
  }
  const double s2 = std::sqrt(2.), s3 = std::sqrt(3.);
  MattingLossLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->num_axes(), 0);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_NEAR(this->top_->cpu_data()[0],
              ((0.5 * 0.3 + 0.5 * 0.3 * s3) + (0.5 * 0.4 + 0.5 * 0.4 * s2)) / 2, 1e-6);
  // d/da_hat: sign(r) and (c_hat - c) . (F - B) / ||c_hat - c||, over 2 unknown pixels.
  this->top_->mutable_cpu_diff()[0] = 2;  // a loss weight of 2
  layer.Backward(this->top_vec_, vector<bool>(6, false), this->bottom_vec_);  // no-op
  layer.Backward(this->top_vec_, vector<bool>{true, false, false, false, false, false},
                 this->bottom_vec_);
  const Dtype* g = this->blobs_[0]->cpu_diff();
  EXPECT_NEAR(g[0], 2 * (0.5 + 0.5 * s3) / 2, 1e-5);
  EXPECT_NEAR(g[1], 0, 1e-12);
  EXPECT_NEAR(g[2], 2 * (-0.5 - 0.5 * s2) / 2, 1e-5);
  EXPECT_NEAR(g[3], 0, 1e-12);
  MattingLossLayer<Dtype> alpha_only(this->Param(1, 0));
  alpha_only.SetUp(this->bottom_vec_, this->top_vec_);
  alpha_only.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_NEAR(this->top_->cpu_data()[0], (0.3 + 0.4) / 2, 1e-6);
}

TYPED_TEST(MattingLossLayerTest, TestForwardMatchesReference) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, 5, 7, 1701);
  MattingLossLayer<Dtype> layer(this->Param(0.3, 0.8));
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  const Dtype loss = layer.Forward(this->bottom_vec_, this->top_vec_);
  std::vector<double> grad;
  const double ref = this->Reference(0.3, 0.8, 1e-12, &grad);
  EXPECT_NEAR(this->top_->cpu_data()[0], ref, 1e-5);
  EXPECT_NEAR(loss, ref, 1e-5);  // loss weight 1 by default, as for BVLC's loss layers
  layer.Backward(this->top_vec_, vector<bool>{true, false, false, false, false, false},
                 this->bottom_vec_);
  for (int i = 0; i < this->blobs_[0]->count(); ++i) {
    EXPECT_NEAR(this->blobs_[0]->cpu_diff()[i], grad[i], 1e-6) << i;
  }
}

TYPED_TEST(MattingLossLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, 4, 5, 1701);
  // Weights that make per-pixel gradients O(0.1) despite the 1 / (24 unknowns): the checker's
  // threshold is absolute below 1.
  MattingLossLayer<Dtype> layer(this->Param(1.5, 2.5));
  GradientChecker<Dtype> checker(1e-3, 1e-3, 1701);
  checker.CheckGradientExhaustive(&layer, this->bottom_vec_, this->top_vec_, 0);
}

TYPED_TEST(MattingLossLayerTest, TestAveragesOverUnknownPixelsOfTheBatch) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, 4, 5, 7);
  Dtype* t = this->blobs_[2]->mutable_cpu_data();
  for (int i = 0; i < 20; ++i) t[i] = i < 2 ? 0.5 : 1;  // item 0: 2 unknowns; item 1: 12
  MattingLossLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  std::vector<double> grad;
  const Dtype loss = this->top_->cpu_data()[0];
  EXPECT_NEAR(loss, this->Reference(0.5, 0.5, 1e-12, &grad), 1e-6);
  // Known pixels do not count: changing their prediction, truth and colours changes nothing.
  for (int i = 0; i < this->blobs_[0]->count(); ++i) {
    const double tv = t[i];
    if (tv > 1e-3 && tv < 1 - 1e-3) continue;
    this->blobs_[0]->mutable_cpu_data()[i] += 10;
    this->blobs_[1]->mutable_cpu_data()[i] -= 3;
    const int n = i / 20;
    this->blobs_[3]->mutable_cpu_data()[n * 60 + i % 20] = 7;
  }
  caffe_set(this->blobs_[0]->count(), Dtype(5), this->blobs_[0]->mutable_cpu_diff());
  layer.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->cpu_data()[0], loss);
  layer.Backward(this->top_vec_, vector<bool>{true, false, false, false, false, false},
                 this->bottom_vec_);
  for (int i = 0; i < this->blobs_[0]->count(); ++i) {
    const double tv = t[i];
    if (tv <= 1e-3 || tv >= 1 - 1e-3) {
      EXPECT_EQ(this->blobs_[0]->cpu_diff()[i], 0) << i;
    }
  }
}

TYPED_TEST(MattingLossLayerTest, TestNoUnknownPixel) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, 3, 4, 9);
  Dtype* t = this->blobs_[2]->mutable_cpu_data();
  for (int i = 0; i < this->blobs_[2]->count(); ++i) t[i] = i % 3 ? Dtype(1) : Dtype(0.0005);
  MattingLossLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->cpu_data()[0], 0);
  caffe_set(this->blobs_[0]->count(), Dtype(5), this->blobs_[0]->mutable_cpu_diff());
  layer.Backward(this->top_vec_, vector<bool>{true, false, false, false, false, false},
                 this->bottom_vec_);
  for (int i = 0; i < this->blobs_[0]->count(); ++i) {
    EXPECT_EQ(this->blobs_[0]->cpu_diff()[i], 0);
  }
}

TYPED_TEST(MattingLossLayerTest, TestBackpropagationToLabelsIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  this->Fill(1, 3, 4, 9);
  MattingLossLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_DEATH(layer.Backward(this->top_vec_, vector<bool>{true, false, false, false, true, false},
                              this->bottom_vec_),
               "MattingLoss layer 'loss' cannot backpropagate to bottom\\[4\\]");
  EXPECT_FALSE(layer.AllowForceBackward(1));
  EXPECT_TRUE(layer.AllowForceBackward(0));
}

TYPED_TEST(MattingLossLayerTest, TestTrimapOutsideUnitRangeIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  // A trimap in 0-255 would make every pixel known, the loss silently 0: refused, on both
  // devices (the GPU names the value from the host's copy).
  this->Fill(2, 3, 4, 9);
  this->blobs_[2]->mutable_cpu_data()[this->blobs_[2]->offset(1, 0, 2, 1)] = Dtype(128);
  MattingLossLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_DEATH(layer.Forward(this->bottom_vec_, this->top_vec_),
               "MattingLoss layer 'loss': the trimap \\(bottom\\[2\\]\\) value 128 of item 1 at "
               "\\(2, 1\\) is not in \\[0, 1\\]");
}

TYPED_TEST(MattingLossLayerTest, TestShapeMismatchIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  // (bottom, its wrong shape, the message). The true alpha of another batch size is named too
  // (BVLC's LossLayer check came first, and named neither the layer nor the blob).
  const struct { int bottom, num, channels; const char* message; } cases[] = {
      {4, 2, 1, "the background \\(bottom\\[4\\]\\) must be 2 x 3 x 3 x 4, got 2 1 3 4"},
      {1, 1, 1, "the true alpha \\(bottom\\[1\\]\\) must be 2 x 1 x 3 x 4, got 1 1 3 4"}};
  for (const auto& c : cases) {
    this->Fill(2, 3, 4, 9);
    this->blobs_[c.bottom]->Reshape(c.num, c.channels, 3, 4);
    MattingLossLayer<Dtype> layer(this->Param());
    EXPECT_DEATH(layer.SetUp(this->bottom_vec_, this->top_vec_),
                 std::string("MattingLoss layer 'loss': ") + c.message);
  }
}

#ifndef CPU_ONLY
// The GPU path against the CPU path on the same inputs. The fixture's name says GPU, so the
// test runner's no-GPU filter leaves it out; on a GPU machine it runs.
template <typename TypeParam>
class MattingLossGPUParityTest : public MattingLossLayerTest<TypeParam> {};

typedef ::testing::Types<GPUDevice<float>, GPUDevice<double> > MattingLossGPUDtypes;
TYPED_TEST_CASE(MattingLossGPUParityTest, MattingLossGPUDtypes);

TYPED_TEST(MattingLossGPUParityTest, TestGPUMatchesCPU) {
  typedef typename TypeParam::Dtype Dtype;
  const vector<bool> down{true, false, false, false, false, false};
  // Cases: mixed trimap; every pixel known; a batch large enough for a float sum of the
  // pixels' losses to drift (both devices sum in double).
  for (int round = 0; round < 3; ++round) {
    const bool all_known = round == 1;
    if (round == 2) {
      this->Fill(2, 300, 400, 13);
    } else {
      this->Fill(3, 37, 41, 11 + round);
    }
    if (all_known) {
      caffe_set(this->blobs_[2]->count(), Dtype(1), this->blobs_[2]->mutable_cpu_data());
    }
    MattingLossLayer<Dtype> layer(this->Param(0.4, 0.6));
    layer.SetUp(this->bottom_vec_, this->top_vec_);
    Caffe::set_mode(Caffe::CPU);
    layer.Forward(this->bottom_vec_, this->top_vec_);
    const Dtype cpu_loss = this->top_->cpu_data()[0];
    this->top_->mutable_cpu_diff()[0] = 1.5;
    layer.Backward(this->top_vec_, down, this->bottom_vec_);
    Blob<Dtype> cpu_grad;
    cpu_grad.CopyFrom(*this->blobs_[0], true, true);
    Caffe::set_mode(Caffe::GPU);
    caffe_gpu_set(this->blobs_[0]->count(), Dtype(9), this->blobs_[0]->mutable_gpu_diff());
    layer.Forward(this->bottom_vec_, this->top_vec_);
    const Dtype tol = sizeof(Dtype) == 4 ? 1e-6 : 1e-12;
    EXPECT_NEAR(this->top_->cpu_data()[0], cpu_loss, tol * std::max<Dtype>(1, cpu_loss));
    this->top_->mutable_cpu_diff()[0] = 1.5;
    layer.Backward(this->top_vec_, down, this->bottom_vec_);
    for (int i = 0; i < cpu_grad.count(); ++i) {
      EXPECT_NEAR(this->blobs_[0]->cpu_diff()[i], cpu_grad.cpu_diff()[i], 1e-7) << i;
    }
    if (all_known) {
      EXPECT_EQ(cpu_loss, 0);
    }
  }
}
#endif

}  // namespace caffe
