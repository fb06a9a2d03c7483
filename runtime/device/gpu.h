// GPU artifacts in edgec-run: the device named by manifest.json's target.device, its runtime
// library (lib/libtvm_runtime_cuda.so, which needs the CUDA runtime and driver only a GPU
// board has, or lib/libedgec_opencl.so, which needs an OpenCL driver; loaded at start), and
// the copies between host and device memory.
//
// Inputs are read into host tensors as for the CPU and copied into device tensors allocated
// once; each run copies them in, runs the model and copies its outputs back, so a timed run
// ends when the GPU's work has (the copy back waits for it).
#pragma once

#include <dlfcn.h>
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/function.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace edgec {

namespace ffi = tvm::ffi;

// The device of `name` ("cpu", "cuda" or "opencl"). For a GPU the runtime library that runs
// its kernels is loaded from the bundle's lib/ first: TVM's CUDA runtime
// (libtvm_runtime_cuda.so), or edgec's OpenCL runtime (libedgec_opencl.so, which opens the
// device's OpenCL driver itself). An exception carries the loader's message, e.g. a missing
// libcudart.so.13.
inline DLDevice OpenDevice(const std::string& bundle, const std::string& name) {
  if (name == "cpu") return DLDevice{kDLCPU, 0};
  if (name != "cuda" && name != "opencl") {
    throw std::runtime_error("this runner opens cpu, cuda and opencl artifacts, not " + name);
  }
  bool cuda = name == "cuda";
  std::string lib = bundle + (cuda ? "/lib/libtvm_runtime_cuda.so" : "/lib/libedgec_opencl.so");
  if (dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    throw std::runtime_error(std::string(cuda ? "cannot load TVM's CUDA runtime: "
                                              : "cannot load edgec's OpenCL runtime: ") +
                             dlerror());
  }
  return cuda ? DLDevice{kDLCUDA, 0} : DLDevice{kDLOpenCL, 0};
}

inline ffi::Function Global(const char* name) {
  auto f = ffi::Function::GetGlobal(name);
  if (!f.has_value()) throw std::runtime_error(std::string("the TVM runtime has no ") + name);
  return *f;
}

// A tensor shaped and typed like `like`, on `device`.
inline ffi::Tensor AllocLike(const ffi::Tensor& like, DLDevice device) {
  static ffi::Function alloc = Global("runtime.TVMTensorAllocWithScope");
  ffi::Shape shape(like.shape().begin(), like.shape().end());
  return alloc(shape, like.dtype(), device, nullptr).cast<ffi::Tensor>();
}

inline void CopyTensor(const ffi::Tensor& from, const ffi::Tensor& to) {
  static ffi::Function copy = Global("runtime.TVMTensorCopyFromTo");
  copy(from, to);
}

// Host copies of device tensors (the copy waits for the kernels that write them).
inline std::vector<ffi::Tensor> ToHost(const std::vector<ffi::Tensor>& tensors) {
  std::vector<ffi::Tensor> out;
  for (const ffi::Tensor& t : tensors) {
    out.push_back(AllocLike(t, DLDevice{kDLCPU, 0}));
    CopyTensor(t, out.back());
  }
  return out;
}

}  // namespace edgec
