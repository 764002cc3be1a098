//===- Manifest.cpp - Parse and validate the model manifest ---------------===//
//
// nlohmann::ordered_json keeps keys in the order the compiler wrote
// them. Every check names the field with its JSON path ("params[2].offset"),
// so that a compiler bug shows up as a precise one-line error instead of a
// wrong result later.
//
//===----------------------------------------------------------------------===//

#include "driver/model/Manifest.h"

#include "driver/model/AlignedBuffer.h"
#include "driver/model/Tokens.h"
#include "moe/Runtime/ModelABI.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <limits>
#include <map>
#include <stdexcept>

namespace moe::driver {

using Json = nlohmann::ordered_json;

namespace {

std::string oneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

[[noreturn]] void fail(const std::string &field, const std::string &what) {
  throw std::runtime_error(oneLine("manifest: '" + field + "' " + what));
}

// The value as it appears in the manifest, shortened for an error message.
std::string shown(const Json &value) {
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

const Json &member(const Json &object, const std::string &path,
                   const char *key) {
  auto it = object.find(key);
  if (it == object.end())
    fail(path.empty() ? key : path + "." + key, "is missing");
  return *it;
}

std::string fieldPath(const std::string &path, const char *key) {
  return path.empty() ? key : path + "." + key;
}

std::string getString(const Json &object, const std::string &path,
                      const char *key) {
  const Json &value = member(object, path, key);
  if (!value.is_string())
    fail(fieldPath(path, key), "is " + shown(value) + ", expected a string");
  return value.get<std::string>();
}

uint64_t getSize(const Json &object, const std::string &path, const char *key) {
  const Json &value = member(object, path, key);
  if (!value.is_number_unsigned())
    fail(fieldPath(path, key),
         "is " + shown(value) + ", expected a non-negative integer");
  return value.get<uint64_t>();
}

std::vector<int64_t> getShape(const Json &object, const std::string &path) {
  const Json &value = member(object, path, "shape");
  std::vector<int64_t> shape;
  bool ok = value.is_array();
  for (size_t i = 0; ok && i < value.size(); ++i) {
    ok = value[i].is_number_unsigned() &&
         value[i].get<uint64_t>() <=
             static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
    if (ok)
      shape.push_back(value[i].get<int64_t>());
  }
  if (!ok)
    fail(path + ".shape",
         "is " + shown(value) + ", expected an array of non-negative integers");
  return shape;
}

const Json &getArray(const Json &root, const char *key) {
  const Json &value = member(root, "", key);
  if (!value.is_array())
    fail(key, "is " + shown(value) + ", expected an array");
  return value;
}

// Elements of `shape`, or a failure naming `field` when it overflows 2^62
// (no blob can be that large, and it keeps byte counts in range).
int64_t checkedElements(const std::vector<int64_t> &shape,
                        const std::string &field) {
  int64_t n = 1;
  for (int64_t dim : shape)
    if (__builtin_mul_overflow(n, dim, &n) || n > (int64_t(1) << 60))
      fail(field, "is " + shapeText(shape) + ", which is too large");
  return n;
}

// Optional "global_shape" and "split" beside "shape"; checked against the
// mesh by checkSplits once the mesh is known.
void parseShardFields(const Json &entry, const std::string &path,
                      const std::vector<int64_t> &shape,
                      std::vector<int64_t> &globalShape, Split &split) {
  globalShape = shape;
  split.assign(shape.size(), {});
  if (auto it = entry.find("global_shape"); it != entry.end()) {
    Json wrapper = {{"shape", *it}};
    globalShape = getShape(wrapper, path + ".global");
    if (globalShape.size() != shape.size())
      fail(path + ".global_shape", "is " + shapeText(globalShape) +
                                       ", expected rank " +
                                       std::to_string(shape.size()));
  }
  if (auto it = entry.find("split"); it != entry.end()) {
    if (!it->is_array() || it->size() != shape.size())
      fail(path + ".split", "is " + shown(*it) + ", expected " +
                                std::to_string(shape.size()) +
                                " lists of mesh axes");
    for (size_t d = 0; d < it->size(); ++d) {
      const Json &axes = (*it)[d];
      if (!axes.is_array())
        fail(path + ".split",
             "is " + shown(*it) + ", expected lists of mesh axis names");
      for (const Json &axis : axes) {
        if (!axis.is_string())
          fail(path + ".split",
               "is " + shown(*it) + ", expected lists of mesh axis names");
        split[d].push_back(axis.get<std::string>());
      }
    }
  }
}

// Every split names known axes and divides its dimension into the local one;
// a placed expert weight has at least E/n and at most E slots instead.
void checkSplit(const std::string &path, const std::vector<int64_t> &shape,
                const std::vector<int64_t> &globalShape, const Split &split,
                const MeshShape &mesh, bool placed = false) {
  for (size_t d = 0; d < split.size(); ++d) {
    int64_t parts = 0;
    try {
      parts = splitParts(split[d], mesh);
    } catch (const std::exception &e) {
      fail(path + ".split", e.what());
    }
    if (placed && d == 0) {
      if (globalShape[0] % parts != 0 || shape[0] < globalShape[0] / parts ||
          shape[0] > globalShape[0])
        fail(path + ".shape",
             "has " + std::to_string(shape[0]) + " expert slots, but " +
                 std::to_string(globalShape[0]) + " experts on " +
                 std::to_string(parts) + " ranks need between " +
                 std::to_string(globalShape[0] / parts) + " and " +
                 std::to_string(globalShape[0]));
      continue;
    }
    if (globalShape[d] != shape[d] * parts)
      fail(path + ".global_shape", "is " + shapeText(globalShape) +
                                       ", but the block " + shapeText(shape) +
                                       " split as recorded over mesh " +
                                       mesh.str() + " does not tile it");
  }
}

ParamInfo parseParam(const Json &entry, const std::string &path,
                     const std::string &storage) {
  if (!entry.is_object())
    fail(path, "is " + shown(entry) +
                   ", expected an object with name, shape, dtype and offset");
  ParamInfo param;
  param.name = getString(entry, path, "name");
  if (param.name.empty())
    fail(path + ".name", "is empty");
  param.shape = getShape(entry, path);
  checkedElements(param.shape, path + ".shape");
  param.dtype = getString(entry, path, "dtype");
  if (param.dtype != storage)
    fail(path + ".dtype", "is \"" + param.dtype + "\", expected \"" + storage +
                              "\" (the model's storage)");
  param.offset = param.storageOffset = getSize(entry, path, "offset");

  size_t first = param.name.find("{e}");
  param.stacked = first != std::string::npos;
  if (param.stacked && param.name.find("{e}", first + 1) != std::string::npos)
    fail(path + ".name",
         "is \"" + param.name + "\", which has \"{e}\" more than once");
  if (param.stacked && param.shape.empty())
    fail(path + ".shape", "is [] but the parameter is stacked (\"{e}\" in "
                          "its name), expected [experts, ...]");
  parseShardFields(entry, path, param.shape, param.globalShape, param.split);
  if (entry.contains("placement")) {
    param.placement = static_cast<int64_t>(getSize(entry, path, "placement"));
    // Its experts over ep; its other dimensions whole, or one of them over
    // tp (expert tensor parallelism).
    bool experts = param.split.size() >= 1 &&
                   param.split[0] == std::vector<std::string>{"ep"};
    for (size_t d = 1; d < param.split.size(); ++d)
      experts = experts && (param.split[d].empty() ||
                            param.split[d] == std::vector<std::string>{"tp"});
    if (!param.stacked || !experts)
      fail(path + ".placement",
           "is set, but the parameter is not a stacked expert weight split "
           "over ep along its experts (and at most over tp otherwise)");
  }
  if (entry.contains("balances_layer")) {
    param.balancesLayer =
        static_cast<int64_t>(getSize(entry, path, "balances_layer"));
    if (param.shape.size() != 1 || param.stacked || param.split[0].size())
      fail(path + ".balances_layer",
           "is set, but the parameter is not one unsplit vector of expert "
           "biases");
  }
  return param;
}

// Offsets aligned, inside the blob, no two parameters sharing a byte, no two
// naming the same HF tensor.
void checkLayout(const Manifest &m) {
  std::vector<size_t> order;
  std::map<std::string, size_t> owner;
  for (size_t i = 0; i < m.params.size(); ++i) {
    const ParamInfo &p = m.params[i];
    std::string path = "params[" + std::to_string(i) + "]";
    if (p.offset % MOE_BUFFER_ALIGNMENT != 0)
      fail(path + ".offset", "is " + std::to_string(p.offset) +
                                 ", expected a multiple of " +
                                 std::to_string(MOE_BUFFER_ALIGNMENT));
    if (p.offset > m.weightsBytes ||
        p.storageBytes() > m.weightsBytes - p.offset)
      fail(path + ".offset",
           "is " + std::to_string(p.offset) + " and the parameter has " +
               std::to_string(p.storageBytes()) + " bytes, which ends past " +
               "weights_bytes " + std::to_string(m.weightsBytes));
    for (int64_t e = 0; e < p.numSlices(); ++e) {
      auto [it, inserted] = owner.emplace(p.sliceName(e), i);
      if (!inserted)
        fail(path + ".name", "names tensor '" + it->first + "' that params[" +
                                 std::to_string(it->second) + "] names too");
    }
    if (p.storageBytes() > 0)
      order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return m.params[a].offset < m.params[b].offset;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const ParamInfo &prev = m.params[order[k - 1]];
    const ParamInfo &cur = m.params[order[k]];
    if (cur.offset < prev.offset + prev.storageBytes())
      fail("params[" + std::to_string(order[k]) + "].offset",
           "is " + std::to_string(cur.offset) + ", inside params[" +
               std::to_string(order[k - 1]) + "] ('" + prev.name + "', bytes " +
               std::to_string(prev.offset) + " to " +
               std::to_string(prev.offset + prev.storageBytes()) + ")");
  }
}

std::vector<TensorSpec> parseSpecs(const Json &root, const char *key) {
  std::vector<TensorSpec> specs;
  const Json &array = getArray(root, key);
  for (size_t i = 0; i < array.size(); ++i) {
    std::string path = std::string(key) + "[" + std::to_string(i) + "]";
    if (!array[i].is_object())
      fail(path, "is " + shown(array[i]) +
                     ", expected an object with name, shape and dtype");
    TensorSpec spec;
    spec.name = getString(array[i], path, "name");
    spec.shape = getShape(array[i], path);
    checkedElements(spec.shape, path + ".shape");
    spec.dtype = getString(array[i], path, "dtype");
    parseShardFields(array[i], path, spec.shape, spec.globalShape, spec.split);
    specs.push_back(std::move(spec));
  }
  return specs;
}

void expectSpec(const std::vector<TensorSpec> &specs, const char *key,
                size_t index, const char *name, const char *dtype) {
  std::string path = std::string(key) + "[" + std::to_string(index) + "]";
  if (index >= specs.size())
    fail(key, "has " + std::to_string(specs.size()) +
                  " entries, expected one named '" + name + "' at index " +
                  std::to_string(index) + " (the moe_entry_forward signature)");
  const TensorSpec &spec = specs[index];
  if (spec.name != name)
    fail(path + ".name", "is \"" + spec.name + "\", expected \"" + name +
                             "\" (the moe_entry_forward signature)");
  if (spec.dtype != dtype)
    fail(path + ".dtype",
         "is \"" + spec.dtype + "\", expected \"" + dtype + "\"");
}

// The manifest's layout is the entries' blob; under bf16 storage the host
// side's fp32 blob (master weights, gradients, moments, checkpoints) gets the
// same order and alignment at 4 bytes an element.
void layOutFp32Blob(Manifest &m) {
  m.storageWeightsBytes = m.weightsBytes;
  if (!m.bf16Storage())
    return;
  std::vector<size_t> order(m.params.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return m.params[a].storageOffset < m.params[b].storageOffset;
  });
  uint64_t at = 0;
  for (size_t i : order) {
    m.params[i].offset = at;
    at += alignedSize(m.params[i].bytes());
  }
  m.weightsBytes = at;
}

// tokens, labels [batch, seq] I32 -> logits [batch, seq, vocab], loss [] F32:
// the only entry signature ModelABI.h defines today.
void checkForwardSignature(Manifest &m) {
  expectSpec(m.inputs, "inputs", 0, "tokens", "I32");
  expectSpec(m.inputs, "inputs", 1, "labels", "I32");
  expectSpec(m.outputs, "outputs", 0, "logits", m.storage.c_str());
  expectSpec(m.outputs, "outputs", 1, "loss", "F32");
  if (m.inputs.size() != 2)
    fail("inputs", "has " + std::to_string(m.inputs.size()) +
                       " entries, expected 2 (tokens, labels)");
  if (m.outputs.size() != 2)
    fail("outputs", "has " + std::to_string(m.outputs.size()) +
                        " entries, expected 2 (logits, loss)");

  const std::vector<int64_t> &tokens = m.inputs[0].globalShape;
  if (tokens.size() != 2 || tokens[0] < 1 || tokens[1] < 1)
    fail("inputs[0].shape",
         "is " + shapeText(tokens) + ", expected [batch, seq] with both >= 1");
  m.batch = tokens[0];
  m.seq = tokens[1];
  if (m.inputs[1].globalShape != tokens ||
      m.inputs[1].split != m.inputs[0].split)
    fail("inputs[1].shape", "is " + shapeText(m.inputs[1].globalShape) +
                                ", expected " + shapeText(tokens) +
                                " (the shape of tokens)");
  for (const TensorSpec &output : m.outputs)
    if (output.shape != output.globalShape)
      fail("outputs", "'" + output.name +
                          "' is split over the mesh, but the "
                          "driver expects whole outputs on every rank");
  const std::vector<int64_t> &logits = m.outputs[0].shape;
  if (logits.size() != 3 || logits[0] != m.batch || logits[1] != m.seq ||
      logits[2] < 1)
    fail("outputs[0].shape", "is " + shapeText(logits) + ", expected [" +
                                 std::to_string(m.batch) + ", " +
                                 std::to_string(m.seq) + ", vocab >= 1]");
  m.vocab = logits[2];
  if (!m.outputs[1].shape.empty())
    fail("outputs[1].shape",
         "is " + shapeText(m.outputs[1].shape) + ", expected [] (a scalar)");
}

void parseOptionalFields(const Json &root, Manifest &m) {
  if (auto it = root.find("ignore_index"); it != root.end()) {
    if (!it->is_number_integer() ||
        it->get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        it->get<int64_t>() > std::numeric_limits<int32_t>::max())
      fail("ignore_index", "is " + shown(*it) + ", expected an int32");
    m.ignoreIndex = it->get<int64_t>();
  }
  if (m.ignoreIndex >= 0 && m.ignoreIndex < m.vocab)
    fail("ignore_index", "is " + std::to_string(m.ignoreIndex) +
                             ", which is a token id (vocab " +
                             std::to_string(m.vocab) + ")");

  if (auto it = root.find("hf_config"); it != root.end()) {
    if (!it->is_string() ||
        !Json::parse(it->get<std::string>(), nullptr, false).is_object())
      fail("hf_config", "is not a string holding a JSON object");
    m.hfConfig = it->get<std::string>();
  }
  if (auto it = root.find("vocab_chars"); it != root.end()) {
    if (!it->is_string())
      fail("vocab_chars", "is " + shown(*it) + ", expected a string");
    m.vocabChars = splitUtf8(it->get<std::string>(), "manifest: 'vocab_chars'");
    if (static_cast<int64_t>(m.vocabChars.size()) != m.vocab)
      fail("vocab_chars",
           "has " + std::to_string(m.vocabChars.size()) +
               " characters, expected vocab = " + std::to_string(m.vocab));
    std::map<std::string, size_t> seen;
    for (size_t i = 0; i < m.vocabChars.size(); ++i)
      if (auto [at, fresh] = seen.emplace(m.vocabChars[i], i); !fresh)
        fail("vocab_chars", "has character " + quoteChar(m.vocabChars[i]) +
                                " at positions " + std::to_string(at->second) +
                                " and " + std::to_string(i));
  }

  if (auto it = root.find("mesh"); it != root.end()) {
    if (!it->is_object())
      fail("mesh", "is " + shown(*it) + ", expected an object of axis sizes");
    for (auto axis = it->begin(); axis != it->end(); ++axis) {
      if (axis.key() == "etp") { // expert tensor parallelism: 1 or tp
        if (!axis->is_number_unsigned())
          fail("mesh.etp", "is " + shown(*axis) + ", expected 1 or tp");
        m.mesh.etp = axis->get<int64_t>();
        continue;
      }
      if (axis.key() == "sp") { // sequence parallelism, a flag
        if (!axis->is_boolean())
          fail("mesh.sp", "is " + shown(*axis) + ", expected true or false");
        m.mesh.sp = axis->get<bool>();
        continue;
      }
      if (!axis->is_number_unsigned() || axis->get<uint64_t>() < 1 ||
          axis->get<uint64_t>() > (1u << 20))
        fail("mesh." + axis.key(),
             "is " + shown(*axis) + ", expected a positive integer");
      int64_t size = axis->get<int64_t>();
      const std::string &key = axis.key();
      std::optional<MeshAxis> named = parseAxis(key);
      if (!named || *named == MeshAxis::EDP)
        fail("mesh." + key, "is not a mesh axis (dp, cp, tp, ep)");
      m.mesh.setSize(*named, size);
    }
    if (std::string error = m.mesh.validate(0); !error.empty())
      fail("mesh", error);
  }
}

/// The object `key` of the manifest, a side entry point's: its "entry" must
/// be moe_entry_<key> (returned in `entry`), and each of `arrays` an array.
const Json &entryObject(const Json &root, const std::string &key,
                        std::string &entry,
                        std::initializer_list<const char *> arrays) {
  const Json &object = member(root, "", key.c_str());
  if (!object.is_object())
    fail(key, "is " + shown(object) + ", expected an object");
  const std::string wantEntry = "moe_entry_" + key;
  entry = getString(object, key, "entry");
  if (entry != wantEntry)
    fail(key + ".entry",
         "is \"" + entry + "\", expected \"" + wantEntry + "\"");
  for (const char *field : arrays)
    if (!member(object, key, field).is_array())
      fail(key + "." + field,
           "is " + shown(object[field]) + ", expected an array");
  return object;
}

/// The decode or prefill entry (`key`, entry moe_entry_<key>): tokens and
/// positions [sequences, tokens] in, their logits out, and the caches.
GenerationInfo parseGeneration(const Json &root, const Manifest &m,
                               const std::string &key) {
  GenerationInfo g;
  const Json &object =
      entryObject(root, key, g.entry, {"inputs", "outputs", "caches"});
  g.arenaBytes = getSize(object, key, "arena_bytes");
  g.cacheBytes = getSize(object, key, "cache_bytes");
  std::vector<TensorSpec> inputs = parseSpecs(object, "inputs");
  std::vector<TensorSpec> outputs = parseSpecs(object, "outputs");
  if (inputs.size() != 2 || inputs[0].name != "tokens" ||
      inputs[1].name != "positions" || inputs[0].dtype != "I32" ||
      inputs[1].dtype != "I32" || inputs[0].shape.size() != 2 ||
      inputs[1].shape != inputs[0].shape || inputs[0].shape[0] < 1 ||
      inputs[0].shape[1] < 1)
    fail(key + ".inputs", "is " + shown(object["inputs"]) +
                              ", expected I32 'tokens' and 'positions' of "
                              "one shape [sequences, tokens]");
  g.sequences = inputs[0].shape[0];
  g.newTokens = inputs[0].shape[1];
  std::vector<int64_t> logits = {g.sequences, g.newTokens, m.vocab};
  if (outputs.size() != 1 || outputs[0].name != "logits" ||
      outputs[0].dtype != m.outputs[0].dtype || outputs[0].shape != logits)
    fail(key + ".outputs", "is " + shown(object["outputs"]) +
                               ", expected the logits " + shapeText(logits));
  const Json &caches = object["caches"];
  for (const Json &cache : caches) {
    const Json *shape = cache.is_object() ? &cache["shape"] : nullptr;
    if (!shape || !shape->is_array() || shape->size() != 4 ||
        !(*shape)[1].is_number_integer())
      fail(key + ".caches", "has " + shown(cache) +
                                ", expected an object with a shape [sequences, "
                                "positions, heads, head_dim]");
    int64_t len = (*shape)[1].get<int64_t>();
    if (g.cacheLen != 0 && len != g.cacheLen)
      fail(key + ".caches", "hold " + std::to_string(g.cacheLen) + " and " +
                                std::to_string(len) +
                                " positions, expected one length");
    g.cacheLen = len;
  }
  if (g.cacheLen < g.newTokens)
    fail(key + ".caches", "hold " + std::to_string(g.cacheLen) +
                              " positions, fewer than the " +
                              std::to_string(g.newTokens) + " tokens a call");
  return g;
}

// "train_step": its inputs must be the forward's (the driver feeds both
// from one batch) and its output the scalar loss.
/// The training step or the evaluation step (`key`, entry moe_entry_<key>):
/// the forward's inputs in, the scalar loss out.
TrainStepInfo parseStep(const Json &root, const Manifest &m,
                        const std::string &key) {
  TrainStepInfo step;
  const Json &object =
      entryObject(root, key, step.entry, {"inputs", "outputs"});
  step.function = getString(object, key, "function");
  step.arenaBytes = getSize(object, key, "arena_bytes");
  step.unplannedBytes = getSize(object, key, "unplanned_bytes");
  if (object.contains("comm_bytes"))
    step.commBytes = getSize(object, key, "comm_bytes");
  std::vector<TensorSpec> inputs = parseSpecs(object, "inputs");
  std::vector<TensorSpec> outputs = parseSpecs(object, "outputs");
  if (inputs.size() != 2)
    fail(key + ".inputs", "has " + std::to_string(inputs.size()) +
                              " entries, expected 2 (tokens, labels)");
  for (size_t i = 0; i < 2; ++i) {
    const TensorSpec &want = m.inputs[i], &got = inputs[i];
    if (got.name != want.name || got.dtype != want.dtype ||
        got.globalShape != want.globalShape || got.shape != want.shape ||
        got.split != want.split)
      fail(key + ".inputs[" + std::to_string(i) + "]",
           "is '" + got.name + "' " + got.dtype + " " +
               shapeText(got.globalShape) + ", expected the forward's '" +
               want.name + "' " + want.dtype + " " +
               shapeText(want.globalShape) + " split alike");
  }
  if (outputs.size() != 1 || outputs[0].name != "loss" ||
      outputs[0].dtype != "F32" || !outputs[0].shape.empty())
    fail(key + ".outputs", "is " + shown(object["outputs"]) +
                               ", expected one F32 scalar named 'loss'");
  return step;
}

} // namespace

int64_t ParamInfo::numElements() const {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

std::vector<int64_t> ParamInfo::sliceShape() const {
  if (!stacked)
    return shape;
  return std::vector<int64_t>(shape.begin() + 1, shape.end());
}

std::string ParamInfo::sliceName(int64_t e) const {
  if (!stacked)
    return name;
  std::string result = name;
  result.replace(result.find("{e}"), 3, std::to_string(e));
  return result;
}

uint64_t Manifest::totalParameters() const {
  uint64_t total = 0;
  for (const ParamInfo &p : params)
    total += static_cast<uint64_t>(p.numElements());
  return total;
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Manifest parseManifest(const std::string &text) {
  Json root;
  try {
    root = Json::parse(text);
  } catch (const Json::exception &e) {
    throw std::runtime_error(
        oneLine(std::string("manifest: not valid JSON: ") + e.what()));
  }
  if (!root.is_object())
    throw std::runtime_error("manifest: is " + shown(root) +
                             ", expected a JSON object");

  Manifest m;
  std::string format = getString(root, "", "format");
  if (format != "moe-model/1")
    fail("format", "is \"" + format + "\", expected \"moe-model/1\"");
  m.function = getString(root, "", "function");
  m.entry = getString(root, "", "entry");
  m.weightsBytes = getSize(root, "", "weights_bytes");
  m.arenaBytes = getSize(root, "", "arena_bytes");
  m.unplannedBytes = getSize(root, "", "unplanned_bytes");
  if (root.contains("comm_bytes"))
    m.commBytes = getSize(root, "", "comm_bytes");

  if (root.contains("storage")) {
    m.storage = getString(root, "", "storage");
    if (m.storage != "F32" && m.storage != "BF16")
      fail("storage", "is \"" + m.storage + "\", expected \"F32\" or \"BF16\"");
  }
  const Json &params = getArray(root, "params");
  for (size_t i = 0; i < params.size(); ++i)
    m.params.push_back(
        parseParam(params[i], "params[" + std::to_string(i) + "]", m.storage));
  checkLayout(m);
  layOutFp32Blob(m);

  m.inputs = parseSpecs(root, "inputs");
  m.outputs = parseSpecs(root, "outputs");
  checkForwardSignature(m);
  parseOptionalFields(root, m);
  for (size_t i = 0; i < m.params.size(); ++i)
    checkSplit("params[" + std::to_string(i) + "]", m.params[i].shape,
               m.params[i].globalShape, m.params[i].split, m.mesh,
               m.params[i].placement.has_value());
  if (root.contains("train_step"))
    m.trainStep = parseStep(root, m, "train_step");
  if (root.contains("eval_step")) {
    if (!m.trainStep)
      fail("eval_step", "is set, but the model has no training step");
    m.evalStep = parseStep(root, m, "eval_step");
  }
  if (root.contains("decode"))
    m.decode = parseGeneration(root, m, "decode");
  if (root.contains("prefill")) {
    if (!m.decode)
      fail("prefill", "is set, but the model has no decode entry");
    m.prefill = parseGeneration(root, m, "prefill");
    if (m.prefill->sequences != m.decode->sequences ||
        m.prefill->cacheLen != m.decode->cacheLen ||
        m.prefill->cacheBytes != m.decode->cacheBytes)
      fail("prefill", "has another cache than decode");
  }
  if (auto it = root.find("zero_stage"); it != root.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > 3)
      fail("zero_stage", "is " + shown(*it) + ", expected 1, 2 or 3");
    if (!m.trainStep)
      fail("zero_stage", "is set, but the model has no training step");
    m.zeroStage = static_cast<int>(it->get<int64_t>());
  }
  if (auto it = root.find("recompute"); it != root.end()) {
    if (!it->is_string() || it->get<std::string>() != "full")
      fail("recompute", "is " + shown(*it) + ", expected \"full\"");
    if (!m.trainStep)
      fail("recompute", "is set, but the model has no training step");
    m.recompute = "full";
    const Json &calls = member(root, "", "forward_routing_calls");
    if (!calls.is_object())
      fail("forward_routing_calls",
           "is " + shown(calls) + ", expected an object");
    m.forwardPermutes = static_cast<int64_t>(
        getSize(calls, "forward_routing_calls", "permute"));
    m.forwardDrops =
        static_cast<int64_t>(getSize(calls, "forward_routing_calls", "drop"));
  }
  for (auto [key, specs] :
       {std::pair{"inputs", &m.inputs}, std::pair{"outputs", &m.outputs}})
    for (size_t i = 0; i < specs->size(); ++i)
      checkSplit(std::string(key) + "[" + std::to_string(i) + "]",
                 (*specs)[i].shape, (*specs)[i].globalShape, (*specs)[i].split,
                 m.mesh);
  return m;
}

} // namespace moe::driver
