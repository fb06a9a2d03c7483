/* edgec's build-time stand-in for libcuda.so.1 (the CUDA driver), for machines without one.
 *
 * TVM's CUDA runtime library (libtvm_runtime_cuda.so) links these driver entry points; without
 * a libcuda.so.1 it does not load, and TVM then exports CUDA C source for the device to compile
 * when the model loads. With this stand-in loaded first (its soname is libcuda.so.1), the
 * runtime library loads and TVM's codegen hands each CUDA module to the compile callback
 * (edgec's nvcc), so the export holds the device's machine code. Every entry point here returns
 * CUDA_ERROR_NO_DEVICE: nothing can run on it. It is loaded only where no real driver is.
 */
typedef int CUresult;
#define CUDA_ERROR_NO_DEVICE 100

static const char kMessage[] = "no CUDA driver: edgec's build-time stand-in for libcuda.so.1";

CUresult cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = kMessage; return 0; }
CUresult cuDeviceGetName(char *n, int len, int d) { (void)n; (void)len; (void)d; return CUDA_ERROR_NO_DEVICE; }
CUresult cuFuncSetAttribute(void *f, int a, int v) { (void)f; (void)a; (void)v; return CUDA_ERROR_NO_DEVICE; }
CUresult cuLaunchKernelEx(const void *c, void *f, void **p, void **x) {
  (void)c; (void)f; (void)p; (void)x; return CUDA_ERROR_NO_DEVICE;
}
CUresult cuModuleGetFunction(void **f, void *m, const char *n) { (void)f; (void)m; (void)n; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleLoadData(void **m, const void *i) { (void)m; (void)i; return CUDA_ERROR_NO_DEVICE; }
CUresult cuModuleUnload(void *m) { (void)m; return CUDA_ERROR_NO_DEVICE; }
CUresult cuTensorMapEncodeTiled(void) { return CUDA_ERROR_NO_DEVICE; }
