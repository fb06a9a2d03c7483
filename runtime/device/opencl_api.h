// The OpenCL API as edgec's OpenCL runtime (opencl.cc, opencl_module.cc) uses it: the ICD
// loader is opened with dlopen at run time, not linked, because a phone keeps its vendor's
// libOpenCL.so outside the default search path (/vendor/lib64, /system/vendor/lib64) and a
// machine without OpenCL must still be able to load libedgec_opencl.so and report "no
// OpenCL platform" instead of failing at link time.
//
// `Api()` holds one function pointer per cl* entry point used; `Check` turns a cl_int status
// into a TVM error that names the code (CL_OUT_OF_RESOURCES, ...) and what was being done.
#pragma once

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <dlfcn.h>
#include <tvm/ffi/error.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace edgec {
namespace opencl {

// One pointer per OpenCL entry point; the types come from CL/cl.h's declarations, which are
// only named here (decltype), never linked.
#define EDGEC_CL_FUNCTIONS(X)                                                               \
  X(clGetPlatformIDs) X(clGetPlatformInfo) X(clGetDeviceIDs) X(clGetDeviceInfo)             \
  X(clCreateContext) X(clReleaseContext) X(clCreateCommandQueue) X(clReleaseCommandQueue)   \
  X(clCreateBuffer) X(clReleaseMemObject) X(clEnqueueReadBuffer) X(clEnqueueWriteBuffer)    \
  X(clEnqueueCopyBuffer) X(clFinish) X(clCreateProgramWithSource) X(clBuildProgram)         \
  X(clGetProgramBuildInfo) X(clReleaseProgram) X(clCreateKernel) X(clReleaseKernel)         \
  X(clSetKernelArg) X(clEnqueueNDRangeKernel)

struct ClApi {
#define EDGEC_CL_MEMBER(name) decltype(&::name) name = nullptr;
  EDGEC_CL_FUNCTIONS(EDGEC_CL_MEMBER)
#undef EDGEC_CL_MEMBER
  std::string error;  // why the library could not be opened; empty once it was
};

// The ICD loaders tried, in order: $EDGEC_OPENCL_LIBRARY, the usual Linux names, then where
// Android vendors install theirs.
inline std::vector<std::string> LibraryCandidates() {
  std::vector<std::string> names;
  if (const char* env = std::getenv("EDGEC_OPENCL_LIBRARY"); env != nullptr && *env != '\0') {
    names.push_back(env);
  }
  for (const char* name : {"libOpenCL.so.1", "libOpenCL.so", "/vendor/lib64/libOpenCL.so",
                           "/system/vendor/lib64/libOpenCL.so", "/system/lib64/libOpenCL.so"}) {
    names.push_back(name);
  }
  return names;
}

// Opens the first loader that exists and resolves every entry point (all or nothing).
inline ClApi OpenApi() {
  ClApi api;
  void* handle = nullptr;
  std::string tried;
  for (const std::string& name : LibraryCandidates()) {
    handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    tried += (tried.empty() ? "" : ", ") + name;
  }
  if (handle == nullptr) {
    api.error = "no OpenCL library found (tried " + tried + "; set EDGEC_OPENCL_LIBRARY)";
    return api;
  }
#define EDGEC_CL_RESOLVE(name)                                                   \
  api.name = reinterpret_cast<decltype(&::name)>(dlsym(handle, #name));          \
  if (api.name == nullptr) {                                                     \
    api.error = std::string("the OpenCL library lacks ") + #name;                \
    return api;                                                                  \
  }
  EDGEC_CL_FUNCTIONS(EDGEC_CL_RESOLVE)
#undef EDGEC_CL_RESOLVE
  return api;
}

// The process-wide table, opened on first use (the library stays open until exit).
inline const ClApi& Api() {
  static const ClApi* api = new ClApi(OpenApi());
  return *api;
}

inline const char* ErrorName(cl_int code) {
  switch (code) {
#define EDGEC_CL_CASE(name) \
  case name:                \
    return #name;
    EDGEC_CL_CASE(CL_SUCCESS) EDGEC_CL_CASE(CL_DEVICE_NOT_FOUND)
    EDGEC_CL_CASE(CL_DEVICE_NOT_AVAILABLE) EDGEC_CL_CASE(CL_COMPILER_NOT_AVAILABLE)
    EDGEC_CL_CASE(CL_MEM_OBJECT_ALLOCATION_FAILURE) EDGEC_CL_CASE(CL_OUT_OF_RESOURCES)
    EDGEC_CL_CASE(CL_OUT_OF_HOST_MEMORY) EDGEC_CL_CASE(CL_PROFILING_INFO_NOT_AVAILABLE)
    EDGEC_CL_CASE(CL_MEM_COPY_OVERLAP) EDGEC_CL_CASE(CL_IMAGE_FORMAT_MISMATCH)
    EDGEC_CL_CASE(CL_IMAGE_FORMAT_NOT_SUPPORTED) EDGEC_CL_CASE(CL_BUILD_PROGRAM_FAILURE)
    EDGEC_CL_CASE(CL_MAP_FAILURE) EDGEC_CL_CASE(CL_MISALIGNED_SUB_BUFFER_OFFSET)
    EDGEC_CL_CASE(CL_COMPILE_PROGRAM_FAILURE) EDGEC_CL_CASE(CL_LINKER_NOT_AVAILABLE)
    EDGEC_CL_CASE(CL_LINK_PROGRAM_FAILURE) EDGEC_CL_CASE(CL_INVALID_VALUE)
    EDGEC_CL_CASE(CL_INVALID_DEVICE_TYPE) EDGEC_CL_CASE(CL_INVALID_PLATFORM)
    EDGEC_CL_CASE(CL_INVALID_DEVICE) EDGEC_CL_CASE(CL_INVALID_CONTEXT)
    EDGEC_CL_CASE(CL_INVALID_QUEUE_PROPERTIES) EDGEC_CL_CASE(CL_INVALID_COMMAND_QUEUE)
    EDGEC_CL_CASE(CL_INVALID_HOST_PTR) EDGEC_CL_CASE(CL_INVALID_MEM_OBJECT)
    EDGEC_CL_CASE(CL_INVALID_BINARY) EDGEC_CL_CASE(CL_INVALID_BUILD_OPTIONS)
    EDGEC_CL_CASE(CL_INVALID_PROGRAM) EDGEC_CL_CASE(CL_INVALID_PROGRAM_EXECUTABLE)
    EDGEC_CL_CASE(CL_INVALID_KERNEL_NAME) EDGEC_CL_CASE(CL_INVALID_KERNEL_DEFINITION)
    EDGEC_CL_CASE(CL_INVALID_KERNEL) EDGEC_CL_CASE(CL_INVALID_ARG_INDEX)
    EDGEC_CL_CASE(CL_INVALID_ARG_VALUE) EDGEC_CL_CASE(CL_INVALID_ARG_SIZE)
    EDGEC_CL_CASE(CL_INVALID_KERNEL_ARGS) EDGEC_CL_CASE(CL_INVALID_WORK_DIMENSION)
    EDGEC_CL_CASE(CL_INVALID_WORK_GROUP_SIZE) EDGEC_CL_CASE(CL_INVALID_WORK_ITEM_SIZE)
    EDGEC_CL_CASE(CL_INVALID_GLOBAL_OFFSET) EDGEC_CL_CASE(CL_INVALID_EVENT_WAIT_LIST)
    EDGEC_CL_CASE(CL_INVALID_EVENT) EDGEC_CL_CASE(CL_INVALID_OPERATION)
    EDGEC_CL_CASE(CL_INVALID_BUFFER_SIZE) EDGEC_CL_CASE(CL_INVALID_GLOBAL_WORK_SIZE)
    EDGEC_CL_CASE(CL_INVALID_PROPERTY)
#undef EDGEC_CL_CASE
    default:
      return "CL_UNKNOWN_ERROR";
  }
}

// Throws a TVM error naming the failed call and the error code unless `code` is CL_SUCCESS.
inline void Check(cl_int code, const char* what) {
  if (code != CL_SUCCESS) {
    TVM_FFI_THROW(RuntimeError) << "OpenCL: " << what << " failed: " << ErrorName(code) << " ("
                                << code << ")";
  }
}

}  // namespace opencl
}  // namespace edgec
