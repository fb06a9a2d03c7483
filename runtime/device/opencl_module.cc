// The kernels of an exported OpenCL artifact: "ffi.Module.load_from_bytes.opencl" turns the
// bytes TVM's codegen embedded in model.so into a module whose functions launch the kernels.
//
// The bytes (little-endian, each string a u64 length then its bytes): the format ("cl"); a
// u64 count of kernels, each a key string and its info (name; u64 count + 4-byte DLDataType of
// each argument; u64 count + launch-parameter tags such as "blockIdx.x", "threadIdx.y"; u64
// count + i32 extra tag per argument, 1 = texture); then the OpenCL C source of all kernels.
//
// TVM's host code calls a kernel by name with its arguments (buffers as their cl_mem, scalars
// as int64/double) followed by one integer per launch tag. The OpenCL program is built once per
// device on first use, each kernel created once per device; a launch sets the arguments and
// enqueues the NDRange (global size = groups x local size) without waiting for it.
#include <tvm/ffi/cast.h>
#include <tvm/ffi/extra/module.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "opencl_launch.h"
#include "opencl_workspace.h"

namespace edgec {
namespace opencl {
namespace {

namespace ffi = tvm::ffi;

// Reads the serialized stream; every read is bounds-checked.
class Reader {
 public:
  Reader(const char* data, size_t size) : data_(data), left_(size) {}
  template <typename T>
  T Pod() {
    T value;
    std::memcpy(&value, Take(sizeof(T)), sizeof(T));
    return value;
  }
  std::string Str() {
    uint64_t n = Pod<uint64_t>();
    return std::string(Take(n), n);
  }
  template <typename T, typename F>
  std::vector<T> List(F read) {
    std::vector<T> items(Pod<uint64_t>());
    for (T& item : items) item = read();
    return items;
  }

 private:
  const char* Take(uint64_t n) {
    if (n > left_) TVM_FFI_THROW(ValueError) << "OpenCL module: truncated bytes";
    const char* at = data_;
    data_ += n;
    left_ -= n;
    return at;
  }
  const char* data_;
  size_t left_;
};

// Writes the same stream back (SaveToBytes), so an exported artifact re-exports unchanged.
struct Writer {
  std::string out;
  template <typename T>
  void Pod(const T& value) { out.append(reinterpret_cast<const char*>(&value), sizeof(T)); }
  void Str(const std::string& s) {
    Pod<uint64_t>(s.size());
    out += s;
  }
};

class OpenCLModule final : public ffi::ModuleObj {
 public:
  OpenCLModule(std::string fmt, std::vector<KernelInfo> kernels, std::string source)
      : fmt_(std::move(fmt)), kernels_(std::move(kernels)), source_(std::move(source)) {}

  ~OpenCLModule() {  // run by the deleter make_object installs
    for (auto& per_device : cl_kernels_) {
      for (cl_kernel k : per_device) {
        if (k != nullptr) Api().clReleaseKernel(k);
      }
    }
    for (cl_program p : programs_) {
      if (p != nullptr) Api().clReleaseProgram(p);
    }
  }

  const char* kind() const final { return "opencl"; }
  int GetPropertyMask() const final {
    return ffi::Module::kBinarySerializable | ffi::Module::kRunnable;
  }

  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    for (size_t i = 0; i < kernels_.size(); ++i) {
      if (kernels_[i].key != name) continue;
      auto plan = std::make_shared<LaunchPlan>(MakePlan(kernels_[i]));
      ffi::ObjectPtr<ffi::Object> self = ffi::GetObjectPtr<ffi::Object>(this);
      return ffi::Function::FromPacked([this, self, plan, i](ffi::PackedArgs args, ffi::Any*) {
        int device = CurrentDevice();
        std::lock_guard<std::mutex> lock(mutex_);  // a cl_kernel's arguments are shared state
        Launch(*plan, Kernel(device, i), Workspace::Global().Queue(device), args);
      });
    }
    return std::nullopt;
  }

  ffi::Bytes SaveToBytes() const final {
    Writer w;
    w.Str(fmt_);
    w.Pod<uint64_t>(kernels_.size());
    for (const KernelInfo& k : kernels_) {
      w.Str(k.key);
      w.Str(k.name);
      w.Pod<uint64_t>(k.arg_types.size());
      for (DLDataType t : k.arg_types) w.Pod(t);
      w.Pod<uint64_t>(k.launch_tags.size());
      for (const std::string& tag : k.launch_tags) w.Str(tag);
      w.Pod<uint64_t>(k.extra_tags.size());
      for (int32_t tag : k.extra_tags) w.Pod(tag);
    }
    w.Str(source_);
    return ffi::Bytes(w.out);
  }

  ffi::String InspectSource(const ffi::String&) const final { return source_; }

 private:
  // The program of `device`, built on first use; a failed build throws with the build log
  // and is tried again on the next call.
  cl_program Program(int device) {
    const Workspace& w = Workspace::Global();
    cl_device_id d = w.Device(device);
    if (programs_.size() <= static_cast<size_t>(device)) programs_.resize(device + 1, nullptr);
    if (programs_[device] != nullptr) return programs_[device];
    if (fmt_ != "cl") TVM_FFI_THROW(ValueError) << "OpenCL: unsupported kernel format " << fmt_;
    const char* text = source_.c_str();
    size_t size = source_.size();
    cl_int err = CL_SUCCESS;
    cl_program program = Api().clCreateProgramWithSource(w.context, 1, &text, &size, &err);
    Check(err, "clCreateProgramWithSource");
    err = Api().clBuildProgram(program, 1, &d, "", nullptr, nullptr);
    if (err != CL_SUCCESS) {
      std::string log = BuildLog(program, d);
      Api().clReleaseProgram(program);
      TVM_FFI_THROW(RuntimeError) << "OpenCL: building the kernels for "
                                  << DeviceString(d, CL_DEVICE_NAME) << " failed ("
                                  << ErrorName(err) << "): " << log;
    }
    return programs_[device] = program;
  }

  static std::string BuildLog(cl_program program, cl_device_id d) {
    size_t size = 0;
    Api().clGetProgramBuildInfo(program, d, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size);
    std::string log(size, '\0');
    Api().clGetProgramBuildInfo(program, d, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr);
    return std::string(log.c_str());
  }

  // Kernel `index` on `device`, created on first use (caller holds mutex_).
  cl_kernel Kernel(int device, size_t index) {
    if (cl_kernels_.size() <= static_cast<size_t>(device)) cl_kernels_.resize(device + 1);
    auto& per_device = cl_kernels_[device];
    if (per_device.empty()) per_device.resize(kernels_.size(), nullptr);
    if (per_device[index] == nullptr) {
      cl_int err = CL_SUCCESS;
      cl_program program = Program(device);
      per_device[index] = Api().clCreateKernel(program, kernels_[index].name.c_str(), &err);
      if (err != CL_SUCCESS) {
        TVM_FFI_THROW(RuntimeError) << "OpenCL: clCreateKernel(" << kernels_[index].name
                                    << ") failed: " << ErrorName(err);
      }
    }
    return per_device[index];
  }

  std::string fmt_;
  std::vector<KernelInfo> kernels_;
  std::string source_;
  std::mutex mutex_;
  std::vector<cl_program> programs_;                 // by device id
  std::vector<std::vector<cl_kernel>> cl_kernels_;  // [device id][kernel index]
};

ffi::Module LoadFromBytes(const ffi::Bytes& bytes) {
  Reader r(bytes.data(), bytes.size());
  std::string fmt = r.Str();
  std::vector<KernelInfo> kernels = r.List<KernelInfo>([&r] {
    KernelInfo k;
    k.key = r.Str();
    k.name = r.Str();
    k.arg_types = r.List<DLDataType>([&r] { return r.Pod<DLDataType>(); });
    k.launch_tags = r.List<std::string>([&r] { return r.Str(); });
    k.extra_tags = r.List<int32_t>([&r] { return r.Pod<int32_t>(); });
    return k;
  });
  std::string source = r.Str();
  return ffi::Module(ffi::make_object<OpenCLModule>(fmt, std::move(kernels), std::move(source)));
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  RegisterOnce("ffi.Module.load_from_bytes.opencl", LoadFromBytes);
}

}  // namespace opencl
}  // namespace edgec
