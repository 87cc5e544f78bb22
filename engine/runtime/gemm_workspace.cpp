// Cache sizes and per-thread workspaces of the packed GEMM kernels (see parallel_gemm.hpp).
#include <memory>
#include <new>

#include "runtime/parallel_gemm.hpp"

namespace fewmul::detail {

const kernels::cache_sizes& gemm_caches() {
  static const kernels::cache_sizes caches = kernels::detect_cache_sizes();
  return caches;
}

void* gemm_workspace(const kernels::kernel_table& k) {
  struct aligned_delete {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{64}); }
  };
  thread_local std::unique_ptr<std::byte[], aligned_delete> buffer;
  thread_local std::size_t capacity = 0;
  const std::size_t bytes = k.workspace_bytes(gemm_caches());
  if (bytes > capacity) {
    buffer.reset(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t{64})));
    capacity = bytes;
  }
  return buffer.get();
}

}  // namespace fewmul::detail
