// edgec's OpenCL DeviceAPI: registered as "device_api.opencl", which TVM's DeviceAPIManager
// calls (casting the returned void* to DeviceAPI*), so tvm.device("opencl") allocates, copies
// and synchronizes through it. A tensor's data pointer on this device is its cl_mem; byte
// offsets travel separately (DLTensor's byte_offset) and become the offsets of
// clEnqueue{Read,Write,Copy}Buffer.
//
// Copies between host and device block until done (the host memory may be freed right after);
// copies on the device and kernel launches are only enqueued on the device's in-order queue,
// so they run in order and a later read (or StreamSync: clFinish) waits for them.
#include <tvm/runtime/device_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "opencl_workspace.h"

namespace edgec {
namespace opencl {
namespace {

namespace ffi = tvm::ffi;
using tvm::runtime::DeviceAttrKind;

thread_local int current_device = 0;

template <typename T>
T DeviceValue(cl_device_id device, cl_device_info what) {
  T value{};
  Check(Api().clGetDeviceInfo(device, what, sizeof(T), &value, nullptr), "clGetDeviceInfo");
  return value;
}

// "X.Y" of a CL_DEVICE_VERSION such as "OpenCL 3.0 PoCL ...".
std::string VersionNumber(const std::string& version) {
  size_t start = version.find(' ');
  if (start == std::string::npos) return version;
  size_t end = version.find(' ', start + 1);
  return version.substr(start + 1, end == std::string::npos ? end : end - start - 1);
}

class OpenCLDeviceAPI final : public tvm::runtime::DeviceAPI {
 public:
  static OpenCLDeviceAPI* Global() {
    static auto* api = new OpenCLDeviceAPI();  // never destroyed: TVM keeps the raw pointer
    return api;
  }

  void SetDevice(DLDevice dev) final { current_device = dev.device_id; }

  void GetAttr(DLDevice dev, DeviceAttrKind kind, ffi::Any* rv) final {
    const Workspace& w = Workspace::Global();
    if (kind == tvm::runtime::kExist) {
      *rv = static_cast<int>(w.error.empty() && dev.device_id >= 0 &&
                             static_cast<size_t>(dev.device_id) < w.devices.size());
      return;
    }
    cl_device_id d = w.Device(dev.device_id);
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock:  // the work-group size limit
        *rv = static_cast<int64_t>(DeviceValue<size_t>(d, CL_DEVICE_MAX_WORK_GROUP_SIZE));
        break;
      case tvm::runtime::kWarpSize:  // OpenCL has no portable sub-group width
        *rv = 1;
        break;
      case tvm::runtime::kMaxSharedMemoryPerBlock:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_LOCAL_MEM_SIZE));
        break;
      case tvm::runtime::kComputeVersion:
        *rv = ffi::String(VersionNumber(DeviceString(d, CL_DEVICE_VERSION)));
        break;
      case tvm::runtime::kDeviceName:
        *rv = ffi::String(DeviceString(d, CL_DEVICE_NAME));
        break;
      case tvm::runtime::kMaxClockRate:  // kHz, as TVM's CUDA API reports it
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_CLOCK_FREQUENCY)) * 1000;
        break;
      case tvm::runtime::kMultiProcessorCount:
        *rv = static_cast<int64_t>(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_COMPUTE_UNITS));
        break;
      case tvm::runtime::kMaxThreadDimensions:
        *rv = ffi::String(MaxWorkItemSizes(d));
        break;
      case tvm::runtime::kDriverVersion:
        *rv = ffi::String(DeviceString(d, CL_DRIVER_VERSION));
        break;
      case tvm::runtime::kApiVersion:
        *rv = ffi::String(VersionNumber(DeviceString(d, CL_DEVICE_VERSION)));
        break;
      case tvm::runtime::kL2CacheSizeBytes:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_GLOBAL_MEM_CACHE_SIZE));
        break;
      case tvm::runtime::kTotalGlobalMemory:
        *rv = static_cast<int64_t>(DeviceValue<cl_ulong>(d, CL_DEVICE_GLOBAL_MEM_SIZE));
        break;
      default:  // not known for OpenCL: left as None
        break;
    }
  }

  void* AllocDataSpace(DLDevice dev, size_t nbytes, size_t alignment, DLDataType) final {
    const Workspace& w = Workspace::Global();
    cl_device_id d = w.Device(dev.device_id);
    // Buffers start at multiples of CL_DEVICE_MEM_BASE_ADDR_ALIGN (bits); no more can be asked.
    size_t base_align = DeviceValue<cl_uint>(d, CL_DEVICE_MEM_BASE_ADDR_ALIGN) / 8;
    if (alignment > base_align) {
      TVM_FFI_THROW(RuntimeError) << "OpenCL: " << alignment << "-byte alignment requested; "
                                  << DeviceString(d, CL_DEVICE_NAME) << " aligns buffers to "
                                  << base_align << " bytes";
    }
    cl_int err = CL_SUCCESS;
    // A zero-byte cl_mem is invalid; empty tensors still need a distinct handle.
    cl_mem mem = Api().clCreateBuffer(w.context, CL_MEM_READ_WRITE, std::max<size_t>(nbytes, 1),
                                      nullptr, &err);
    Check(err, "clCreateBuffer");
    return mem;
  }

  void FreeDataSpace(DLDevice, void* ptr) final {
    // OpenCL keeps the memory until the commands already enqueued on it have finished.
    if (ptr != nullptr) Check(Api().clReleaseMemObject(static_cast<cl_mem>(ptr)),
                              "clReleaseMemObject");
  }

  void StreamSync(DLDevice dev, TVMStreamHandle) final {
    Check(Api().clFinish(Workspace::Global().Queue(dev.device_id)), "clFinish");
  }

  // Workspaces (TVMBackendAllocWorkspace) recur with the same sizes on every run: freed ones
  // are kept per device and size and handed out again, instead of a cl_mem per call.
  void* AllocWorkspace(DLDevice dev, size_t nbytes, DLDataType type_hint) final {
    {
      std::lock_guard<std::mutex> lock(pool_mutex_);
      auto it = pool_.find({dev.device_id, nbytes});
      if (it != pool_.end()) {
        void* mem = it->second;
        pool_.erase(it);
        return mem;
      }
    }
    void* mem = AllocDataSpace(dev, nbytes, tvm::runtime::kTempAllocaAlignment, type_hint);
    std::lock_guard<std::mutex> lock(pool_mutex_);
    sizes_[mem] = nbytes;
    return mem;
  }

  void FreeWorkspace(DLDevice dev, void* ptr) final {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    auto size = sizes_.find(ptr);
    if (size == sizes_.end()) TVM_FFI_THROW(RuntimeError) << "OpenCL: unknown workspace " << ptr;
    pool_.emplace(std::make_pair(dev.device_id, size->second), ptr);
  }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset,
                      size_t num_bytes, DLDevice dev_from, DLDevice dev_to, DLDataType,
                      TVMStreamHandle) final {
    if (num_bytes == 0) return;
    const Workspace& w = Workspace::Global();
    bool from_cl = dev_from.device_type == kDLOpenCL, to_cl = dev_to.device_type == kDLOpenCL;
    if (from_cl && to_cl) {
      Check(Api().clEnqueueCopyBuffer(w.Queue(dev_from.device_id),
                                      static_cast<cl_mem>(const_cast<void*>(from)),
                                      static_cast<cl_mem>(to), from_offset, to_offset,
                                      num_bytes, 0, nullptr, nullptr),
            "clEnqueueCopyBuffer");
    } else if (from_cl && dev_to.device_type == kDLCPU) {
      Check(Api().clEnqueueReadBuffer(w.Queue(dev_from.device_id),
                                      static_cast<cl_mem>(const_cast<void*>(from)), CL_TRUE,
                                      from_offset, num_bytes, static_cast<char*>(to) + to_offset,
                                      0, nullptr, nullptr),
            "clEnqueueReadBuffer");
    } else if (to_cl && dev_from.device_type == kDLCPU) {
      Check(Api().clEnqueueWriteBuffer(w.Queue(dev_to.device_id), static_cast<cl_mem>(to),
                                       CL_TRUE, to_offset, num_bytes,
                                       static_cast<const char*>(from) + from_offset, 0, nullptr,
                                       nullptr),
            "clEnqueueWriteBuffer");
    } else {
      TVM_FFI_THROW(RuntimeError) << "OpenCL: cannot copy from device type "
                                  << dev_from.device_type << " to " << dev_to.device_type;
    }
  }

 private:
  static std::string MaxWorkItemSizes(cl_device_id d) {
    std::vector<size_t> sizes(DeviceValue<cl_uint>(d, CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS));
    Check(Api().clGetDeviceInfo(d, CL_DEVICE_MAX_WORK_ITEM_SIZES, sizes.size() * sizeof(size_t),
                                sizes.data(), nullptr),
          "clGetDeviceInfo");
    std::string text;
    for (size_t i = 0; i < sizes.size() && i < 3; ++i) {
      text += (i ? ", " : "[") + std::to_string(sizes[i]);
    }
    return text + "]";
  }

  std::mutex pool_mutex_;
  std::multimap<std::pair<int, size_t>, void*> pool_;  // free workspaces by (device, size)
  std::map<void*, size_t> sizes_;                        // every workspace's size
};

}  // namespace

int CurrentDevice() { return current_device; }

TVM_FFI_STATIC_INIT_BLOCK() {
  RegisterOnce("device_api.opencl", []() -> void* { return OpenCLDeviceAPI::Global(); });
}

}  // namespace opencl
}  // namespace edgec
