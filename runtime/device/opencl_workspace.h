// The OpenCL state edgec's runtime shares between its DeviceAPI (opencl.cc) and its kernel
// module (opencl_module.cc): one platform, one context over that platform's devices, and one
// in-order command queue per device. TVM's device id N is the N-th device of the platform.
//
// The platform is $EDGEC_OPENCL_PLATFORM's (a substring of its name or vendor) when set, else
// the first platform with a GPU, else the first with any device (PoCL's devices are CPUs).
// On the chosen platform the GPUs are used when it has some, else all its devices.
#pragma once

#include <tvm/ffi/reflection/registry.h>

#include <string>
#include <utility>
#include <vector>

#include "opencl_api.h"

namespace edgec {
namespace opencl {

struct Workspace {
  std::string platform_name;
  cl_platform_id platform = nullptr;
  cl_context context = nullptr;
  std::vector<cl_device_id> devices;
  std::vector<cl_command_queue> queues;
  // Why no device is usable (no library, no platform, ...); empty when the devices are.
  std::string error;

  // The process-wide workspace, set up on first use; never destroyed (kernels and buffers
  // may still be released by other objects' destructors during exit).
  static Workspace& Global();

  // The device and queue of TVM device id `id`; throw a TVM error when it does not exist.
  cl_device_id Device(int id) const;
  cl_command_queue Queue(int id) const;
};

// The device id the calling thread last set with DeviceAPI::SetDevice (0 by default):
// kernels launch on its queue, as TVM's host code sets the device before launching.
int CurrentDevice();

// A string-valued clGetDeviceInfo query (names, versions).
std::string DeviceString(cl_device_id device, cl_device_info what);

// Registers the global function `name` unless it exists: a second copy of this library
// (another path, e.g. a bundle's lib/ next to edgec's cache) must not abort the process by
// registering twice; the first copy loaded serves all.
template <typename F>
void RegisterOnce(const char* name, F&& f) {
  if (!tvm::ffi::Function::GetGlobal(name).has_value()) {
    tvm::ffi::reflection::GlobalDef().def(name, std::forward<F>(f));
  }
}

}  // namespace opencl
}  // namespace edgec
