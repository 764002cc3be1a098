//===- HFConfig.h - A ModelSpec from a Hugging Face config.json -*- C++ -*-===//
//
// Reads the config.json of a Hugging Face MoE model (Qwen3-MoE, Qwen2-MoE,
// Mixtral, DeepSeek-V3, DeepSeek-V2, OLMoE) into a ModelSpec. Every field that changes the
// math is read; one whose value the project does not implement is an error
// naming the field and its value, never ignored. Fields that do not change the
// forward or training math (token ids, dtypes, versions) are ignored.
//
// Besides Hugging Face's fields the config may hold the project's own, all
// named moec_*: moec_batch and moec_seq (the compiled shape, unless given as
// options), moec_vocab_chars (a character-level vocabulary), moec_aux_loss_coef
// and moec_z_loss_coef (router losses added to the cross entropy),
// moec_capacity_factor, moec_expert_bias (a selection-only bias per expert for
// aux-loss-free balancing, on any family's router), and moec_attention =
// "gqa" (DeepSeek routing on GQA attention with num_key_value_heads and
// head_dim instead of MLA; "mla" is the default).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_IMPORT_HFCONFIG_H
#define MOE_IMPORT_HFCONFIG_H

#include "moe/Import/ModelSpec.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <string>
#include <utility>
#include <vector>

namespace mlir::moe::import {

struct ImportOptions {
  /// The compiled shape; 0 takes moec_batch / moec_seq from the config.
  int64_t batch = 0, seq = 0;
  /// FIELD=VALUE pairs set in the config before it is read; VALUE is JSON
  /// (a number, true, null, [1, 2], ...) or else a string.
  std::vector<std::pair<std::string, std::string>> overrides;
};

/// The spec of `configText` (a config.json's text); errors are one line.
llvm::Expected<ModelSpec> specFromHFConfig(const std::string &configText,
                                           const ImportOptions &options);

/// Reads `path` (a config.json, or a folder holding one) and its spec;
/// errors are one line starting with the file's path.
llvm::Expected<ModelSpec> readHFConfig(const std::string &path,
                                       const ImportOptions &options);

} // namespace mlir::moe::import

#endif // MOE_IMPORT_HFCONFIG_H
