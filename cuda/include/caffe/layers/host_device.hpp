#ifndef CAFFE_LAYERS_HOST_DEVICE_HPP_
#define CAFFE_LAYERS_HOST_DEVICE_HPP_

// Marks a small function that our layers' CPU (.cpp) and CUDA (.cu) code share: one
// definition of the maths for both paths.
#ifdef __CUDACC__
#define DMPN_HOST_DEVICE __host__ __device__
#else
#define DMPN_HOST_DEVICE
#endif

#endif  // CAFFE_LAYERS_HOST_DEVICE_HPP_
