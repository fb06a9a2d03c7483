// edgec-rpc-server: a TVM RPC server for a board, without Python.
//
//   edgec-rpc-server [--host 0.0.0.0] [--port 9090] [--key KEY] [--tracker HOST:PORT]
//                    [--workdir DIR] [--timeout SECONDS]
//
// Speaks TVM's RPC protocol (the runtime library's RPCServerLoop does the session itself);
// this file does what TVM's Python server does around it:
// - the connect handshake: magic, "client:KEY" in, "server:KEY" out;
// - registration with TVM's RPC tracker (python -m tvm.exec.rpc_tracker), re-registering a
//   fresh match key after each session and when a handed-out key goes unused;
// - the functions a client expects on the server: tvm.rpc.server.workpath and .load_module
//   (files live in a fresh folder per session), and
//   tvm.contrib.random.random_fill_for_measure, which MetaSchedule's RPC runner calls to fill
//   its benchmark arguments;
// - one forked child per session, so a crashing kernel does not take the server down.
#include <arpa/inet.h>
#include <dlpack/dlpack.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>

namespace ffi = tvm::ffi;

namespace {

constexpr int32_t kRPCMagic = 0xFF271;
constexpr int32_t kTrackerMagic = 0x2F271;
constexpr int32_t kCodeSuccess = kRPCMagic;
constexpr int32_t kCodeMismatch = kRPCMagic + 2;
constexpr int kTrackerPut = 3, kTrackerUpdateInfo = 5, kTrackerPendingKeys = 7;

std::string g_workdir;

void Log(const std::string& msg) { std::cerr << "edgec-rpc-server: " << msg << std::endl; }

[[noreturn]] void Fail(const std::string& msg) {
  std::cerr << "edgec-rpc-server: error: " << msg << std::endl;
  std::exit(2);
}

bool SendAll(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool RecvAll(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t k = recv(fd, p, n, 0);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool SendInt(int fd, int32_t v) { return SendAll(fd, &v, 4); }  // little-endian hosts only

bool RecvInt(int fd, int32_t* v) { return RecvAll(fd, v, 4); }

bool SendStr(int fd, const std::string& s) {
  return SendInt(fd, static_cast<int32_t>(s.size())) && SendAll(fd, s.data(), s.size());
}

bool RecvStr(int fd, std::string* s) {
  int32_t n = 0;
  if (!RecvInt(fd, &n) || n < 0 || n > (1 << 20)) return false;
  s->assign(static_cast<size_t>(n), '\0');
  return RecvAll(fd, s->data(), static_cast<size_t>(n));
}

int Connect(const std::string& host, int port) {
  sockaddr_in v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4.sin_addr) == 1) {  // no resolver needed
    v4.sin_family = AF_INET;
    v4.sin_port = htons(static_cast<uint16_t>(port));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&v4), sizeof(v4)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

// Tracker messages are length-prefixed JSON; replies we need are "0" (success) or a list.
bool TrackerCall(int fd, const std::string& json, std::string* reply) {
  return SendStr(fd, json) && RecvStr(fd, reply);
}

std::string RandomKey(const std::string& key) {
  static std::mt19937_64 rng(std::random_device{}());
  return key + ":" + std::to_string(std::uniform_real_distribution<double>(0, 1)(rng));
}

void RegisterServerFunctions() {
  ffi::Function::SetGlobal("tvm.rpc.server.workpath", ffi::Function::FromTyped(
      [](ffi::String path) -> ffi::String { return g_workdir + "/" + std::string(path); }));
  ffi::Function::SetGlobal("tvm.rpc.server.load_module", ffi::Function::FromTyped(
      [](ffi::String path) -> ffi::Module {
        return ffi::Module::LoadFromFile(g_workdir + "/" + std::string(path));
      }));
  // Benchmark inputs only need plausible values: uniform in [-1, 1) for floats, small ints.
  ffi::Function::SetGlobal("tvm.contrib.random.random_fill_for_measure", ffi::Function::FromTyped(
      [](DLTensor* t) {  // over RPC the argument arrives as a plain DLTensor
        static std::mt19937 rng(42);
        size_t n = 1;
        for (int i = 0; i < t->ndim; ++i) n *= static_cast<size_t>(t->shape[i]);
        DLDataType dt = t->dtype;
        char* base = static_cast<char*>(t->data) + t->byte_offset;
        if (dt.code == kDLFloat && dt.bits == 32) {
          auto* p = reinterpret_cast<float*>(base);
          std::uniform_real_distribution<float> u(-1.f, 1.f);
          for (size_t i = 0; i < n; ++i) p[i] = u(rng);
        } else {
          auto* p = reinterpret_cast<unsigned char*>(base);
          size_t bytes = n * ((dt.bits * dt.lanes + 7) / 8);
          for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(rng() % 8);
        }
      }));
}

void Serve(int conn, int timeout_s) {
  char tmpl[] = "/tmp/edgec-rpc-XXXXXX";
  std::string base = g_workdir.empty() ? "" : g_workdir;
  std::string dir = mkdtemp(tmpl);
  pid_t pid = fork();
  if (pid == 0) {
    g_workdir = dir;
    if (chdir(dir.c_str()) != 0) std::_Exit(3);
    ffi::Function::GetGlobalRequired("rpc.ServerLoop")(conn);
    std::_Exit(0);
  }
  auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (timeout_s > 0 && std::chrono::steady_clock::now() - start >
                             std::chrono::seconds(timeout_s)) {
      Log("session timed out; ending it");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(20000);
  }
  close(conn);
  std::string rm = "rm -rf '" + dir + "'";
  if (std::system(rm.c_str()) != 0) Log("could not remove " + dir);
  g_workdir = base;
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "0.0.0.0", key = "edgec", tracker, tracker_host;
  int port = 9090, tracker_port = 0, timeout_s = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--host") host = value();
    else if (arg == "--port") port = std::atoi(value().c_str());
    else if (arg == "--key") key = value();
    else if (arg == "--tracker") tracker = value();
    else if (arg == "--timeout") timeout_s = std::atoi(value().c_str());
    else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: edgec-rpc-server [--host H] [--port P] [--key K] "
                   "[--tracker HOST:PORT] [--timeout S]\n";
      return 0;
    } else {
      Fail("unknown argument " + arg);
    }
  }
  if (!tracker.empty()) {
    size_t colon = tracker.rfind(':');
    if (colon == std::string::npos) Fail("--tracker takes HOST:PORT");
    tracker_host = tracker.substr(0, colon);
    tracker_port = std::atoi(tracker.substr(colon + 1).c_str());
  }
  RegisterServerFunctions();

  int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) Fail("bad --host " + host);
  if (bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd, 4) != 0) {
    Fail("cannot listen on " + host + ":" + std::to_string(port) + ": " + strerror(errno));
  }
  Log("listening on " + host + ":" + std::to_string(port) + ", key " + key);

  int tracker_fd = -1;
  std::string matchkey = key, reply;
  auto put = [&]() {
    matchkey = RandomKey(key);
    std::string msg = "[" + std::to_string(kTrackerPut) + ", \"" + key + "\", [" +
                      std::to_string(port) + ", \"" + matchkey + "\"], null]";
    return TrackerCall(tracker_fd, msg, &reply) && reply == "0";
  };
  while (true) {
    if (!tracker.empty() && tracker_fd < 0) {
      tracker_fd = Connect(tracker_host, tracker_port);
      int32_t magic = 0;
      if (tracker_fd < 0 || !SendInt(tracker_fd, kTrackerMagic) || !RecvInt(tracker_fd, &magic) ||
          magic != kTrackerMagic) {
        Fail("cannot reach the RPC tracker at " + tracker + ": " + strerror(errno));
      }
      std::string info = "[" + std::to_string(kTrackerUpdateInfo) + ", {\"key\": \"server:" +
                         key + "\", \"addr\": [null, " + std::to_string(port) + "]}]";
      if (!TrackerCall(tracker_fd, info, &reply) || reply != "0" || !put()) {
        Fail("the tracker at " + tracker + " refused the registration");
      }
      Log("registered with tracker " + tracker);
    }
    int unmatched = 0;
    while (tracker_fd >= 0) {  // wait for a client; keep the match key fresh
      fd_set fds;
      FD_ZERO(&fds);
      FD_SET(listen_fd, &fds);
      timeval tv{2, 0};
      if (select(listen_fd + 1, &fds, nullptr, nullptr, &tv) > 0) break;
      std::string ask = "[" + std::to_string(kTrackerPendingKeys) + "]";
      if (!TrackerCall(tracker_fd, ask, &reply)) Fail("lost the tracker");
      unmatched = reply.find(matchkey) == std::string::npos ? unmatched + 1 : 0;
      if (unmatched > 3 && !put()) Fail("lost the tracker");
      if (unmatched > 3) unmatched = 0;
    }
    int conn = accept(listen_fd, nullptr, nullptr);
    if (conn < 0) continue;
    int32_t magic = 0;
    std::string client_key;
    if (!RecvInt(conn, &magic) || magic != kRPCMagic || !RecvStr(conn, &client_key)) {
      close(conn);
      continue;
    }
    std::string first = client_key.substr(0, client_key.find(' '));
    if (first != "client:" + matchkey) {
      SendInt(conn, kCodeMismatch);
      close(conn);
      Log("refused a client with key " + first);
      continue;
    }
    int session_timeout = timeout_s;
    size_t opt = client_key.find("-timeout=");
    if (opt != std::string::npos) session_timeout = std::atoi(client_key.c_str() + opt + 9);
    if (!SendInt(conn, kCodeSuccess) || !SendStr(conn, "server:" + key)) {
      close(conn);
      continue;
    }
    Serve(conn, session_timeout);
    if (tracker_fd >= 0 && !put()) {  // the tracker hands each key out once
      close(tracker_fd);
      tracker_fd = -1;
    }
  }
}
