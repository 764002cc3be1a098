//===- Safetensors.cpp - Read and write safetensors checkpoints -----------===//
//
// The JSON header is parsed and written with nlohmann::json; tensor data is
// read with pread from a descriptor the reader keeps open, and written through
// a temporary file that is fsynced and renamed over the target.
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader assumes a little-endian host"
#endif

namespace moe::io {

using nlohmann::json;

namespace {

// The reference implementation refuses headers above 100 MB; so do we, so
// that a corrupt length cannot make us allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;

constexpr DType kAllDTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F64,
                                DType::I64, DType::I32,  DType::I16, DType::I8,
                                DType::U8,  DType::Bool};

// nlohmann's messages may quote parts of the input, and names come from the
// file; keep every message on one line.
std::string oneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  throw SafetensorsError(oneLine(path + ": " + what));
}

[[noreturn]] void failTensor(const std::string &path, const std::string &name,
                             const std::string &what) {
  fail(path, "tensor '" + name + "' " + what);
}

std::string errnoText() { return std::strerror(errno); }

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// product(shape) * elementSize, or false on overflow.
bool byteSize(const std::vector<int64_t> &shape, size_t elementSize,
              uint64_t &bytes) {
  uint64_t n = elementSize;
  for (int64_t dim : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n))
      return false;
  bytes = n;
  return true;
}

/// "F32, BF16, ..., BOOL": the names parseDType accepts.
std::string knownDTypeNames() {
  std::string names;
  for (DType d : kAllDTypes)
    names += (names.empty() ? "" : ", ") + std::string(dtypeName(d));
  return names;
}

bool parseDType(const std::string &name, DType &dtype) {
  for (DType d : kAllDTypes)
    if (name == dtypeName(d)) {
      dtype = d;
      return true;
    }
  return false;
}

std::string jsonTypeText(const json &value) {
  if (value.is_number_integer())
    return "an integer";
  if (value.is_number())
    return "a number";
  return std::string("a") +
         (value.is_object() || value.is_array() ? "n " : " ") +
         value.type_name();
}

// Reads exactly `size` bytes at `offset`; false if the file ends first.
bool preadAll(int fd, void *dst, uint64_t size, uint64_t offset,
              std::string &error) {
  auto *out = static_cast<char *>(dst);
  while (size > 0) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(size, 1u << 30));
    ssize_t got = ::pread(fd, out, chunk, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR)
        continue;
      error = errnoText();
      return false;
    }
    if (got == 0) {
      error = "the file ends at byte " + std::to_string(offset);
      return false;
    }
    out += got;
    offset += static_cast<uint64_t>(got);
    size -= static_cast<uint64_t>(got);
  }
  return true;
}

bool writeAll(int fd, const void *src, size_t size) {
  const auto *in = static_cast<const char *>(src);
  while (size > 0) {
    ssize_t put = ::write(fd, in, std::min<size_t>(size, 1u << 30));
    if (put < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    in += put;
    size -= static_cast<size_t>(put);
  }
  return true;
}

// One header entry -> TensorInfo (offset relative to the data section for
// now). `dataBytes` is the size of the data section.
TensorInfo parseEntry(const std::string &path, const std::string &name,
                      const json &entry, uint64_t dataBytes) {
  if (!entry.is_object())
    failTensor(path, name,
               "has a header entry that is " + jsonTypeText(entry) +
                   ", expected an object with dtype, shape and data_offsets");
  auto field = [&](const char *key) -> const json & {
    auto it = entry.find(key);
    if (it == entry.end())
      failTensor(path, name,
                 std::string("has no \"") + key + "\" in its header entry");
    return *it;
  };

  TensorInfo info;
  info.name = name;

  const json &dtype = field("dtype");
  if (!dtype.is_string())
    failTensor(path, name,
               "has a dtype that is " + jsonTypeText(dtype) +
                   ", expected a string such as \"F32\"");
  if (!parseDType(dtype.get<std::string>(), info.dtype))
    failTensor(path, name,
               "has unknown dtype \"" + dtype.get<std::string>() +
                   "\", expected one of " + knownDTypeNames());

  const json &shape = field("shape");
  if (!shape.is_array())
    failTensor(path, name,
               "has a shape that is " + jsonTypeText(shape) +
                   ", expected an array of non-negative integers");
  for (const json &dim : shape) {
    if (dim.is_number_unsigned() &&
        dim.get<uint64_t>() <=
            static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      info.shape.push_back(dim.get<int64_t>());
      continue;
    }
    failTensor(path, name,
               "has shape " + shape.dump() +
                   ", expected an array of non-negative integers");
  }

  const json &offsets = field("data_offsets");
  bool offsetsOk = offsets.is_array() && offsets.size() == 2 &&
                   offsets[0].is_number_unsigned() &&
                   offsets[1].is_number_unsigned();
  if (!offsetsOk || offsets[0].get<uint64_t>() > offsets[1].get<uint64_t>())
    failTensor(path, name,
               "has data_offsets " + offsets.dump() +
                   ", expected [begin, end] with 0 <= begin <= end");
  uint64_t begin = offsets[0].get<uint64_t>();
  uint64_t end = offsets[1].get<uint64_t>();
  if (end > dataBytes)
    failTensor(path, name,
               "has data up to byte " + std::to_string(end) +
                   " of the data section, but the data section has only " +
                   std::to_string(dataBytes) + " bytes (truncated file?)");

  uint64_t expected;
  if (!byteSize(info.shape, dtypeSize(info.dtype), expected))
    failTensor(path, name,
               "has shape " + shapeText(info.shape) + " whose size overflows");
  if (end - begin != expected)
    failTensor(path, name,
               "has " + std::to_string(end - begin) +
                   " bytes of data, expected " + std::to_string(expected) +
                   " for " + dtypeName(info.dtype) + " " +
                   shapeText(info.shape));
  info.offset = begin;
  info.bytes = expected;
  return info;
}

} // namespace

const char *dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "F32";
  case DType::BF16:
    return "BF16";
  case DType::F16:
    return "F16";
  case DType::F64:
    return "F64";
  case DType::I64:
    return "I64";
  case DType::I32:
    return "I32";
  case DType::I16:
    return "I16";
  case DType::I8:
    return "I8";
  case DType::U8:
    return "U8";
  case DType::Bool:
    return "BOOL";
  }
  return "?";
}

size_t dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::BF16:
  case DType::F16:
  case DType::I16:
    return 2;
  case DType::I8:
  case DType::U8:
  case DType::Bool:
    return 1;
  }
  return 0;
}

//===----------------------------------------------------------------------===//
// Reader
//===----------------------------------------------------------------------===//

SafetensorsReader SafetensorsReader::open(const std::string &path) {
  SafetensorsReader reader;
  reader.path_ = path;
  reader.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (reader.fd_ < 0)
    fail(path, "cannot open: " + errnoText());
  struct stat st;
  if (::fstat(reader.fd_, &st) != 0)
    fail(path, "cannot stat: " + errnoText());
  if (!S_ISREG(st.st_mode))
    fail(path, "is not a regular file");
  uint64_t fileBytes = static_cast<uint64_t>(st.st_size);
  if (fileBytes < 8)
    fail(path, "file has " + std::to_string(fileBytes) +
                   " bytes, expected at least 8 (the header length)");

  unsigned char lengthBytes[8];
  std::string error;
  if (!preadAll(reader.fd_, lengthBytes, 8, 0, error))
    fail(path, "cannot read the header length: " + error);
  uint64_t headerBytes = 0;
  for (int i = 7; i >= 0; --i)
    headerBytes = (headerBytes << 8) | lengthBytes[i];
  if (headerBytes > fileBytes - 8)
    fail(path, "header length " + std::to_string(headerBytes) +
                   " is larger than the " + std::to_string(fileBytes - 8) +
                   " bytes that follow it (truncated or not a safetensors "
                   "file?)");
  if (headerBytes > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(headerBytes) +
                   " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                   " bytes");
  std::string header(static_cast<size_t>(headerBytes), '\0');
  if (!preadAll(reader.fd_, header.data(), headerBytes, 8, error))
    fail(path, "cannot read the header: " + error);

  // nlohmann keeps the last of duplicate keys; catch them with the parser
  // callback instead (keys of the top-level object arrive at depth 1).
  std::string duplicate;
  std::set<std::string> seen;
  auto callback = [&](int depth, json::parse_event_t event, json &parsed) {
    if (event == json::parse_event_t::key && depth == 1 &&
        !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json root;
  try {
    root = json::parse(header, callback);
  } catch (const json::exception &e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!root.is_object())
    fail(path, "header is " + jsonTypeText(root) + ", expected a JSON object");
  if (!duplicate.empty())
    fail(path, "header names '" + duplicate + "' twice");

  uint64_t dataStart = 8 + headerBytes;
  uint64_t dataBytes = fileBytes - dataStart;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object())
        fail(path, "__metadata__ is " + jsonTypeText(*it) +
                       ", expected an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          fail(path, "__metadata__ entry '" + m.key() + "' is " +
                         jsonTypeText(*m) + ", expected a string");
        reader.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    reader.tensors_[it.key()] = parseEntry(path, it.key(), *it, dataBytes);
  }

  // No two tensors may share bytes (empty tensors hold none).
  std::vector<const TensorInfo *> byOffset;
  for (const auto &[name, info] : reader.tensors_)
    if (info.bytes > 0)
      byOffset.push_back(&info);
  std::sort(byOffset.begin(), byOffset.end(),
            [](const TensorInfo *a, const TensorInfo *b) {
              return a->offset < b->offset;
            });
  for (size_t i = 1; i < byOffset.size(); ++i) {
    const TensorInfo &prev = *byOffset[i - 1], &cur = *byOffset[i];
    if (cur.offset < prev.offset + prev.bytes)
      failTensor(path, cur.name,
                 "has data_offsets [" + std::to_string(cur.offset) + ", " +
                     std::to_string(cur.offset + cur.bytes) +
                     "] overlapping those of tensor '" + prev.name + "' [" +
                     std::to_string(prev.offset) + ", " +
                     std::to_string(prev.offset + prev.bytes) + "]");
  }
  for (auto &[name, info] : reader.tensors_)
    info.offset += dataStart;
  return reader;
}

SafetensorsReader::SafetensorsReader(SafetensorsReader &&other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)),
      tensors_(std::move(other.tensors_)),
      metadata_(std::move(other.metadata_)) {}

SafetensorsReader &
SafetensorsReader::operator=(SafetensorsReader &&other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    tensors_ = std::move(other.tensors_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0)
    ::close(fd_);
}

bool SafetensorsReader::contains(const std::string &name) const {
  return tensors_.count(name) != 0;
}

const TensorInfo &SafetensorsReader::info(const std::string &name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    fail(path_, "no tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> result;
  result.reserve(tensors_.size());
  for (const auto &entry : tensors_)
    result.push_back(entry.first);
  return result;
}

const TensorInfo &
SafetensorsReader::checked(const std::string &name,
                           const std::vector<int64_t> &expectedShape) const {
  const TensorInfo &tensor = info(name);
  if (tensor.shape != expectedShape)
    failTensor(path_, name,
               "has shape " + shapeText(tensor.shape) + ", expected " +
                   shapeText(expectedShape));
  return tensor;
}

void SafetensorsReader::readAt(const TensorInfo &tensor, void *dst) const {
  std::string error;
  if (!preadAll(fd_, dst, tensor.bytes, tensor.offset, error))
    failTensor(path_, tensor.name,
               "cannot be read (bytes " + std::to_string(tensor.offset) +
                   " to " + std::to_string(tensor.offset + tensor.bytes) +
                   " of the file): " + error);
}

void SafetensorsReader::readBytes(const std::string &name, void *dst) const {
  readAt(info(name), dst);
}

void SafetensorsReader::readF32(const std::string &name,
                                const std::vector<int64_t> &expectedShape,
                                float *dst) const {
  const TensorInfo &tensor = checked(name, expectedShape);
  size_t n = static_cast<size_t>(tensor.bytes / dtypeSize(tensor.dtype));
  switch (tensor.dtype) {
  case DType::F32:
    readAt(tensor, dst);
    return;
  case DType::BF16:
  case DType::F16: {
    std::vector<uint16_t> raw(n);
    readAt(tensor, raw.data());
    for (size_t i = 0; i < n; ++i)
      dst[i] =
          tensor.dtype == DType::BF16 ? bf16ToF32(raw[i]) : f16ToF32(raw[i]);
    return;
  }
  default:
    failTensor(path_, name,
               std::string("has dtype ") + dtypeName(tensor.dtype) +
                   ", expected F32 (or BF16/F16)");
  }
}

void SafetensorsReader::readI32(const std::string &name,
                                const std::vector<int64_t> &expectedShape,
                                int32_t *dst) const {
  const TensorInfo &tensor = checked(name, expectedShape);
  size_t n = static_cast<size_t>(tensor.bytes / dtypeSize(tensor.dtype));
  switch (tensor.dtype) {
  case DType::I32:
    readAt(tensor, dst);
    return;
  case DType::I64: {
    std::vector<int64_t> raw(n);
    readAt(tensor, raw.data());
    for (size_t i = 0; i < n; ++i) {
      if (raw[i] < std::numeric_limits<int32_t>::min() ||
          raw[i] > std::numeric_limits<int32_t>::max())
        failTensor(path_, name,
                   "has element " + std::to_string(i) + " = " +
                       std::to_string(raw[i]) +
                       ", expected a value in the int32 range");
      dst[i] = static_cast<int32_t>(raw[i]);
    }
    return;
  }
  default:
    failTensor(path_, name,
               std::string("has dtype ") + dtypeName(tensor.dtype) +
                   ", expected I32 (or I64)");
  }
}

//===----------------------------------------------------------------------===//
// Writer
//===----------------------------------------------------------------------===//

void writeSafetensors(const std::string &path,
                      const std::vector<TensorToWrite> &tensors,
                      const std::map<std::string, std::string> &metadata) {
  // Validate everything and lay out the data before touching the disk.
  std::map<std::string, const TensorToWrite *> sorted;
  for (const TensorToWrite &t : tensors) {
    if (t.name.empty())
      fail(path, "cannot write a tensor with an empty name");
    if (t.name == "__metadata__")
      fail(path, "cannot write a tensor named '__metadata__' (reserved for "
                 "the metadata)");
    if (!sorted.emplace(t.name, &t).second)
      failTensor(path, t.name, "is given twice, expected unique names");
  }

  json header = json::object();
  if (!metadata.empty()) {
    json &meta = header["__metadata__"] = json::object();
    for (const auto &[key, value] : metadata)
      meta[key] = value;
  }
  std::vector<std::pair<const TensorToWrite *, uint64_t>> layout;
  uint64_t dataBytes = 0;
  for (const auto &[name, t] : sorted) {
    for (int64_t dim : t->shape)
      if (dim < 0)
        failTensor(path, name,
                   "has shape " + shapeText(t->shape) +
                       ", expected non-negative dims");
    uint64_t bytes;
    if (!byteSize(t->shape, dtypeSize(t->dtype), bytes))
      failTensor(path, name,
                 "has shape " + shapeText(t->shape) + " whose size overflows");
    if (bytes > 0 && t->data == nullptr)
      failTensor(path, name,
                 "has no data, expected " + std::to_string(bytes) + " bytes");
    header[name] = {{"dtype", dtypeName(t->dtype)},
                    {"shape", t->shape},
                    {"data_offsets", {dataBytes, dataBytes + bytes}}};
    layout.emplace_back(t, bytes);
    dataBytes += bytes;
  }
  std::string headerText;
  try {
    headerText = header.dump();
  } catch (const json::exception &e) {
    fail(path,
         std::string(
             "cannot encode the header (names and metadata must be UTF-8): ") +
             e.what());
  }
  headerText.append((8 - headerText.size() % 8) % 8, ' ');
  unsigned char lengthBytes[8];
  for (int i = 0; i < 8; ++i)
    lengthBytes[i] = static_cast<unsigned char>(
        static_cast<uint64_t>(headerText.size()) >> (8 * i));

  std::vector<ByteSpan> pieces = {{lengthBytes, 8},
                                  {headerText.data(), headerText.size()}};
  for (const auto &[tensor, bytes] : layout)
    pieces.push_back({tensor->data, bytes});
  writeFileAtomically(path, pieces);
}

void writeFileAtomically(const std::string &path,
                         const std::vector<ByteSpan> &pieces) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fail(path, "cannot create temporary file '" + tmp + "': " + errnoText());
  auto abandon = [&](const std::string &what) {
    std::string why = errnoText();
    if (fd >= 0)
      ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, what + ": " + why);
  };
  bool ok = true;
  for (size_t i = 0; ok && i < pieces.size(); ++i)
    ok = writeAll(fd, pieces[i].data, static_cast<size_t>(pieces[i].size));
  if (!ok)
    abandon("cannot write temporary file '" + tmp + "'");
  if (::fsync(fd) != 0)
    abandon("cannot fsync temporary file '" + tmp + "'");
  int closed = ::close(fd);
  fd = -1;
  if (closed != 0)
    abandon("cannot close temporary file '" + tmp + "'");
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    abandon("cannot rename temporary file '" + tmp + "' over it");

  // Make the rename itself durable (best effort: not every file system lets
  // a directory be opened and fsynced).
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "."
                    : slash == 0               ? "/"
                                               : path.substr(0, slash);
  int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd >= 0) {
    ::fsync(dirFd);
    ::close(dirFd);
  }
}

} // namespace moe::io
