//===- Driver.h - The command line of a compiled model ----------*- C++ -*-===//
//
// `moec` links a model object with libMoERuntimeMain.a, whose main() hands
// the model's symbols to runDriver. Keeping the commands here, apart from
// main, lets other programs (and tests) run them with any forward entry.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_DRIVER_H
#define MOE_LIB_RUNTIME_DRIVER_DRIVER_H

#include "driver/model/Entries.h"

#include <cstdint>

namespace moe::driver {

/// Runs the command in argv (forward, generate, train, grad, init, info,
/// --help) against the model that `manifestText` describes, whose entry
/// points are `entries` (null where the model was compiled without one).
/// Returns
/// the exit status: 0 on success, 1 when the run fails (ids or characters that
/// do not fit the model, files, the model itself), 2 when the command line is
/// malformed. Every failure prints exactly one line "error: ..." to stderr.
int runDriver(int argc, char **argv, const char *manifestText,
              const Entries &entries);

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_DRIVER_H
