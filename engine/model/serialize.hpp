#pragma once
// Little-endian byte buffers for model and checkpoint files. The reader checks every read against
// the bytes left, so a lying or truncated payload raises fewmul::error instead of reading past the end.
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "fewmul/error.hpp"

namespace fewmul::detail {

static_assert(std::endian::native == std::endian::little, "fewmul files are little-endian");

class byte_writer {
 public:
  template <class T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const unsigned char*>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  template <class T>
  void put_vector(const std::vector<T>& values) {
    put<std::uint64_t>(values.size());
    const auto* p = reinterpret_cast<const unsigned char*>(values.data());
    bytes_.insert(bytes_.end(), p, p + values.size() * sizeof(T));
  }
  void put_string(const std::string& s) {
    put<std::uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

 private:
  std::vector<unsigned char> bytes_;
};

class byte_reader {
 public:
  byte_reader(const unsigned char* data, std::size_t size, std::string source)
      : data_(data), size_(size), source_(std::move(source)) {}
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }
  template <class T>
  std::vector<T> get_vector(const char* what, std::size_t expected = SIZE_MAX) {
    const auto count = get<std::uint64_t>(what);
    if (expected != SIZE_MAX && count != expected)
      throw error(source_ + ": " + what + " has " + std::to_string(count) + " values, expected " +
                  std::to_string(expected));
    if (count > (size_ - offset_) / sizeof(T)) fail(what);
    std::vector<T> values(count);
    if (count > 0) std::memcpy(values.data(), data_ + offset_, count * sizeof(T));  // data() may be null when empty
    offset_ += count * sizeof(T);
    return values;
  }
  std::string get_string(const char* what) {
    const auto count = get<std::uint64_t>(what);
    if (count > size_ - offset_) fail(what);
    std::string s(reinterpret_cast<const char*>(data_ + offset_), count);
    offset_ += count;
    return s;
  }
  bool done() const { return offset_ == size_; }
  std::size_t remaining() const { return size_ - offset_; }
  /// Throws unless `bytes` more bytes are present (checked before allocating what they describe).
  void expect_at_least(std::size_t bytes, const char* what) const {
    if (bytes > size_ - offset_) fail(what);
  }
  const std::string& source() const { return source_; }
  [[noreturn]] void invalid(const std::string& message) const { throw error(source_ + ": " + message); }

 private:
  void need(std::size_t n, const char* what) const {
    if (n > size_ - offset_) fail(what);
  }
  [[noreturn]] void fail(const char* what) const {
    throw error(source_ + ": malformed payload: " + what + " runs past the end of the data");
  }
  const unsigned char* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
  std::string source_;
};

/// The bytes of a regular file of at most `limit` bytes (errors name the file).
inline std::vector<unsigned char> read_file(const std::string& path, std::uint64_t limit) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw error(path + ": no such file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw error(path + ": cannot read (" + ec.message() + ")");
  if (size > limit) throw error(path + ": implausibly large (" + std::to_string(size) + " bytes)");
  std::vector<unsigned char> bytes(size);
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size)))
    throw error(path + ": cannot read");
  return bytes;
}

}  // namespace fewmul::detail
