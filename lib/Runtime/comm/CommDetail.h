//===- CommDetail.h - Shared pieces of the communicator backends -*- C++
//-*-===//
//
// Private to lib/Runtime/comm: error messages, argument checks and the one
// summation loop every backend uses, so that the backends agree bit for bit.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_RUNTIME_COMM_COMMDETAIL_H
#define MOE_LIB_RUNTIME_COMM_COMMDETAIL_H

#include "moe/Runtime/Communicator.h"

#include <string>

namespace moe::rt::detail {

/// Throws std::runtime_error("<backend> communicator: <op>: <message>").
[[noreturn]] void fail(const char *backend, const char *op,
                       const std::string &message);

/// "" when count >= 0, else "rank <rank> passes <what> <count>, which is
/// negative".
std::string checkCount(int rank, const char *what, int64_t count);

/// "" when the buffer is non-null or holds nothing, else a message.
std::string checkBuffer(int rank, const char *what, const void *buf,
                        int64_t count);

/// "" when 0 <= root < size, else a message.
std::string checkRoot(int rank, int root, int size);

/// "" when each of counts[0, n) and offsets[0, n) is >= 0 (either may be
/// null when n == 0), else a message naming the peer.
std::string checkCountsAndOffsets(int rank, const char *side,
                                  const int64_t *counts, const int64_t *offsets,
                                  int n);

/// dst[i] = ((src[0][i] + src[1][i]) + ...) + src[n-1][i] for i < count, in
/// the element type (integers wrap). dst may be src[0], but no other source.
void sumInRankOrder(const void *const *src, int n, void *dst, int64_t count,
                    CommDType dtype);

} // namespace moe::rt::detail

#endif // MOE_LIB_RUNTIME_COMM_COMMDETAIL_H
