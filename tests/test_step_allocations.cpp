// A training step allocates nothing once the first step has sized every buffer: each replaced global
// operator new below counts its calls (from any thread), and steps 2.. of every method must add none.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "fewmul/network.hpp"
#include "fewmul/runtime.hpp"
#include "fewmul/train.hpp"
#include "train/optimizer.hpp"
#include "test_support.hpp"

// ThreadSanitizer's runtime defines the global operators itself (a second definition fails to link), so
// that build (which runs only the threaded tests) counts nothing and skips the check.
#if defined(__SANITIZE_THREAD__)
#define FEWMUL_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FEWMUL_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef FEWMUL_COUNT_ALLOCATIONS
#define FEWMUL_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<long> allocations{0};

#if FEWMUL_COUNT_ALLOCATIONS
void* counted(std::size_t bytes, std::size_t alignment) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (bytes == 0) bytes = 1;
  void* p = alignment > alignof(std::max_align_t)
                ? std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment)
                : std::malloc(bytes);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
#endif
}  // namespace

#if FEWMUL_COUNT_ALLOCATIONS
void* operator new(std::size_t bytes) { return counted(bytes, 0); }
void* operator new[](std::size_t bytes) { return counted(bytes, 0); }
void* operator new(std::size_t bytes, std::align_val_t a) { return counted(bytes, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t bytes, std::align_val_t a) { return counted(bytes, static_cast<std::size_t>(a)); }
void* operator new(std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return counted(bytes, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t bytes, const std::nothrow_t&) noexcept {
  try {
    return counted(bytes, 0);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#endif

using namespace fewmul;
using namespace fewmul_test;

namespace {

// Allocations made by training steps 2..5 (forward, loss, backward, optimizer, re-packing) of `net`.
// One thread: each thread allocates its packed-GEMM workspace on its first packed GEMM, and with work
// stealing a worker's first one need not fall in step 1 (a one-time allocation per thread, not per step).
long allocations_after_first_step(network& net, const dataset& data, method m, optimizer_kind opt_kind) {
  runtime rt(1);
  const auto& k = kernels::active_kernels();
  detail::optimizer opt(opt_kind, 0.0f, net.parameters());
  matrix x(0, 0), grad(0, 0);
  x.resize(40, data.features);
  std::copy_n(data.x.begin(), x.data.size(), x.data.begin());
  std::vector<std::uint8_t> y(data.y.begin(), data.y.begin() + 40);
  long before = 0;
  for (std::uint64_t step = 0; step < 5; ++step) {
    if (step == 1) before = allocations.load();
    const step_context ctx{rt, k, 7, step, true};
    std::size_t errors = 0;
    loss_and_gradient(loss_kind::squared_hinge, net.forward(x, ctx), y.data(), grad, errors);
    net.backward(grad, ctx);
    opt.step(m == method::bnn ? 0.003f : 0.1f, rt, kernels::active_kernels());
    net.parameters_changed();
  }
  return allocations.load() - before;
}

}  // namespace

TEST_CASE("a training step allocates nothing after the first, for every method on an MLP and a convnet") {
  if (!FEWMUL_COUNT_ALLOCATIONS) {
    MESSAGE("built with ThreadSanitizer: allocations are not counted");
    return;
  }
  for (method m :
       {method::fp32, method::bc, method::bc_stoch, method::tc, method::bc_qbp, method::tc_qbp, method::bnn}) {
    CAPTURE(static_cast<int>(m));
    const dataset data = blobs(40, 64, 3);
    network mlp =
        make_mlp(64, {96, 80}, 3, dense_options_for(m), m == method::bnn ? activation::sign : activation::relu, 5);
    CHECK(allocations_after_first_step(mlp, data, m, m == method::bnn ? optimizer_kind::adam : optimizer_kind::sgd) ==
          0);
  }
  network_architecture arch;
  arch.height = 8;
  arch.width = 8;
  arch.channels = 2;
  arch.conv = {6, 0, 12};
  arch.hidden = {20};
  arch.outputs = 3;
  network conv = make_network(arch, dense_options_for(method::bc_qbp), 9);
  const dataset images = blobs(40, 8 * 8 * 2, 4);
  CHECK(allocations_after_first_step(conv, images, method::bc_qbp, optimizer_kind::sgd) == 0);
}
