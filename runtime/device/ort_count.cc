// edgec-ort-count: runs an ONNX model in onnxruntime's C library, for counting its guest
// instructions under qemu beside edgec's runner (runtime/icount.py). No output is written:
// the count is the result.
//
//   edgec-ort-count LIBONNXRUNTIME.so MODEL.onnx --calls N --threads T
//                   --input NAME=D0,D1,... [...] --output NAME [...]
//
// Inputs are float32, filled with a fixed pattern. onnxruntime runs with all graph
// optimizations, T intra-op threads and one inter-op thread, as edgec's checks open it.
//
// onnxruntime's wheels ship its C library (capi/libonnxruntime.so.*) but not its header, so
// the few entry points used are declared here: OrtGetApiBase()->GetApi(version) returns a
// table of function pointers whose order is fixed (entries are only ever appended), and each
// is called by its index in that table (kIndex below, from onnxruntime_c_api.h).
#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Status = void*;  // OrtStatus*, null on success
using Fn = void*;

struct ApiBase {
  const Fn* (*get_api)(uint32_t version);
  const char* (*version_string)();
};

// Indices into the OrtApi table.
enum kIndex {
  kGetErrorMessage = 2,
  kCreateEnv = 3,
  kCreateSession = 7,
  kRun = 9,
  kCreateSessionOptions = 10,
  kSetGraphOptimizationLevel = 23,
  kSetIntraOpNumThreads = 24,
  kSetInterOpNumThreads = 25,
  kCreateTensorWithData = 49,
  kCreateCpuMemoryInfo = 69,
  kReleaseValue = 96,
};
constexpr uint32_t kApiVersion = 1;  // the oldest table: every entry above is in it
constexpr int kLogWarning = 2, kOptimizeAll = 99, kArenaAllocator = 1, kMemDefault = 0;
constexpr int kFloat = 1;

const Fn* api = nullptr;

template <typename F>
F Get(int index) { return reinterpret_cast<F>(api[index]); }

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "edgec-ort-count: error: %s\n", what.c_str());
  std::exit(2);
}

void Check(Status status, const char* what) {
  if (status) Fail(std::string(what) + ": " +
                   Get<const char* (*)(Status)>(kGetErrorMessage)(status));
}

struct Input {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

Input ParseInput(const std::string& spec) {
  Input in;
  size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0) Fail("--input takes NAME=D0,D1,..., got " + spec);
  in.name = spec.substr(0, eq);
  size_t count = 1, pos = eq + 1;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string::npos) comma = spec.size();
    int64_t dim = std::atoll(spec.substr(pos, comma - pos).c_str());
    if (dim <= 0) Fail("bad dim in --input " + spec);
    in.shape.push_back(dim);
    count *= static_cast<size_t>(dim);
    pos = comma + 1;
  }
  in.data.resize(count);
  for (size_t i = 0; i < count; ++i) in.data[i] = static_cast<float>(i % 17) / 17.0f - 0.5f;
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) Fail("usage: edgec-ort-count LIB MODEL --calls N --threads T --input ... --output ...");
  int calls = 1, threads = 1;
  std::vector<Input> inputs;
  std::vector<std::string> outputs;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) Fail(arg + " needs a value");
    std::string value = argv[++i];
    if (arg == "--calls") calls = std::atoi(value.c_str());
    else if (arg == "--threads") threads = std::atoi(value.c_str());
    else if (arg == "--input") inputs.push_back(ParseInput(value));
    else if (arg == "--output") outputs.push_back(value);
    else Fail("unknown option " + arg);
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) Fail(std::string("cannot load ") + argv[1] + ": " + dlerror());
  auto base_fn = reinterpret_cast<const ApiBase* (*)()>(dlsym(lib, "OrtGetApiBase"));
  if (!base_fn) Fail("no OrtGetApiBase in the library");
  api = base_fn()->get_api(kApiVersion);
  if (!api) Fail("the library offers no C API table of version 1");

  void *env = nullptr, *options = nullptr, *session = nullptr, *memory = nullptr;
  Check(Get<Status (*)(int, const char*, void**)>(kCreateEnv)(kLogWarning, "edgec", &env),
        "CreateEnv");
  Check(Get<Status (*)(void**)>(kCreateSessionOptions)(&options), "CreateSessionOptions");
  Check(Get<Status (*)(void*, int)>(kSetGraphOptimizationLevel)(options, kOptimizeAll),
        "SetSessionGraphOptimizationLevel");
  Check(Get<Status (*)(void*, int)>(kSetIntraOpNumThreads)(options, threads),
        "SetIntraOpNumThreads");
  Check(Get<Status (*)(void*, int)>(kSetInterOpNumThreads)(options, 1), "SetInterOpNumThreads");
  Check(Get<Status (*)(void*, const char*, void*, void**)>(kCreateSession)(env, argv[2], options,
                                                                          &session),
        "CreateSession");
  Check(Get<Status (*)(int, int, void**)>(kCreateCpuMemoryInfo)(kArenaAllocator, kMemDefault,
                                                                 &memory),
        "CreateCpuMemoryInfo");
  std::vector<void*> values;
  std::vector<const char*> in_names, out_names;
  for (Input& in : inputs) {
    void* value = nullptr;
    Check(Get<Status (*)(void*, void*, size_t, const int64_t*, size_t, int, void**)>(
              kCreateTensorWithData)(memory, in.data.data(), in.data.size() * sizeof(float),
                                     in.shape.data(), in.shape.size(), kFloat, &value),
          "CreateTensorWithDataAsOrtValue");
    values.push_back(value);
    in_names.push_back(in.name.c_str());
  }
  for (const std::string& name : outputs) out_names.push_back(name.c_str());
  auto run = Get<Status (*)(void*, void*, const char* const*, void* const*, size_t,
                            const char* const*, size_t, void**)>(kRun);
  auto release = Get<void (*)(void*)>(kReleaseValue);
  for (int c = 0; c < calls; ++c) {
    std::vector<void*> results(out_names.size(), nullptr);
    Check(run(session, nullptr, in_names.data(), values.data(), values.size(), out_names.data(),
              out_names.size(), results.data()),
          "Run");
    for (void* r : results) release(r);
  }
  std::printf("ran %d calls\n", calls);
  return 0;
}
