// edgec's OpenCL runtime for TVM 0.27, whose wheel has none. libedgec_opencl.so is built from
// this file (the platform, context and queues: opencl_workspace.h), opencl_device_api.cc
// ("device_api.opencl": memory, copies, sync) and opencl_module.cc
// ("ffi.Module.load_from_bytes.opencl": the kernels of an exported artifact). Loading it with
// RTLD_GLOBAL before an artifact makes tvm.device("opencl") usable.
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "opencl_workspace.h"

namespace edgec {
namespace opencl {
namespace {

std::string PlatformString(cl_platform_id platform, cl_platform_info what) {
  size_t size = 0;
  if (Api().clGetPlatformInfo(platform, what, 0, nullptr, &size) != CL_SUCCESS) return "";
  std::string text(size, '\0');
  Api().clGetPlatformInfo(platform, what, size, text.data(), nullptr);
  return std::string(text.c_str());
}

std::vector<cl_device_id> DevicesOf(cl_platform_id platform, cl_device_type type) {
  cl_uint count = 0;
  if (Api().clGetDeviceIDs(platform, type, 0, nullptr, &count) != CL_SUCCESS) return {};
  std::vector<cl_device_id> devices(count);
  if (count > 0) Api().clGetDeviceIDs(platform, type, count, devices.data(), nullptr);
  return devices;
}

// The platform to use per the rule in opencl_workspace.h, or an error message.
std::pair<cl_platform_id, std::string> PickPlatform() {
  cl_uint count = 0;
  if (Api().clGetPlatformIDs(0, nullptr, &count) != CL_SUCCESS || count == 0) {
    return {nullptr, "no OpenCL platform: install pocl-opencl-icd (CPU) or the GPU vendor's ICD"};
  }
  std::vector<cl_platform_id> platforms(count);
  Api().clGetPlatformIDs(count, platforms.data(), nullptr);
  const char* wanted = std::getenv("EDGEC_OPENCL_PLATFORM");
  if (wanted != nullptr && *wanted != '\0') {
    std::string names;
    for (cl_platform_id p : platforms) {
      std::string name = PlatformString(p, CL_PLATFORM_NAME);
      if (name.find(wanted) != std::string::npos ||
          PlatformString(p, CL_PLATFORM_VENDOR).find(wanted) != std::string::npos) {
        return {p, ""};
      }
      names += (names.empty() ? "" : ", ") + name;
    }
    return {nullptr, std::string("no OpenCL platform matches EDGEC_OPENCL_PLATFORM=") + wanted +
                         " (platforms: " + names + ")"};
  }
  for (cl_platform_id p : platforms) {
    if (!DevicesOf(p, CL_DEVICE_TYPE_GPU).empty()) return {p, ""};
  }
  for (cl_platform_id p : platforms) {
    if (!DevicesOf(p, CL_DEVICE_TYPE_ALL).empty()) return {p, ""};
  }
  return {nullptr, "no OpenCL device on any platform: install pocl-opencl-icd (CPU) or the GPU "
                   "vendor's ICD"};
}

// Fills `w` (devices, context, queues) or its error.
void Init(Workspace* w) {
  if (!Api().error.empty()) {
    w->error = "no OpenCL platform: " + Api().error;
    return;
  }
  auto [platform, error] = PickPlatform();
  if (platform == nullptr) {
    w->error = error;
    return;
  }
  w->platform = platform;
  w->platform_name = PlatformString(platform, CL_PLATFORM_NAME);
  w->devices = DevicesOf(platform, CL_DEVICE_TYPE_GPU);
  if (w->devices.empty()) w->devices = DevicesOf(platform, CL_DEVICE_TYPE_ALL);
  if (w->devices.empty()) {
    w->error = "no OpenCL device on the platform " + w->platform_name;
    return;
  }
  cl_int err = CL_SUCCESS;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM,
                                   reinterpret_cast<cl_context_properties>(platform), 0};
  w->context = Api().clCreateContext(props, static_cast<cl_uint>(w->devices.size()),
                                     w->devices.data(), nullptr, nullptr, &err);
  if (err != CL_SUCCESS) {
    w->error = std::string("OpenCL: clCreateContext failed: ") + ErrorName(err);
    w->devices.clear();
    return;
  }
  for (cl_device_id device : w->devices) {
    w->queues.push_back(Api().clCreateCommandQueue(w->context, device, 0, &err));
    if (err != CL_SUCCESS) {
      w->error = std::string("OpenCL: clCreateCommandQueue failed: ") + ErrorName(err);
      w->devices.clear();
      return;
    }
  }
}

}  // namespace

Workspace& Workspace::Global() {
  static Workspace* workspace = [] {
    auto* w = new Workspace();
    Init(w);
    return w;
  }();
  return *workspace;
}

cl_device_id Workspace::Device(int id) const {
  if (!error.empty()) TVM_FFI_THROW(RuntimeError) << error;
  if (id < 0 || static_cast<size_t>(id) >= devices.size()) {
    TVM_FFI_THROW(RuntimeError) << "OpenCL: no device opencl:" << id << " (" << platform_name
                                << " has " << devices.size() << ")";
  }
  return devices[id];
}

cl_command_queue Workspace::Queue(int id) const {
  Device(id);
  return queues[id];
}

std::string DeviceString(cl_device_id device, cl_device_info what) {
  size_t size = 0;
  Check(Api().clGetDeviceInfo(device, what, 0, nullptr, &size), "clGetDeviceInfo");
  std::string text(size, '\0');
  Check(Api().clGetDeviceInfo(device, what, size, text.data(), nullptr), "clGetDeviceInfo");
  return std::string(text.c_str());
}

TVM_FFI_STATIC_INIT_BLOCK() {
  // "" when a device is usable, else why not (runtime/opencl.py's ensure_loaded reports it).
  RegisterOnce("edgec.opencl.status", []() -> tvm::ffi::String {
    return Workspace::Global().error;
  });
  // The platform and its devices with their kinds ("platform | name (cpu|gpu|other) | ..."),
  // for messages, tests and the latency label.
  RegisterOnce("edgec.opencl.describe", []() -> tvm::ffi::String {
    const Workspace& w = Workspace::Global();
    if (!w.error.empty()) return w.error;
    std::string text = w.platform_name;
    for (cl_device_id d : w.devices) {
      cl_device_type type = 0;
      Check(Api().clGetDeviceInfo(d, CL_DEVICE_TYPE, sizeof(type), &type, nullptr),
            "clGetDeviceInfo");
      const char* kind = (type & CL_DEVICE_TYPE_GPU) ? "gpu" : (type & CL_DEVICE_TYPE_CPU) ? "cpu"
                                                                                        : "other";
      text += " | " + DeviceString(d, CL_DEVICE_NAME) + " (" + kind + ")";
    }
    return text;
  });
}

}  // namespace opencl
}  // namespace edgec
