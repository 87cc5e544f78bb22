// The datasets of a data-parallel run held once per node: the node's first process loads and preprocesses them,
// the others borrow its rows from memory the node shares (issue 19, item 3).
//
// The block: a header of 6 numbers per dataset (rows, features, classes, height, width, channels), the labels of
// every dataset, then, from a 64-byte boundary, the rows of every dataset one after the other. Labels are small
// and copied into each process's own dataset; the rows stay in the block (dataset::borrowed_x).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "dist/mpi_job.hpp"
#include "fewmul/error.hpp"

namespace fewmul::dist {
namespace {

constexpr std::size_t header_fields = 6;
constexpr std::size_t row_alignment = 64;

std::size_t rows_offset(std::size_t header_and_labels) {
  return (header_and_labels + row_alignment - 1) / row_alignment * row_alignment;
}

}  // namespace

std::size_t share_on_node(const std::vector<dataset*>& sets) {
  const bool first = first_on_node();
  std::size_t labels = 0, floats = 0;
  if (first)
    for (const dataset* d : sets) {
      if (d->x.size() != d->size() * d->features)
        throw error("a dataset to share holds " + std::to_string(d->x.size()) + " values for " +
                    std::to_string(d->size()) + " rows of " + std::to_string(d->features));
      labels += d->size();
      floats += d->x.size();
    }
  const std::size_t header_bytes = sets.size() * header_fields * sizeof(std::uint64_t);
  const node_block block = allocate_on_node(rows_offset(header_bytes + labels) + floats * sizeof(float));
  auto* header = reinterpret_cast<std::uint64_t*>(block.data);
  if (first) {
    std::byte* label_at = block.data + header_bytes;
    std::byte* rows_at = block.data + rows_offset(header_bytes + labels);
    for (std::size_t i = 0; i < sets.size(); ++i) {
      dataset& d = *sets[i];
      const std::uint64_t fields[header_fields] = {d.size(), d.features, d.classes, d.height, d.width, d.channels};
      std::copy_n(fields, header_fields, header + i * header_fields);
      std::memcpy(label_at, d.y.data(), d.size());
      label_at += d.size();
      if (!d.x.empty()) std::memcpy(rows_at, d.x.data(), d.x.size() * sizeof(float));
      d.borrowed_x = reinterpret_cast<float*>(rows_at);
      rows_at += d.x.size() * sizeof(float);
      std::vector<float>().swap(d.x);  // the node's one copy is the block's
    }
  }
  node_barrier();
  if (first) return block.bytes;
  std::size_t all_labels = 0;
  for (std::size_t i = 0; i < sets.size(); ++i) all_labels += header[i * header_fields];
  const std::byte* label_at = block.data + header_bytes;
  std::byte* rows_at = block.data + rows_offset(header_bytes + all_labels);
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const std::uint64_t* fields = header + i * header_fields;
    dataset& d = *sets[i];
    d = dataset{};
    d.features = fields[1];
    d.classes = fields[2];
    d.height = static_cast<std::uint32_t>(fields[3]);
    d.width = static_cast<std::uint32_t>(fields[4]);
    d.channels = static_cast<std::uint32_t>(fields[5]);
    d.y.assign(reinterpret_cast<const std::uint8_t*>(label_at),
               reinterpret_cast<const std::uint8_t*>(label_at) + fields[0]);
    label_at += fields[0];
    d.borrowed_x = reinterpret_cast<float*>(rows_at);
    rows_at += fields[0] * fields[1] * sizeof(float);
  }
  return block.bytes;
}

}  // namespace fewmul::dist
