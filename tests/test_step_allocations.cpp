// A training step allocates nothing once the first step has sized every buffer: each replaced global
// operator new below counts its calls (from any thread), and steps 2.. of every method must add none.
// The same operators track the bytes live on the heap (malloc_usable_size), so that a loaded model's
// footprint is measured, not guessed.
#include <doctest/doctest.h>

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>

#include "fewmul/model.hpp"
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
std::atomic<long> live_bytes{0}, peak_bytes{0};  // heap bytes in use, and their maximum since reset_peak()

void reset_peak() { peak_bytes.store(live_bytes.load()); }

#if FEWMUL_COUNT_ALLOCATIONS
void* counted(std::size_t bytes, std::size_t alignment) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (bytes == 0) bytes = 1;
  void* p = alignment > alignof(std::max_align_t)
                ? std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment)
                : std::malloc(bytes);
  if (p == nullptr) throw std::bad_alloc();
  const long now =
      live_bytes.fetch_add(static_cast<long>(malloc_usable_size(p))) + static_cast<long>(malloc_usable_size(p));
  long peak = peak_bytes.load();
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
  }
  return p;
}
void release(void* p) noexcept {
  if (p != nullptr) live_bytes.fetch_sub(static_cast<long>(malloc_usable_size(p)));
  std::free(p);
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
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
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
    const step_context ctx{.rt = rt, .kernels = k, .seed = 7, .step = step, .training = true};
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

TEST_CASE("a loaded BNN convnet stays packed: the heap grows by at most twice the model file plus activations") {
  if (!FEWMUL_COUNT_ALLOCATIONS) {
    MESSAGE("built with ThreadSanitizer: allocations are not counted");
    return;
  }
  network_architecture arch = convnet_preset(32, 32, 3, 10, 0.25);
  arch.act = activation::sign;
  const std::string path = temp_path("packed_memory.fwm");
  model_metadata meta;
  meta.dataset = "cifar10";
  meta.width = meta.height = 32;
  meta.channels = 3;
  std::size_t float_activations = 0, float_weights = 0;
  {
    network net = make_network(arch, dense_options_for(method::bnn), 3);
    for (const auto& l : net.layers()) float_activations += l->output_size() * sizeof(float);
    float_weights = float32_parameter_bytes(net);
    save_model(path, net, meta);
  }
  const auto file = static_cast<long>(std::filesystem::file_size(path));
  runtime rt(1);
  matrix x(1, arch.inputs());
  x.data = random_floats(x.data.size(), 8);  // the first layer's float path ([-1, 1] inputs)
  const long activations = static_cast<long>(float_activations + x.data.size() * sizeof(float));
  long growth = 0;
  for (int pass = 0; pass < 2; ++pass) {  // the first pass sizes the per-thread GEMM workspace
    const long before = live_bytes.load();
    reset_peak();
    {
      model m = load_model(path);
      REQUIRE(m.packed);
      m.infer(x, rt);
    }
    growth = peak_bytes.load() - before;
  }
  std::filesystem::remove(path);
  MESSAGE("model file " << file << " B, float32 weights " << float_weights << " B, float activations " << activations
                        << " B, peak heap growth " << growth << " B");
  // A float rebuild of the weights alone would break the bound.
  CHECK(static_cast<long>(float_weights) > 2 * file + activations);
  CHECK(growth <= 2 * file + activations);
}
