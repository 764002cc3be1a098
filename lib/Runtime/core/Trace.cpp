//===- Trace.cpp - Chrome traces of runtime calls and steps ---------------===//
//
// The JSON is written by hand (the runtime's core does not depend on a JSON
// library): a handful of fixed keys, names escaped by jsonString().
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Trace.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

namespace moe::rt {

double steadySeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace {

/// The length of the valid UTF-8 sequence at text[i], or 0 if there is none.
size_t utf8Length(std::string_view text, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char lead = byte(i);
  size_t n = lead < 0x80           ? 1
             : (lead >> 5) == 0x6  ? 2
             : (lead >> 4) == 0xe  ? 3
             : (lead >> 3) == 0x1e ? 4
                                   : 0;
  if (n == 0 || i + n > text.size())
    return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) >> 6) != 0x2)
      return 0;
  // Overlong forms, surrogates and code points above U+10FFFF.
  unsigned next = byte(i + 1);
  if ((n == 2 && lead < 0xc2) || (n == 3 && lead == 0xe0 && next < 0xa0) ||
      (n == 3 && lead == 0xed && next >= 0xa0) ||
      (n == 4 && lead == 0xf0 && next < 0x90) ||
      (n == 4 && (lead > 0xf4 || (lead == 0xf4 && next >= 0x90))))
    return 0;
  return n;
}

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", value);
  return text;
}

std::string metadata(int pid, int tid, const char *what,
                     const std::string &name) {
  return "{\"name\":\"" + std::string(what) +
         "\",\"ph\":\"M\",\"pid\":" + std::to_string(pid) +
         ",\"tid\":" + std::to_string(tid) +
         ",\"args\":{\"name\":" + jsonString(name) + "}}";
}

} // namespace

std::string jsonString(std::string_view text) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
      ++i;
    } else if (size_t n = utf8Length(text, i)) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\\ufffd"; // a byte of invalid UTF-8
      ++i;
    }
  }
  return out + "\"";
}

void Tracer::complete(std::string name, std::string category, Track track,
                      double begin, double end, std::vector<TraceArg> args) {
  events_.push_back({std::move(name), std::move(category), track, begin,
                     std::max(begin, end), std::move(args)});
}

std::string Tracer::eventsJson() const {
  std::string out = metadata(rank_, DriverTrack, "process_name",
                             "rank " + std::to_string(rank_));
  out += ",{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":" +
         std::to_string(rank_) +
         ",\"tid\":0,\"args\":{\"sort_index\":" + std::to_string(rank_) + "}}";
  out += "," + metadata(rank_, DriverTrack, "thread_name", "driver");
  out += "," + metadata(rank_, RuntimeTrack, "thread_name", "runtime calls");
  for (const Event &e : events_) {
    out += ",{\"name\":" + jsonString(e.name) +
           ",\"cat\":" + jsonString(e.category) +
           ",\"ph\":\"X\",\"ts\":" + number((e.begin - origin_) * 1e6) +
           ",\"dur\":" + number((e.end - e.begin) * 1e6) +
           ",\"pid\":" + std::to_string(rank_) +
           ",\"tid\":" + std::to_string(e.track) + ",\"args\":{";
    for (size_t i = 0; i < e.args.size(); ++i) {
      const auto &[key, value] = e.args[i];
      out += (i ? "," : "") + jsonString(key) + ":";
      if (const int64_t *n = std::get_if<int64_t>(&value))
        out += std::to_string(*n);
      else
        out += jsonString(std::get<std::string>(value));
    }
    out += "}}";
  }
  return out;
}

std::string chromeTraceJson(const std::vector<std::string> &rankEvents) {
  std::string out = "{\"traceEvents\":[\n";
  bool first = true;
  for (const std::string &events : rankEvents) {
    if (events.empty())
      continue;
    out += (first ? "" : ",\n") + events;
    first = false;
  }
  return out + "\n],\"displayTimeUnit\":\"ms\"}\n";
}

} // namespace moe::rt
