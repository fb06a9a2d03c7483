// edgec-run: runs an edgec artifact on the device, no Python needed.
//
//   edgec-run --bundle DIR [--input NAME=FILE.npy ...] [--output-dir DIR] [--samples N]
//             [--repeat N] [--warmup M] [--threads T]
//
// Reads DIR/manifest.json for the input/output names, shapes, dtypes and file names, loads
// DIR/model.so with the TVM runtime (libtvm_runtime.so + libtvm_ffi.so), checks every input
// against the manifest, runs the Relax VM's "main", writes each output to OUTPUT_DIR under its
// manifest "file" and, with --repeat, prints latency statistics as one JSON line. Errors: one
// line on stderr, exit 2.
//
// --samples N runs a whole set of samples in one process (one start, one runtime load): each
// input file then holds N samples stacked on a new leading axis, [N, *input shape], and each
// output file gets the N samples' outputs in order, [N, *output shape]. The model runs once per
// sample, sample i copied into input tensors allocated once. With --repeat as well, the latency
// is that of sample 0.
//
// A tensor name may hold any character ("save_infer_model/scale_0.tmp_1"), so files go by the
// name's file stem, which the compiler writes into the manifest (edgec.runtime.artifact.
// file_stem: percent-encoded, one path component). --input takes the name or that stem (the
// stem holds no '=', so a name with one is given by its stem).
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "gpu.h"
#include "npy.h"

namespace ffi = tvm::ffi;
using edgec::NpyArray;

namespace {

const char kUsage[] =
    "usage: edgec-run --bundle DIR [--input NAME=FILE.npy ...] [--output-dir DIR] "
    "[--samples N] [--repeat N] [--warmup M] [--threads T]\n"
    "  --samples N: each input file holds N samples stacked, [N, *shape]; each output file gets\n"
    "               their N outputs, [N, *shape]; --repeat then times sample 0\n";

struct Options {
  std::string bundle = ".", out_dir;
  std::map<std::string, std::string> input_files;  // as given: name or file stem -> path
  int repeat = 0, warmup = 1, threads = 0;
  int samples = 0;  // 0: no --samples, the files hold one set of inputs
};

struct Spec {
  std::string name, dtype;  // dtype as numpy names it: float32, int8, ...
  std::vector<int64_t> shape;
  std::string file;  // the .npy file name standing for `name`
  std::string Stem() const { return file.substr(0, file.size() - 4); }
};

// An input tensor, allocated once, and the file it is filled from, sample by sample.
struct Input {
  ffi::Tensor tensor;
  NpyArray file;  // no data when no --input was given: a fixed pattern, for latency runs
};

struct CPUAlloc {
  void AllocData(DLTensor* t) { t->data = std::malloc(ffi::GetDataSize(*t)); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

[[noreturn]] void Fail(const std::string& msg) {
  std::cerr << "edgec-run: error: " << msg << std::endl;
  std::exit(2);
}

const std::map<std::string, std::string> kDescr = {
    {"float32", "<f4"}, {"float16", "<f2"}, {"int8", "|i1"},   {"uint8", "|u1"},
    {"int32", "<i4"},   {"int64", "<i8"},   {"float64", "<f8"}};

DLDataType ToDL(const std::string& dtype) {
  if (dtype == "float32") return {kDLFloat, 32, 1};
  if (dtype == "float16") return {kDLFloat, 16, 1};
  if (dtype == "int8") return {kDLInt, 8, 1};
  if (dtype == "uint8") return {kDLUInt, 8, 1};
  if (dtype == "int32") return {kDLInt, 32, 1};
  if (dtype == "int64") return {kDLInt, 64, 1};
  Fail("unsupported dtype " + dtype);
}

std::string FromDL(DLDataType t) {
  for (const auto& [name, descr] : kDescr) {
    (void)descr;
    DLDataType d = name == "float64" ? DLDataType{kDLFloat, 64, 1} : ToDL(name);
    if (d.code == t.code && d.bits == t.bits) return name;
  }
  Fail("output has an unsupported dtype");
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--bundle") {
      o.bundle = value();
    } else if (arg == "--input") {
      std::string v = value();
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) Fail("--input takes NAME=FILE.npy, got " + v);
      o.input_files[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (arg == "--output-dir") {
      o.out_dir = value();
    } else if (arg == "--samples") {
      std::string v = value();
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 1 || n > INT_MAX) {
        Fail("--samples takes a count of 1 or more, got " + v);
      }
      o.samples = static_cast<int>(n);
    } else if (arg == "--repeat") {
      o.repeat = std::atoi(value().c_str());
    } else if (arg == "--warmup") {
      o.warmup = std::atoi(value().c_str());
    } else if (arg == "--threads") {
      o.threads = std::atoi(value().c_str());
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else {
      Fail("unknown argument " + arg);
    }
  }
  return o;
}

ffi::json::Object ReadManifest(const std::string& bundle) {
  std::ifstream mf(bundle + "/manifest.json");
  if (!mf) Fail("no manifest.json in " + bundle);
  std::stringstream text;
  text << mf.rdbuf();
  ffi::String parse_error;
  ffi::json::Value doc = ffi::json::Parse(text.str(), &parse_error);
  if (!parse_error.empty()) Fail(bundle + "/manifest.json: " + std::string(parse_error));
  return doc.cast<ffi::json::Object>();
}

std::vector<Spec> ReadSpecs(const ffi::json::Object& manifest, const char* key) {
  std::vector<Spec> specs;
  for (const ffi::Any& item : manifest.at(key).cast<ffi::json::Array>()) {
    auto obj = item.cast<ffi::json::Object>();
    Spec s{obj.at("name").cast<ffi::String>(), obj.at("dtype").cast<ffi::String>(), {}, {}};
    for (const ffi::Any& d : obj.at("shape").cast<ffi::json::Array>()) {
      s.shape.push_back(d.cast<int64_t>());
    }
    if (!obj.count("file")) {
      Fail(std::string("manifest.json names no file for ") + key + " '" + s.name +
           "'; recompile the bundle with this edgec");
    }
    s.file = std::string(obj.at("file").cast<ffi::String>());
    if (s.file.size() < 5 || s.file.compare(s.file.size() - 4, 4, ".npy") != 0 ||
        s.file[0] == '.' || s.file.find('/') != std::string::npos) {
      Fail("manifest.json: bad file name '" + s.file + "' for '" + s.name + "'");
    }
    specs.push_back(s);
  }
  return specs;
}

// Each --input by the name it stands for: the input's name, or its file stem.
std::map<std::string, std::string> ResolveInputs(const std::map<std::string, std::string>& files,
                                                 const std::vector<Spec>& inputs) {
  std::map<std::string, std::string> paths;
  for (const auto& [key, path] : files) {
    auto named = [&](const Spec& s) { return s.name == key; };
    auto stem = [&](const Spec& s) { return s.Stem() == key; };
    auto spec = std::find_if(inputs.begin(), inputs.end(), named);
    if (spec == inputs.end()) spec = std::find_if(inputs.begin(), inputs.end(), stem);
    if (spec == inputs.end()) {
      std::string known;
      for (const Spec& s : inputs) known += (known.empty() ? "" : ", ") + s.name;
      Fail("unknown input '" + key + "'; the model's inputs: " + known);
    }
    if (!paths.emplace(spec->name, path).second) Fail("input '" + spec->name + "' given twice");
  }
  return paths;
}

// `shape` behind a leading axis of `samples` (none without --samples): a file's shape.
std::vector<int64_t> Stacked(int samples, std::vector<int64_t> shape) {
  if (samples > 0) shape.insert(shape.begin(), samples);
  return shape;
}

void CheckInput(const Spec& spec, const NpyArray& arr, const std::string& path, int samples) {
  std::string want = kDescr.count(spec.dtype) ? kDescr.at(spec.dtype) : spec.dtype;
  if (arr.descr != want) {
    Fail("input '" + spec.name + "' from " + path + " has dtype " + arr.descr +
         "; the model takes " + spec.dtype + " (" + want + ")");
  }
  std::vector<int64_t> shape = Stacked(samples, spec.shape);
  if (arr.shape != shape) {
    std::string takes = "the model takes " + edgec::ShapeString(shape);
    if (samples > 0) {
      std::string n = std::to_string(samples);
      takes = "with --samples " + n + " the model takes " + edgec::ShapeString(shape) + " (" +
              n + " samples of " + edgec::ShapeString(spec.shape) + ")";
    }
    Fail("input '" + spec.name + "' from " + path + " has shape " +
         edgec::ShapeString(arr.shape) + "; " + takes);
  }
}

void FillPattern(const ffi::Tensor& t, const std::string& dtype) {
  size_t bytes = ffi::GetDataSize(t);
  auto* p = static_cast<unsigned char*>(t.data_ptr());
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>((i * 37) % 61);
  if (dtype == "float32") {
    auto* f = static_cast<float*>(t.data_ptr());
    for (size_t i = 0; i < bytes / 4; ++i) f[i] = static_cast<float>((i * 37) % 61) / 61.f;
  }
}

// The model's inputs, each read from its file and checked, or without any --input a pattern.
std::vector<Input> MakeInputs(const std::vector<Spec>& specs,
                              const std::map<std::string, std::string>& paths, int samples) {
  if (samples > 0 && paths.empty()) Fail("--samples needs an --input file for each input");
  std::vector<Input> inputs;
  for (const Spec& s : specs) {
    auto it = paths.find(s.name);
    if (it == paths.end() && !paths.empty()) Fail("missing input '" + s.name + "'");
    Input in{ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(s.shape.data(), s.shape.size()),
                                      ToDL(s.dtype), DLDevice{kDLCPU, 0}),
             {}};
    if (it == paths.end()) {
      FillPattern(in.tensor, s.dtype);
    } else {
      in.file = edgec::ReadNpy(it->second);
      CheckInput(s, in.file, it->second, samples);
    }
    inputs.push_back(std::move(in));
  }
  return inputs;
}

// Copies sample `i` of each input file into its tensor (without --samples, the whole file).
void LoadSample(std::vector<Input>& inputs, int i) {
  for (Input& in : inputs) {
    if (in.file.data.empty()) continue;  // a fixed pattern
    size_t bytes = ffi::GetDataSize(in.tensor);
    std::memcpy(in.tensor.data_ptr(), in.file.data.data() + static_cast<size_t>(i) * bytes, bytes);
  }
}

// The device the artifact's kernels run on (manifest target.device; "cpu" where absent).
std::string DeviceName(const ffi::json::Object& manifest) {
  auto target = manifest.at("target").cast<ffi::json::Object>();
  auto it = target.find("device");
  return it == target.end() ? "cpu" : std::string((*it).second.cast<ffi::String>());
}

ffi::Function LoadModel(const std::string& bundle, const ffi::json::Object& manifest,
                        DLDevice device) {
  try {
    std::string lib_path = bundle + "/" + std::string(manifest.at("library").cast<ffi::String>());
    ffi::Module lib = ffi::Module::LoadFromFile(lib_path);
    auto load = lib->GetFunction("vm_load_executable");
    if (!load.has_value()) Fail(lib_path + " is not an edgec/TVM Relax model");
    ffi::Module vm = (*load)().cast<ffi::Module>();
    auto init = *vm->GetFunction("vm_initialization");
    if (device.device_type == kDLCPU) {
      init(static_cast<int>(kDLCPU), 0, 2);  // 2: pooled
    } else {  // the device, then the host for the VM's own tensors
      init(static_cast<int>(device.device_type), device.device_id, 2, static_cast<int>(kDLCPU),
           0, 2);
    }
    return *vm->GetFunction("main");
  } catch (const std::exception& e) {
    std::string what = e.what();
    Fail("cannot load the model: " + what.substr(0, what.find('\n')));
  }
}

// The tensors "main" returned: one, or a tuple of `count`.
std::vector<ffi::Tensor> Results(const ffi::Any& result, size_t count) {
  std::vector<ffi::Tensor> results;
  if (auto t = result.as<ffi::Tensor>()) {
    results.push_back(*t);
  } else {
    for (const ffi::Any& r : result.cast<ffi::Array<ffi::Any>>()) {
      results.push_back(r.cast<ffi::Tensor>());
    }
  }
  if (results.size() != count) Fail("the model returned an unexpected number of outputs");
  return results;
}

// Appends one run's outputs to `stacked`, one array per output: [samples, *shape] once every
// sample is in, or without --samples the output itself.
void AppendOutputs(std::vector<NpyArray>& stacked, const std::vector<ffi::Tensor>& results,
                   const std::vector<Spec>& specs, int samples) {
  for (size_t k = 0; k < results.size(); ++k) {
    const ffi::Tensor& t = results[k];
    std::vector<int64_t> shape = Stacked(samples, {t.shape().begin(), t.shape().end()});
    size_t bytes = ffi::GetDataSize(t);
    NpyArray& arr = stacked[k];
    if (arr.descr.empty()) {
      arr.descr = kDescr.at(FromDL(t.dtype()));
      arr.shape = shape;
      arr.data.reserve(bytes * std::max(samples, 1));
    } else if (arr.shape != shape || arr.descr != kDescr.at(FromDL(t.dtype()))) {
      Fail("output '" + specs[k].name + "' changed its shape or dtype between samples");
    }
    const char* p = static_cast<const char*>(t.data_ptr());
    arr.data.insert(arr.data.end(), p, p + bytes);
  }
}

// Milliseconds of each of `repeat` timed runs, after `warmup` untimed ones.
std::vector<double> Time(const std::function<void()>& run, int warmup, int repeat) {
  for (int i = 0; i < warmup; ++i) run();
  std::vector<double> ms;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return ms;
}

std::string Stats(std::vector<double> ms, int threads) {
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double v : ms) sum += v;
  auto pct = [&](double q) { return ms[static_cast<size_t>(q * (ms.size() - 1))]; };
  const char* emu = std::getenv("EDGEC_EMULATED");
  std::ostringstream os;
  os << "{\"runs\": " << ms.size() << ", \"mean_ms\": " << sum / ms.size()
     << ", \"median_ms\": " << pct(0.5) << ", \"p90_ms\": " << pct(0.9)
     << ", \"min_ms\": " << ms.front() << ", \"max_ms\": " << ms.back()
     << ", \"threads\": " << threads << ", \"emulated\": " << (emu ? "true" : "false") << "}";
  return os.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options opt = ParseArgs(argc, argv);
  // TVM sizes its thread pool from TVM_NUM_THREADS when it first runs a parallel kernel.
  if (opt.threads > 0) setenv("TVM_NUM_THREADS", std::to_string(opt.threads).c_str(), 1);

  ffi::json::Object manifest = ReadManifest(opt.bundle);
  std::vector<Spec> in_specs = ReadSpecs(manifest, "inputs");
  std::vector<Spec> out_specs = ReadSpecs(manifest, "outputs");
  std::vector<Input> inputs;
  try {
    inputs = MakeInputs(in_specs, ResolveInputs(opt.input_files, in_specs), opt.samples);
  } catch (const std::exception& e) {
    Fail(e.what());
  }
  DLDevice device{kDLCPU, 0};
  std::vector<ffi::Tensor> staged;  // the inputs the model reads: on the device
  try {
    device = edgec::OpenDevice(opt.bundle, DeviceName(manifest));
    for (const Input& in : inputs) {
      staged.push_back(device.device_type == kDLCPU ? in.tensor
                                                    : edgec::AllocLike(in.tensor, device));
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }
  ffi::Function main_fn = LoadModel(opt.bundle, manifest, device);

  std::vector<ffi::AnyView> views;
  for (const ffi::Tensor& t : staged) views.emplace_back(t);
  ffi::Any result;
  std::vector<ffi::Tensor> results;  // the last run's outputs, in host memory
  auto run = [&]() {
    bool gpu = device.device_type != kDLCPU;
    for (size_t i = 0; gpu && i < inputs.size(); ++i) edgec::CopyTensor(inputs[i].tensor, staged[i]);
    main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
    results = Results(result, out_specs.size());
    if (gpu) results = edgec::ToHost(results);
  };
  std::vector<NpyArray> stacked(out_specs.size());
  try {
    for (int i = 0; i < std::max(opt.samples, 1); ++i) {
      LoadSample(inputs, i);
      run();
      if (!opt.out_dir.empty()) AppendOutputs(stacked, results, out_specs, opt.samples);
    }
    if (opt.repeat > 0) {
      LoadSample(inputs, 0);
      std::cout << Stats(Time(run, opt.warmup, opt.repeat), opt.threads) << std::endl;
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    Fail("the model failed: " + what.substr(0, what.find('\n')));
  }

  if (!opt.out_dir.empty()) {
    try {
      for (size_t k = 0; k < out_specs.size(); ++k) {
        edgec::WriteNpy(opt.out_dir + "/" + out_specs[k].file, stacked[k]);
      }
    } catch (const std::exception& e) {
      Fail(e.what());
    }
  }
  return 0;
}
