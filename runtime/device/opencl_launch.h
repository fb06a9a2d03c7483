// How one kernel of edgec's OpenCL module is launched: what TVM's codegen says about it
// (KernelInfo), turned once into a LaunchPlan (argument sizes and kinds, which launch
// parameter sets which work size), then applied on every call to the arguments TVM's host
// code passes (Launch).
#pragma once

#include <tvm/ffi/function.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "opencl_api.h"

namespace edgec {
namespace opencl {

// One kernel as serialized by TVM's codegen (see opencl_module.cc for the byte layout).
struct KernelInfo {
  std::string key, name;
  std::vector<DLDataType> arg_types;
  std::vector<std::string> launch_tags;  // "blockIdx.x", "threadIdx.y", ...
  std::vector<int32_t> extra_tags;       // per argument: 0 = a buffer or scalar, 1 = texture
};

struct LaunchPlan {
  enum Kind { kBuffer, kInt, kFloat };
  struct Arg {
    Kind kind;
    size_t size;  // bytes given to clSetKernelArg
  };
  std::string name;
  std::vector<Arg> args;
  // Per launch parameter: 0..2 = work-groups along x/y/z, 3..5 = work-group size along x/y/z.
  std::vector<int> slots;
  cl_uint work_dim = 1;
};

// The plan for `k`; throws for what this runtime does not run (textures, dynamic shared
// memory, vector or half-precision scalars, unknown launch tags).
inline LaunchPlan MakePlan(const KernelInfo& k) {
  LaunchPlan plan;
  plan.name = k.name;
  for (size_t i = 0; i < k.arg_types.size(); ++i) {
    DLDataType t = k.arg_types[i];
    if (i < k.extra_tags.size() && k.extra_tags[i] != 0) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << k.name << ": argument " << i
                                  << " is a texture; edgec's OpenCL runtime runs buffers only "
                                     "(build without texture memory scopes)";
    }
    bool handle = t.code == kDLOpaqueHandle;
    bool scalar = (t.code == kDLInt || t.code == kDLUInt || t.code == kDLFloat) && t.lanes == 1 &&
                  (t.bits == 8 || t.bits == 16 || t.bits == 32 || t.bits == 64) &&
                  !(t.code == kDLFloat && t.bits < 32);
    if (!handle && !scalar) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << k.name << ": argument " << i
                                  << " has an unsupported type (code " << int(t.code) << ", "
                                  << int(t.bits) << " bits, " << t.lanes << " lanes)";
    }
    plan.args.push_back({handle ? LaunchPlan::kBuffer
                                : (t.code == kDLFloat ? LaunchPlan::kFloat : LaunchPlan::kInt),
                         handle ? sizeof(cl_mem) : t.bits / 8u});
  }
  for (const std::string& tag : k.launch_tags) {
    bool block = tag.rfind("blockIdx.", 0) == 0, thread = tag.rfind("threadIdx.", 0) == 0;
    char axis = tag.empty() ? '\0' : tag.back();
    if (!(block || thread) || tag.size() != (block ? 10u : 11u) || axis < 'x' || axis > 'z') {
      TVM_FFI_THROW(RuntimeError) << "OpenCL kernel " << k.name << ": launch parameter '" << tag
                                  << "' is not supported by edgec's OpenCL runtime";
    }
    int dim = axis - 'x';
    plan.slots.push_back((thread ? 3 : 0) + dim);
    plan.work_dim = std::max<cl_uint>(plan.work_dim, dim + 1);
  }
  return plan;
}

// Sets the kernel's arguments from `args` and enqueues it on `queue` (no wait).
inline void Launch(const LaunchPlan& plan, cl_kernel kernel, cl_command_queue queue,
                   tvm::ffi::PackedArgs args) {
  size_t expected = plan.args.size() + plan.slots.size();
  if (static_cast<size_t>(args.size()) != expected) {
    TVM_FFI_THROW(TypeError) << "OpenCL kernel " << plan.name << " takes " << expected
                             << " arguments, got " << args.size();
  }
  for (size_t i = 0; i < plan.args.size(); ++i) {
    const LaunchPlan::Arg& a = plan.args[i];
    alignas(8) unsigned char value[8] = {0};
    if (a.kind == LaunchPlan::kBuffer) {
      cl_mem mem = static_cast<cl_mem>(args[i].cast<void*>());
      std::memcpy(value, &mem, sizeof(mem));
    } else if (a.kind == LaunchPlan::kInt) {  // little-endian: the low bytes are the value
      int64_t v = args[i].cast<int64_t>();
      std::memcpy(value, &v, sizeof(v));
    } else if (a.size == 4) {
      float v = static_cast<float>(args[i].cast<double>());
      std::memcpy(value, &v, sizeof(v));
    } else {
      double v = args[i].cast<double>();
      std::memcpy(value, &v, sizeof(v));
    }
    Check(Api().clSetKernelArg(kernel, static_cast<cl_uint>(i), a.size, value), "clSetKernelArg");
  }
  size_t sizes[6] = {1, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < plan.slots.size(); ++i) {
    int64_t extent = args[static_cast<int>(plan.args.size() + i)].cast<int64_t>();
    if (extent <= 0) return;  // an empty dimension: nothing to compute
    sizes[plan.slots[i]] = static_cast<size_t>(extent);
  }
  size_t global[3], local[3];
  for (int d = 0; d < 3; ++d) {
    local[d] = sizes[3 + d];
    global[d] = sizes[d] * sizes[3 + d];
  }
  cl_int err = Api().clEnqueueNDRangeKernel(queue, kernel, plan.work_dim, nullptr, global, local,
                                            0, nullptr, nullptr);
  if (err != CL_SUCCESS) {
    TVM_FFI_THROW(RuntimeError) << "OpenCL: launching " << plan.name << " failed: "
                                << ErrorName(err);
  }
}

}  // namespace opencl
}  // namespace edgec
