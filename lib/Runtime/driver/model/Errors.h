//===- Errors.h - The driver's kinds of failure -----------------*- C++ -*-===//
//
// A UsageError is the user's input being malformed (flags, ids on the
// command line, options that do not go together): the driver prints it with
// a pointer to --help and exits with status 2. Any other std::exception is
// a failure of the run (status 1).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_DRIVER_ERRORS_H
#define MOE_LIB_RUNTIME_DRIVER_ERRORS_H

#include <stdexcept>

namespace moe::driver {

class UsageError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

} // namespace moe::driver

#endif // MOE_LIB_RUNTIME_DRIVER_ERRORS_H
