//===- CommandLine.h - Flags of the model executable's commands -*- C++ -*-===//
//
// A deliberately small parser: `--flag value` or `--flag=value` (or a bare
// `--switch`), every flag at most once, no positional arguments. Anything wrong
// with the shape of the command line is a UsageError (exit code 2); every other
// failure is a plain std::runtime_error (exit code 1).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_COMMANDLINE_H
#define MOE_LIB_RUNTIME_DRIVER_COMMANDLINE_H

#include "driver/model/Errors.h"

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace moe::driver {

struct FlagSpec {
  std::string name;      ///< Without the dashes: "weights".
  std::string valueName; ///< "PATH"; empty for a switch.
  std::string help;      ///< One sentence; mention the default.
  /// A switch ("--resume") takes no value; given, its value is "1".
  bool isSwitch = false;
};

struct CommandSpec {
  std::string name;
  std::string synopsis; ///< Flags after "<program> <name> ".
  std::string summary;  ///< One line.
  std::vector<FlagSpec> flags;
};

/// The flags given, by name.
class ParsedFlags {
public:
  bool has(const std::string &name) const { return values_.count(name) != 0; }
  /// The value of a flag that is present.
  const std::string &get(const std::string &name) const {
    return values_.at(name);
  }
  void set(const std::string &name, std::string value) {
    values_[name] = std::move(value);
  }

private:
  std::map<std::string, std::string> values_;
};

/// True when `args` contains "--help" or "-h" (which wins over any error).
bool wantsHelp(const std::vector<std::string> &args);

/// Parses the arguments after the command name; throws UsageError.
ParsedFlags parseFlags(const CommandSpec &command,
                       const std::vector<std::string> &args);

/// Wraps the words of `text` at `width` columns for a help text that is at
/// column `startColumn` now: a word that does not fit starts a new line
/// indented by `indent`; one that fits is preceded by a space unless the line
/// is still at its indent.
std::string wrapText(const std::string &text, size_t indent, size_t startColumn,
                     size_t width = 80);

/// The --help text of one command.
std::string commandHelp(const std::string &program, const CommandSpec &command);

/// Strict numbers: the whole text, in range, else UsageError naming the flag.
int64_t parseInteger(const std::string &flag, const std::string &text,
                     int64_t min, int64_t max);
uint64_t parseSeed(const std::string &flag, const std::string &text);
double parseReal(const std::string &flag, const std::string &text, double min);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_COMMANDLINE_H
