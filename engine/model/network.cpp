#include <string>

#include "fewmul/error.hpp"
#include "fewmul/network.hpp"
#include "layers/layer_io.hpp"
#include "model/serialize.hpp"

namespace fewmul {

void network::add(std::unique_ptr<layer> l) {
  if (!layers_.empty() && layers_.back()->output_size() != l->input_size())
    throw error("cannot stack '" + l->describe() + "' after '" + layers_.back()->describe() + "': sizes differ");
  l->index = static_cast<std::uint32_t>(layers_.size());
  if (!layers_.empty()) l->set_input_bits(layers_.back()->output_bits(false), layers_.back()->output_bits(true));
  // A fused pair (batch norm then ReLU): one pass over the values each way instead of two, the same bits.
  auto* previous = layers_.empty() ? nullptr : dynamic_cast<detail::serializable_layer*>(layers_.back().get());
  const auto* next = dynamic_cast<const detail::serializable_layer*>(l.get());
  absorbed_.push_back(previous && !absorbed_.back() && next && previous->absorb_next(*next));
  layers_.push_back(std::move(l));
  activations_.resize(layers_.size());
}

std::size_t network::input_size() const { return layers_.empty() ? 0 : layers_.front()->input_size(); }
std::size_t network::output_size() const { return layers_.empty() ? 0 : layers_.back()->output_size(); }

const matrix& network::forward(const matrix& x, const step_context& ctx) {
  if (layers_.empty()) throw error("network has no layers");
  input_ = &x;
  const matrix* current = &x;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    if (absorbed_[i]) continue;  // its output is the previous layer's
    layers_[i]->forward(*current, activations_[i], ctx);
    current = &activations_[i];
  }
  return *current;
}

void network::backward(const matrix& output_grad, const step_context& ctx) {
  if (input_ == nullptr) throw error("backward called before forward");
  const matrix* dy = &output_grad;
  for (std::size_t i = layers_.size(); i-- > 0;) {
    if (absorbed_[i]) continue;  // the layer before it takes dy as it is
    std::size_t source = i;      // the layer whose output is layer i's input (absorbed layers write none)
    while (source > 0 && absorbed_[source - 1]) --source;
    const matrix& x = source == 0 ? *input_ : activations_[source - 1];
    matrix* dx = i == 0 ? nullptr : (dy == &grad_a_ ? &grad_b_ : &grad_a_);
    layers_[i]->backward(x, activations_[i], *dy, dx, ctx);
    dy = dx;
  }
}

std::vector<parameter*> network::parameters() {
  std::vector<parameter*> out;
  for (auto& l : layers_)
    for (parameter* p : l->parameters()) out.push_back(p);
  return out;
}

std::vector<std::vector<float>> network::snapshot() {
  std::vector<std::vector<float>> state;
  for (auto& l : layers_) {
    for (parameter* p : l->parameters()) state.push_back(p->value);
    for (auto* b : l->buffers()) state.push_back(*b);
  }
  return state;
}

void network::restore(const std::vector<std::vector<float>>& state) {
  std::size_t i = 0;
  for (auto& l : layers_) {
    for (parameter* p : l->parameters()) p->value = state.at(i++);
    for (auto* b : l->buffers()) *b = state.at(i++);
  }
  parameters_changed();
}

void network::parameters_changed() {
  for (auto& l : layers_) l->parameters_changed();
}

// Defined in layers.cpp, next to the layer classes.
std::unique_ptr<layer> read_layer(detail::byte_reader& in, bool packed);

void detail::write_network(const network& net, byte_writer& out, bool packed) {
  out.put<std::uint32_t>(static_cast<std::uint32_t>(net.layers().size()));
  for (const auto& l : net.layers()) {
    const auto* stored = dynamic_cast<const serializable_layer*>(l.get());
    if (stored == nullptr)
      throw error("layer " + std::to_string(l->index) + " (" + l->describe() +
                  ") is not one of the engine's layer types: model and checkpoint files cannot hold it");
    stored->write(out, packed);
  }
}

network detail::read_network(byte_reader& in, bool packed) {
  const auto count = in.get<std::uint32_t>("layer count");
  if (count == 0 || count > 4096) in.invalid("implausible layer count " + std::to_string(count));
  network net;
  for (std::uint32_t i = 0; i < count; ++i) {
    try {
      net.add(read_layer(in, packed));
    } catch (const error& e) {
      const std::string what = e.what();
      if (what.rfind(in.source(), 0) == 0) throw;
      in.invalid("layer " + std::to_string(i) + ": " + what);
    }
  }
  return net;
}

op_counts network::training_ops(std::size_t batch, bool with_first_input_gradient) const {
  op_counts total;
  for (std::size_t i = 0; i < layers_.size(); ++i)
    total += layers_[i]->training_ops(batch, i > 0 || with_first_input_gradient);
  return total;
}

std::string network::describe() const {
  std::string s;
  for (const auto& l : layers_) s += (s.empty() ? "" : " | ") + l->describe();
  return s;
}

}  // namespace fewmul
