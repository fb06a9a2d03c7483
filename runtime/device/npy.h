// Minimal .npy (NumPy format v1-v3) reader and writer for the device runner.
// Supports C-order little-endian float32, float16, int8, uint8 (and int32/int64/float64
// for outputs). The dtype is kept as NumPy's descr string ("<f4", "|i1", ...).
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgec {

struct NpyArray {
  std::string descr;          // "<f4", "<f2", "|i1", "|u1", ...
  std::vector<int64_t> shape;
  std::vector<char> data;
};

inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// Value of `key` in the header dict, e.g. 'descr': '<f4' -> <f4 (quotes stripped).
inline std::string HeaderField(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error("npy header has no '" + key + "'");
  size_t colon = header.find(':', at);
  size_t start = header.find_first_not_of(" ", colon + 1);
  if (header[start] == '(') return header.substr(start + 1, header.find(')', start) - start - 1);
  if (header[start] == '\'') return header.substr(start + 1, header.find('\'', start + 1) - start - 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

inline size_t ItemSize(const std::string& descr) {
  if (descr.size() < 3) throw std::runtime_error("bad npy dtype '" + descr + "'");
  return static_cast<size_t>(std::stoul(descr.substr(2)));
}

inline NpyArray ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::string(magic, 6) != "\x93NUMPY") {
    throw std::runtime_error(path + " is not a .npy file");
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  if (!in) throw std::runtime_error(path + ": truncated npy header");
  NpyArray arr;
  arr.descr = HeaderField(header, "descr");
  if (HeaderField(header, "fortran_order") != "False") {
    throw std::runtime_error(path + ": Fortran-order arrays are not supported; save C order");
  }
  std::stringstream dims(HeaderField(header, "shape"));
  for (std::string item; std::getline(dims, item, ',');) {
    if (item.find_first_not_of(" ") != std::string::npos) arr.shape.push_back(std::stoll(item));
  }
  size_t count = 1;
  for (int64_t d : arr.shape) count *= static_cast<size_t>(d);
  arr.data.resize(count * ItemSize(arr.descr));
  in.read(arr.data.data(), static_cast<std::streamsize>(arr.data.size()));
  if (!in) throw std::runtime_error(path + ": truncated npy data");
  return arr;
}

inline void WriteNpy(const std::string& path, const NpyArray& arr) {
  std::ostringstream header;
  header << "{'descr': '" << arr.descr << "', 'fortran_order': False, 'shape': (";
  for (int64_t d : arr.shape) header << d << ", ";
  header << "), }";
  std::string h = header.str();
  size_t total = 10 + h.size() + 1;
  h.append((64 - total % 64) % 64, ' ');
  h.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path);
  out.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(h.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  out.write(arr.data.data(), static_cast<std::streamsize>(arr.data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace edgec
