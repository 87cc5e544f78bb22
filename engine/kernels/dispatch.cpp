// One kernel table per ISA, built once; the active one is chosen at start-up and can be forced.
#include <atomic>

#include "fewmul/error.hpp"
#include "fewmul/kernels.hpp"

namespace fewmul::kernels {
namespace detail {
#if defined(FEWMUL_HAVE_X86_KERNELS)
kernel_table make_sse4_2_table();
kernel_table make_avx2_table();
kernel_table make_avx512bw_table();
kernel_table make_avx512vpopcntdq_table();
#endif
#if defined(FEWMUL_HAVE_NEON_KERNELS)
kernel_table make_neon64_table();
#endif

const kernel_table* table_or_null(fewmul::isa which) {
  switch (which) {
    case fewmul::isa::scalar:
      return &reference_kernels();
#if defined(FEWMUL_HAVE_X86_KERNELS)
    case fewmul::isa::sse4_2: {
      static const kernel_table table = make_sse4_2_table();
      return &table;
    }
    case fewmul::isa::avx2: {
      static const kernel_table table = make_avx2_table();
      return &table;
    }
    case fewmul::isa::avx512bw: {
      static const kernel_table table = make_avx512bw_table();
      return &table;
    }
    case fewmul::isa::avx512vpopcntdq: {
      static const kernel_table table = make_avx512vpopcntdq_table();
      return &table;
    }
#endif
#if defined(FEWMUL_HAVE_NEON_KERNELS)
    case fewmul::isa::neon64: {
      static const kernel_table table = make_neon64_table();
      return &table;
    }
#endif
    default:
      return nullptr;
  }
}
}  // namespace detail

const kernel_table& kernels_for(fewmul::isa which) {
  if (!isa_supported(which))
    throw error("ISA '" + std::string(isa_name(which)) + "' is not supported by this CPU or this build");
  return *detail::table_or_null(which);
}

const kernel_table& active_kernels() { return kernels_for(active_isa()); }

}  // namespace fewmul::kernels
