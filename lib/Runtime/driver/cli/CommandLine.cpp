//===- CommandLine.cpp - Flags of the model executable's commands ---------===//

#include "driver/cli/CommandLine.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace moe::driver {

namespace {

const FlagSpec *findFlag(const CommandSpec &command, const std::string &name) {
  for (const FlagSpec &flag : command.flags)
    if (flag.name == name)
      return &flag;
  return nullptr;
}

} // namespace

bool wantsHelp(const std::vector<std::string> &args) {
  for (const std::string &arg : args)
    if (arg == "--help" || arg == "-h")
      return true;
  return false;
}

ParsedFlags parseFlags(const CommandSpec &command,
                       const std::vector<std::string> &args) {
  ParsedFlags flags;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string &arg = args[i];
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
      throw UsageError("unexpected argument '" + arg + "' for '" +
                       command.name + "'");
    size_t equals = arg.find('=');
    std::string name = arg.substr(
        2, equals == std::string::npos ? std::string::npos : equals - 2);
    const FlagSpec *spec = findFlag(command, name);
    if (!spec)
      throw UsageError("unknown flag '--" + name + "' for '" + command.name +
                       "'");
    if (flags.has(name))
      throw UsageError("--" + name + " is given twice");
    if (spec->isSwitch) {
      if (equals != std::string::npos)
        throw UsageError("--" + name + " takes no value");
      flags.set(name, "1");
      continue;
    }
    if (equals != std::string::npos) {
      flags.set(name, arg.substr(equals + 1));
      continue;
    }
    // The next argument is the value even if it starts with '-' (ids and
    // prompts may).
    if (i + 1 == args.size())
      throw UsageError("--" + name + " needs a value");
    flags.set(name, args[++i]);
  }
  return flags;
}

std::string wrapText(const std::string &text, size_t indent, size_t startColumn,
                     size_t width) {
  std::string result;
  size_t column = startColumn;
  bool atIndent = startColumn <= indent;
  size_t begin = 0;
  while ((begin = text.find_first_not_of(' ', begin)) != std::string::npos) {
    size_t end = std::min(text.find(' ', begin), text.size());
    std::string word = text.substr(begin, end - begin);
    begin = end;
    if (!atIndent && column + 1 + word.size() > width) {
      result += "\n" + std::string(indent, ' ');
      column = indent;
      atIndent = true;
    }
    if (!atIndent) {
      result += ' ';
      ++column;
    }
    result += word;
    column += word.size();
    atIndent = false;
  }
  return result;
}

std::string commandHelp(const std::string &program,
                        const CommandSpec &command) {
  const size_t column = 24;
  std::string usage = "usage: " + program + " " + command.name;
  std::string text = usage + wrapText(command.synopsis, 4, usage.size()) +
                     "\n\n" + wrapText(command.summary, 0, 0) + "\n";
  if (!command.flags.empty())
    text += "\nflags:\n";
  for (const FlagSpec &flag : command.flags) {
    std::string left =
        "  --" + flag.name + (flag.isSwitch ? "" : " " + flag.valueName);
    if (left.size() + 1 < column)
      left.resize(column, ' ');
    else
      left += "\n" + std::string(column, ' ');
    text += left + wrapText(flag.help, column, column) + "\n";
  }
  return text;
}

int64_t parseInteger(const std::string &flag, const std::string &text,
                     int64_t min, int64_t max) {
  int64_t value = 0;
  const char *end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end)
    throw UsageError("--" + flag + " '" + text + "' is not an integer");
  if (value < min || value > max)
    throw UsageError("--" + flag + " is " + text + ", expected " +
                     std::to_string(min) +
                     " <= value <= " + std::to_string(max));
  return value;
}

uint64_t parseSeed(const std::string &flag, const std::string &text) {
  uint64_t value = 0;
  const char *end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end)
    throw UsageError("--" + flag + " '" + text +
                     "' is not an integer in [0, 2^64)");
  return value;
}

double parseReal(const std::string &flag, const std::string &text, double min) {
  // strtod rather than from_chars<double>, which older libstdc++ lacks.
  char *end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE ||
      !std::isfinite(value) ||
      std::isspace(static_cast<unsigned char>(text[0])))
    throw UsageError("--" + flag + " '" + text + "' is not a finite number");
  if (value < min) {
    char bound[32];
    std::snprintf(bound, sizeof bound, "%g", min);
    throw UsageError("--" + flag + " is " + text +
                     ", expected a value >= " + bound);
  }
  return value;
}

} // namespace moe::driver
