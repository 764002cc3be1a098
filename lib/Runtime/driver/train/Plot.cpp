//===- Plot.cpp - Loss curves drawn by gnuplot ----------------------------===//

#include "driver/train/Plot.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace moe::driver {

namespace {

/// A gnuplot single-quoted string ('' stands for a quote).
std::string quoted(const std::string &text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "''";
    else if (c != '\n' && c != '\r')
      out += c;
  }
  return out + "'";
}

/// An inline data block of the finite points of `curve`.
void dataBlock(std::ostringstream &os, const char *name, const Curve &curve) {
  os << "$" << name << " << EOD\n";
  char line[64];
  for (auto [x, y] : curve)
    if (std::isfinite(y)) {
      std::snprintf(line, sizeof line, "%.17g %.9g\n", x, y);
      os << line;
    }
  os << "EOD\n";
}

struct Exit {
  int status = -1;      // the exit status, or -1 if it did not exit normally
  std::string messages; // what it wrote to stdout and stderr
};

/// Runs `argv` (found on PATH) with its output going to `logPath`.
Exit runProgram(const std::vector<std::string> &args,
                const std::string &logPath) {
  std::vector<char *> argv;
  for (const std::string &a : args)
    argv.push_back(const_cast<char *>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  int spawned =
      posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  Exit result;
  if (spawned != 0) {
    result.messages =
        std::string("cannot run ") + argv[0] + ": " + std::strerror(spawned);
    std::remove(logPath.c_str());
    return result;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status))
    result.status = WEXITSTATUS(status);
  std::ifstream log(logPath);
  result.messages.assign(std::istreambuf_iterator<char>(log), {});
  std::remove(logPath.c_str());
  while (!result.messages.empty() &&
         (result.messages.back() == '\n' || result.messages.back() == ' '))
    result.messages.pop_back();
  for (char &c : result.messages)
    if (c == '\n')
      c = ' ';
  if (result.status == 127 && result.messages.empty())
    result.messages = std::string("cannot run ") + argv[0];
  return result;
}

std::string tempBeside(const std::string &path, const char *suffix) {
  return path + ".tmp." + std::to_string(::getpid()) + suffix;
}

} // namespace

std::string lossPlotScript(const std::string &output, const std::string &title,
                           const Curve &train, const Curve &validation,
                           int width, int height) {
  std::ostringstream os;
  dataBlock(os, "train", train);
  dataBlock(os, "validation", validation);
  os << "set terminal pngcairo size " << width << "," << height
     << " enhanced font 'sans,10'\n"
     << "set output " << quoted(output) << "\n"
     << "set title " << quoted(title) << " noenhanced\n"
     << "set xlabel 'step'\n"
     << "set ylabel 'loss (cross-entropy + router losses)'\n"
     << "set grid lc rgb '#dddddd'\n"
     << "set key top right box opaque\n"
     << "set xrange [0:*]\n"
     << "set format y '%.2f'\n"
     << "plot $train with lines lw 1.5 lc rgb '#1f77b4' title 'train loss'";
  if (!validation.empty())
    os << ", $validation with linespoints lw 2 pt 7 ps 0.7 lc rgb '#ff7f0e' "
          "title 'validation loss'";
  os << "\n";
  return os.str();
}

std::string gnuplotProblem() {
  std::string log = tempBeside("/tmp/moe-gnuplot-check", ".log");
  Exit probe =
      runProgram({"gnuplot", "-e",
                  "set terminal pngcairo; set output '/dev/null'; plot 1"},
                 log);
  if (probe.status == 0)
    return "";
  return "gnuplot cannot draw PNGs here (" +
         (probe.messages.empty() ? "exit status " + std::to_string(probe.status)
                                 : probe.messages) +
         "); install Debian's gnuplot-nox";
}

void plotLossCurves(const std::string &path, const std::string &title,
                    const Curve &train, const Curve &validation) {
  std::string image = tempBeside(path, ".png");
  std::string script = tempBeside(path, ".gp");
  {
    std::ofstream out(script);
    out << lossPlotScript(image, title, train, validation);
    if (!out.flush())
      throw std::runtime_error("--plot " + path + ": cannot write " + script);
  }
  Exit drawn = runProgram({"gnuplot", script}, tempBeside(path, ".log"));
  std::remove(script.c_str());
  if (drawn.status != 0) {
    std::remove(image.c_str());
    throw std::runtime_error(
        "--plot " + path + ": gnuplot failed: " +
        (drawn.messages.empty() ? "exit status " + std::to_string(drawn.status)
                                : drawn.messages));
  }
  if (std::rename(image.c_str(), path.c_str()) != 0) {
    std::string error = std::strerror(errno);
    std::remove(image.c_str());
    throw std::runtime_error("--plot " + path + ": " + error);
  }
}

} // namespace moe::driver
