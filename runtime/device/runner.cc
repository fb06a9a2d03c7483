// edgec-run: runs an edgec artifact on the device, no Python needed.
//
//   edgec-run --bundle DIR [--input NAME=FILE.npy ...] [--output-dir DIR]
//             [--repeat N] [--warmup M] [--threads T]
//
// Reads DIR/manifest.json for the input/output names, shapes, dtypes and file names, loads
// DIR/model.so with the TVM runtime (libtvm_runtime.so + libtvm_ffi.so), checks every input
// against the manifest, runs the Relax VM's "main", writes each output to OUTPUT_DIR under its
// manifest "file" and, with --repeat, prints latency statistics as one JSON line. Errors: one
// line on stderr, exit 2.
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
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "npy.h"

namespace ffi = tvm::ffi;
using edgec::NpyArray;

namespace {

struct Spec {
  std::string name, dtype;  // dtype as numpy names it: float32, int8, ...
  std::vector<int64_t> shape;
  std::string file;  // the .npy file name standing for `name`
  std::string Stem() const { return file.substr(0, file.size() - 4); }
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

ffi::Tensor MakeInput(const Spec& spec, const NpyArray* arr, const std::string& path) {
  if (arr) {
    std::string want = kDescr.count(spec.dtype) ? kDescr.at(spec.dtype) : spec.dtype;
    if (arr->descr != want) {
      Fail("input '" + spec.name + "' from " + path + " has dtype " + arr->descr +
           "; the model takes " + spec.dtype + " (" + want + ")");
    }
    if (arr->shape != spec.shape) {
      Fail("input '" + spec.name + "' from " + path + " has shape " +
           edgec::ShapeString(arr->shape) + "; the model takes " + edgec::ShapeString(spec.shape));
    }
  }
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(spec.shape.data(), spec.shape.size()),
                                           ToDL(spec.dtype), DLDevice{kDLCPU, 0});
  size_t bytes = ffi::GetDataSize(t);
  if (arr) {
    std::memcpy(t.data_ptr(), arr->data.data(), bytes);
  } else {  // no inputs given: a fixed pattern, for latency runs
    auto* p = static_cast<unsigned char*>(t.data_ptr());
    for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>((i * 37) % 61);
    if (spec.dtype == "float32") {
      auto* f = static_cast<float*>(t.data_ptr());
      for (size_t i = 0; i < bytes / 4; ++i) f[i] = static_cast<float>((i * 37) % 61) / 61.f;
    }
  }
  return t;
}

void WriteOutput(const std::string& dir, const Spec& spec, const ffi::Tensor& t) {
  NpyArray arr;
  std::string dtype = FromDL(t.dtype());
  arr.descr = kDescr.at(dtype);
  arr.shape.assign(t.shape().begin(), t.shape().end());
  arr.data.resize(ffi::GetDataSize(t));
  std::memcpy(arr.data.data(), t.data_ptr(), arr.data.size());
  edgec::WriteNpy(dir + "/" + spec.file, arr);
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
  std::string bundle = ".", out_dir;
  std::map<std::string, std::string> input_files;
  int repeat = 0, warmup = 1, threads = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--bundle") {
      bundle = value();
    } else if (arg == "--input") {
      std::string v = value();
      size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) Fail("--input takes NAME=FILE.npy, got " + v);
      input_files[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (arg == "--output-dir") {
      out_dir = value();
    } else if (arg == "--repeat") {
      repeat = std::atoi(value().c_str());
    } else if (arg == "--warmup") {
      warmup = std::atoi(value().c_str());
    } else if (arg == "--threads") {
      threads = std::atoi(value().c_str());
    } else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: edgec-run --bundle DIR [--input NAME=FILE.npy ...] "
                   "[--output-dir DIR] [--repeat N] [--warmup M] [--threads T]\n";
      return 0;
    } else {
      Fail("unknown argument " + arg);
    }
  }
  // TVM sizes its thread pool from TVM_NUM_THREADS when it first runs a parallel kernel.
  if (threads > 0) setenv("TVM_NUM_THREADS", std::to_string(threads).c_str(), 1);

  std::ifstream mf(bundle + "/manifest.json");
  if (!mf) Fail("no manifest.json in " + bundle);
  std::stringstream text;
  text << mf.rdbuf();
  ffi::String parse_error;
  ffi::json::Value doc = ffi::json::Parse(text.str(), &parse_error);
  if (!parse_error.empty()) Fail(bundle + "/manifest.json: " + std::string(parse_error));
  auto manifest = doc.cast<ffi::json::Object>();
  std::vector<Spec> inputs = ReadSpecs(manifest, "inputs");
  std::vector<Spec> outputs = ReadSpecs(manifest, "outputs");

  // Each --input by the name it stands for: the input's name, or its file stem.
  std::map<std::string, std::string> input_paths;
  for (const auto& [key, path] : input_files) {
    auto named = [&](const Spec& s) { return s.name == key; };
    auto stem = [&](const Spec& s) { return s.Stem() == key; };
    auto spec = std::find_if(inputs.begin(), inputs.end(), named);
    if (spec == inputs.end()) spec = std::find_if(inputs.begin(), inputs.end(), stem);
    if (spec == inputs.end()) {
      std::string known;
      for (const Spec& s : inputs) known += (known.empty() ? "" : ", ") + s.name;
      Fail("unknown input '" + key + "'; the model's inputs: " + known);
    }
    if (!input_paths.emplace(spec->name, path).second) {
      Fail("input '" + spec->name + "' given twice");
    }
  }
  std::vector<ffi::Any> args;
  try {
    for (const Spec& s : inputs) {
      auto it = input_paths.find(s.name);
      if (it == input_paths.end() && !input_paths.empty()) Fail("missing input '" + s.name + "'");
      if (it == input_paths.end()) {
        args.emplace_back(MakeInput(s, nullptr, ""));
      } else {
        NpyArray arr = edgec::ReadNpy(it->second);
        args.emplace_back(MakeInput(s, &arr, it->second));
      }
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }

  ffi::Function main_fn;
  try {
    std::string lib_path = bundle + "/" + std::string(manifest.at("library").cast<ffi::String>());
    ffi::Module lib = ffi::Module::LoadFromFile(lib_path);
    auto load = lib->GetFunction("vm_load_executable");
    if (!load.has_value()) Fail(lib_path + " is not an edgec/TVM Relax model");
    ffi::Module vm = (*load)().cast<ffi::Module>();
    (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, 2);  // 2: pooled
    main_fn = *vm->GetFunction("main");
  } catch (const std::exception& e) {
    std::string what = e.what();
    Fail("cannot load the model: " + what.substr(0, what.find('\n')));
  }

  std::vector<ffi::AnyView> views(args.begin(), args.end());
  ffi::Any result;
  auto run = [&]() { main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result); };
  try {
    run();
    if (repeat > 0) {
      for (int i = 0; i < warmup; ++i) run();
      std::vector<double> ms;
      for (int i = 0; i < repeat; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        run();
        auto t1 = std::chrono::steady_clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::cout << Stats(ms, threads) << std::endl;
    }
  } catch (const std::exception& e) {
    std::string what = e.what();
    Fail("the model failed: " + what.substr(0, what.find('\n')));
  }

  std::vector<ffi::Tensor> results;
  if (auto t = result.as<ffi::Tensor>()) {
    results.push_back(*t);
  } else {
    for (const ffi::Any& r : result.cast<ffi::Array<ffi::Any>>()) {
      results.push_back(r.cast<ffi::Tensor>());
    }
  }
  if (results.size() != outputs.size()) Fail("the model returned an unexpected number of outputs");
  if (!out_dir.empty()) {
    try {
      for (size_t i = 0; i < results.size(); ++i) WriteOutput(out_dir, outputs[i], results[i]);
    } catch (const std::exception& e) {
      Fail(e.what());
    }
  }
  return 0;
}
