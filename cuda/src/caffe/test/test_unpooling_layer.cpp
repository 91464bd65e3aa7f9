#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"

#include "caffe/blob.hpp"
#include "caffe/common.hpp"
#include "caffe/filler.hpp"
#include "caffe/layers/unpooling_layer.hpp"
#include "caffe/net.hpp"

#include "caffe/test/test_caffe_main.hpp"
#include "caffe/test/test_gradient_check_util.hpp"

namespace caffe {

template <typename TypeParam>
class UnpoolingLayerTest : public MultiDeviceTest<TypeParam> {
  typedef typename TypeParam::Dtype Dtype;

 protected:
  UnpoolingLayerTest()
      : value_(new Blob<Dtype>()), mask_(new Blob<Dtype>()), top_(new Blob<Dtype>()) {
    bottom_vec_.push_back(value_);
    bottom_vec_.push_back(mask_);
    top_vec_.push_back(top_);
  }
  virtual ~UnpoolingLayerTest() { delete value_; delete mask_; delete top_; }

  // Random values and a valid 2 x 2 / stride 2 mask: each cell picks one position of its block
  // (clipped at the far border of an H x W output).
  void Fill(int num, int channels, int h, int w, int H, int W, unsigned seed) {
    Caffe::set_random_seed(seed);
    value_->Reshape(num, channels, h, w);
    mask_->Reshape(num, channels, h, w);
    FillerParameter fp;
    fp.set_std(1.0);
    GaussianFiller<Dtype>(fp).Fill(value_);
    Dtype* m = mask_->mutable_cpu_data();
    for (int i = 0; i < mask_->count(); ++i) {
      const int y = (i / w) % h, x = i % w;
      const int yy = std::min(2 * y + (i / 3) % 2, H - 1), xx = std::min(2 * x + i % 2, W - 1);
      m[i] = yy * W + xx;
    }
  }

  // data (N x C x H x W) -> MAX Pooling 2 x 2 / 2 (value, mask) -> Unpooling (size of data).
  shared_ptr<Net<Dtype> > PoolUnpoolNet(int num, int channels, int H, int W,
                                        bool size_from_bottom) {
    std::ostringstream s;
    s << "name: 'pool_unpool' "
      << "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: " << num
      << " dim: " << channels << " dim: " << H << " dim: " << W << " } } } "
      << "layer { name: 'pool' type: 'Pooling' bottom: 'data' top: 'pooled' top: 'mask' "
      << "  pooling_param { pool: MAX kernel_size: 2 stride: 2 } } "
      << "layer { name: 'unpool' type: 'Unpooling' bottom: 'pooled' bottom: 'mask' "
      << (size_from_bottom ? "bottom: 'data' " : "") << "top: 'unpooled' }";
    NetParameter param;
    CHECK(google::protobuf::TextFormat::ParseFromString(s.str(), &param));
    return shared_ptr<Net<Dtype> >(new Net<Dtype>(param));
  }

  LayerParameter Param(uint32_t out_height = 0, uint32_t out_width = 0) {
    LayerParameter p;
    p.set_name("unpool");
    p.mutable_unpooling_param()->set_out_height(out_height);
    p.mutable_unpooling_param()->set_out_width(out_width);
    return p;
  }

  Blob<Dtype>* const value_;
  Blob<Dtype>* const mask_;
  Blob<Dtype>* const top_;
  vector<Blob<Dtype>*> bottom_vec_, top_vec_;
};

TYPED_TEST_CASE(UnpoolingLayerTest, TestDtypesAndDevices);

TYPED_TEST(UnpoolingLayerTest, TestForwardInvertsPooling) {
  typedef typename TypeParam::Dtype Dtype;
  // Odd sizes: BVLC's ceil-mode pooling gives 25 -> 13, 7 x 9 -> 4 x 5; bottom[2] restores them.
  const int sizes[][2] = {{25, 25}, {7, 9}, {8, 6}};
  for (int s = 0; s < 3; ++s) {
    const int H = sizes[s][0], W = sizes[s][1];
    shared_ptr<Net<Dtype> > net = this->PoolUnpoolNet(2, 3, H, W, true);
    Blob<Dtype>* data = net->blob_by_name("data").get();
    FillerParameter fp;
    fp.set_std(1.0);
    GaussianFiller<Dtype>(fp).Fill(data);
    net->Forward();
    const Blob<Dtype>& pooled = *net->blob_by_name("pooled");
    const Blob<Dtype>& mask = *net->blob_by_name("mask");
    const Blob<Dtype>& out = *net->blob_by_name("unpooled");
    ASSERT_EQ(pooled.height(), (H + 1) / 2);
    ASSERT_TRUE(out.shape() == data->shape()) << out.shape_string();
    // Each block's maximum is back in its place, every other entry is 0.
    for (int n = 0; n < 2; ++n) {
      for (int c = 0; c < 3; ++c) {
        for (int y = 0; y < H; ++y) {
          for (int x = 0; x < W; ++x) {
            const int py = y / 2, px = x / 2;
            const int m = static_cast<int>(mask.data_at(n, c, py, px));
            const Dtype expected = m == y * W + x ? data->data_at(n, c, y, x) : Dtype(0);
            EXPECT_EQ(out.data_at(n, c, y, x), expected)
                << H << " x " << W << " at " << n << " " << c << " " << y << " " << x;
            if (m == y * W + x) {
              EXPECT_EQ(pooled.data_at(n, c, py, px), data->data_at(n, c, y, x));
            }
          }
        }
      }
    }
  }
}

TYPED_TEST(UnpoolingLayerTest, TestOutputSize) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, 2, 3, 4, 6, 8, 1);
  UnpoolingLayer<Dtype> twice(this->Param());
  twice.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->shape_string(), "1 2 6 8 (96)");
  this->Fill(1, 2, 3, 4, 5, 7, 1);
  UnpoolingLayer<Dtype> given(this->Param(5, 7));
  given.SetUp(this->bottom_vec_, this->top_vec_);
  given.Forward(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->shape_string(), "1 2 5 7 (70)");
  Dtype sum = 0;
  for (int i = 0; i < this->top_->count(); ++i) sum += this->top_->cpu_data()[i];
  Dtype expected = 0;
  for (int i = 0; i < this->value_->count(); ++i) expected += this->value_->cpu_data()[i];
  EXPECT_NEAR(sum, expected, 1e-5);
}

TYPED_TEST(UnpoolingLayerTest, TestGradient) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(2, 3, 3, 4, 5, 8, 1701);  // odd output height: clipped last row of blocks
  Blob<Dtype> ref(1, 1, 5, 8);
  this->bottom_vec_.push_back(&ref);
  UnpoolingLayer<Dtype> layer(this->Param());
  GradientChecker<Dtype> checker(1e-2, 1e-3);
  checker.CheckGradientExhaustive(&layer, this->bottom_vec_, this->top_vec_, 0);
}

TYPED_TEST(UnpoolingLayerTest, TestNoGradientToMaskOrReference) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(1, 2, 3, 3, 6, 6, 3);
  Blob<Dtype> ref(1, 1, 6, 6);
  this->bottom_vec_.push_back(&ref);
  UnpoolingLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  caffe_set(this->top_->count(), Dtype(1), this->top_->mutable_cpu_diff());
  caffe_set(this->mask_->count(), Dtype(7), this->mask_->mutable_cpu_diff());
  caffe_set(ref.count(), Dtype(7), ref.mutable_cpu_diff());
  layer.Backward(this->top_vec_, vector<bool>{true, true, true}, this->bottom_vec_);
  for (int i = 0; i < this->mask_->count(); ++i) EXPECT_EQ(this->mask_->cpu_diff()[i], 0);
  for (int i = 0; i < ref.count(); ++i) EXPECT_EQ(ref.cpu_diff()[i], 0);
  for (int i = 0; i < this->value_->count(); ++i) EXPECT_EQ(this->value_->cpu_diff()[i], 1);
}

TYPED_TEST(UnpoolingLayerTest, TestBadMaskIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  const Dtype bad[] = {Dtype(2.5), Dtype(-1), Dtype(48)};
  const char* expected[] = {"Unpooling layer 'unpool': mask value 2.5 at \\(n 1, c 0, y 2, x 1\\)"
                            " is not an integer flat index in \\[0, 48\\)",
                            "mask value -1 at", "mask value 48 at"};
  for (int k = 0; k < 3; ++k) {
    this->Fill(2, 2, 3, 4, 6, 8, 5);
    this->mask_->mutable_cpu_data()[this->mask_->offset(1, 0, 2, 1)] = bad[k];
    UnpoolingLayer<Dtype> layer(this->Param());
    layer.SetUp(this->bottom_vec_, this->top_vec_);
    EXPECT_DEATH(layer.Forward(this->bottom_vec_, this->top_vec_), expected[k]);
    // A mask changed after Forward must not make Backward read outside the top diff.
    this->Fill(2, 2, 3, 4, 6, 8, 5);
    layer.Forward(this->bottom_vec_, this->top_vec_);
    this->mask_->mutable_cpu_data()[this->mask_->offset(1, 0, 2, 1)] = bad[k];
    EXPECT_DEATH(layer.Backward(this->top_vec_, vector<bool>{true, false}, this->bottom_vec_),
                 expected[k]);
  }
}

TYPED_TEST(UnpoolingLayerTest, TestOutputTooLargeIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  this->Fill(1, 1, 1, 2, 2, 4, 5);
  // out_height is uint32 in caffe.proto, a blob's dimension an int: 3e9 had wrapped to a
  // negative number and the layer used twice the input size.
  UnpoolingLayer<Dtype> huge(this->Param(3000000000u, 0));
  EXPECT_DEATH(huge.SetUp(this->bottom_vec_, this->top_vec_),
               "Unpooling layer 'unpool': out_height must be a whole number from 0 to "
               "2147483647, got 3000000000");
  // A float mask names every pixel of a 4096 x 4096 plane exactly, not of 4097 x 4096.
  UnpoolingLayer<Dtype> largest(this->Param(4096, 4096));
  largest.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_EQ(this->top_->shape_string(), "1 1 4096 4096 (16777216)");
  UnpoolingLayer<Dtype> larger(this->Param(4097, 4096));
  if (sizeof(Dtype) == sizeof(float)) {
    EXPECT_DEATH(larger.SetUp(this->bottom_vec_, this->top_vec_),
                 "Unpooling layer 'unpool': the output plane 4097 x 4096 has more than 2\\^24 = "
                 "16777216 pixels, and a float32 mask");
  } else {
    larger.SetUp(this->bottom_vec_, this->top_vec_);
    EXPECT_EQ(this->top_->shape_string(), "1 1 4097 4096 (16781312)");
  }
}

TYPED_TEST(UnpoolingLayerTest, TestMaskShapeMismatchIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  this->Fill(2, 2, 3, 4, 6, 8, 5);
  this->mask_->Reshape(2, 2, 3, 5);
  UnpoolingLayer<Dtype> layer(this->Param());
  EXPECT_DEATH(layer.SetUp(this->bottom_vec_, this->top_vec_),
               "Unpooling layer 'unpool': the mask \\(bottom\\[1\\]\\) is 2 2 3 5 \\(60\\), the "
               "pooled values \\(bottom\\[0\\]\\) are 2 2 3 4 \\(48\\)");
}

#ifndef CPU_ONLY
// The GPU path against the CPU path on the same inputs. The fixture's name says GPU, so the
// test runner's no-GPU filter leaves it out; on a GPU machine it runs.
template <typename TypeParam>
class UnpoolingGPUParityTest : public UnpoolingLayerTest<TypeParam> {};

typedef ::testing::Types<GPUDevice<float>, GPUDevice<double> > UnpoolingGPUDtypes;
TYPED_TEST_CASE(UnpoolingGPUParityTest, UnpoolingGPUDtypes);

TYPED_TEST(UnpoolingGPUParityTest, TestGPUMatchesCPU) {
  typedef typename TypeParam::Dtype Dtype;
  this->Fill(3, 5, 13, 13, 25, 25, 42);
  Blob<Dtype> ref(1, 1, 25, 25), cpu_top, cpu_diff, top_diff;
  this->bottom_vec_.push_back(&ref);
  UnpoolingLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  caffe_rng_gaussian<Dtype>(this->top_->count(), Dtype(0), Dtype(1),
                            this->top_->mutable_cpu_diff());
  top_diff.CopyFrom(*this->top_, true, true);
  const vector<bool> down{true, false, true};
  Caffe::set_mode(Caffe::CPU);
  layer.Forward(this->bottom_vec_, this->top_vec_);
  layer.Backward(this->top_vec_, down, this->bottom_vec_);
  cpu_top.CopyFrom(*this->top_, false, true);
  cpu_diff.CopyFrom(*this->value_, true, true);
  Caffe::set_mode(Caffe::GPU);
  caffe_gpu_set(this->value_->count(), Dtype(0), this->value_->mutable_gpu_diff());
  caffe_gpu_set(this->top_->count(), Dtype(-3), this->top_->mutable_gpu_data());
  layer.Forward(this->bottom_vec_, this->top_vec_);
  this->top_->CopyFrom(top_diff, true, false);
  layer.Backward(this->top_vec_, down, this->bottom_vec_);
  for (int i = 0; i < cpu_top.count(); ++i) {
    EXPECT_EQ(this->top_->cpu_data()[i], cpu_top.cpu_data()[i]) << i;
  }
  for (int i = 0; i < cpu_diff.count(); ++i) {
    EXPECT_EQ(this->value_->cpu_diff()[i], cpu_diff.cpu_diff()[i]) << i;
  }
}

TYPED_TEST(UnpoolingGPUParityTest, TestGPUBadMaskIsAnError) {
  typedef typename TypeParam::Dtype Dtype;
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  this->Fill(2, 2, 3, 4, 6, 8, 5);
  Dtype* m = this->mask_->mutable_cpu_data();
  m[this->mask_->offset(1, 1, 0, 3)] = 48;
  m[this->mask_->offset(1, 0, 2, 1)] = 0.5;  // the first bad entry is the one named
  UnpoolingLayer<Dtype> layer(this->Param());
  layer.SetUp(this->bottom_vec_, this->top_vec_);
  EXPECT_DEATH(layer.Forward(this->bottom_vec_, this->top_vec_),
               "Unpooling layer 'unpool': mask value 0.5 at \\(n 1, c 0, y 2, x 1\\)");
}
#endif

}  // namespace caffe
