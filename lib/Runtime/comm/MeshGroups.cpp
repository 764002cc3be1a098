//===- MeshGroups.cpp - A rank's place and groups in the mesh -------------===//
//
// The rank layout is documented in Communicator.h; this file is its one
// implementation (the compiler's partitioning must agree with it).
//
//===----------------------------------------------------------------------===//

#include "moe/Runtime/Communicator.h"

#include <limits>
#include <stdexcept>
#include <string>

namespace moe::rt {

MeshCoordinates meshCoordinates(const MeshShape &mesh, int worldRank) {
  std::string invalid = mesh.validate();
  if (!invalid.empty())
    throw std::runtime_error(invalid);
  if (mesh.worldSize() > std::numeric_limits<int>::max())
    throw std::runtime_error("mesh " + mesh.str() + " spans " +
                             std::to_string(mesh.worldSize()) +
                             " ranks, more than a communicator can hold");
  if (worldRank < 0 || worldRank >= mesh.worldSize())
    throw std::runtime_error("rank " + std::to_string(worldRank) +
                             " is outside mesh " + mesh.str() + " of " +
                             std::to_string(mesh.worldSize()) + " ranks");
  // Every size fits in int now, as the world size does.
  const int cp = static_cast<int>(mesh.cp), tp = static_cast<int>(mesh.tp),
            ep = static_cast<int>(mesh.ep);

  MeshCoordinates at;
  at.t = worldRank % tp;
  at.plane = worldRank / tp;
  at.c = at.plane % cp;
  at.d = at.plane / cp;
  // Colours only need to tell the groups of one axis apart; each is the
  // group's remaining coordinates, flattened.
  at.dp = {at.c * tp + at.t, at.d};
  at.cp = {at.d * tp + at.t, at.c};
  at.tp = {at.plane, at.t};
  at.ep = {(at.plane / ep) * tp + at.t, at.plane % ep};
  at.edp = {(at.plane % ep) * tp + at.t, at.plane / ep};
  at.dpCp = {at.t, at.plane};
  return at;
}

MeshGroups makeMeshGroups(Communicator &world, const MeshShape &mesh) {
  // Checked before any split, so every rank throws the same error and none
  // is left waiting in a collective.
  std::string invalid = mesh.validate(world.size());
  if (!invalid.empty())
    throw std::runtime_error(invalid);

  MeshGroups groups;
  groups.mesh = mesh;
  groups.coords = meshCoordinates(mesh, world.rank());
  const MeshCoordinates &at = groups.coords;
  groups.dp = world.split(at.dp.colour, at.dp.rank);
  groups.cp = world.split(at.cp.colour, at.cp.rank);
  groups.tp = world.split(at.tp.colour, at.tp.rank);
  groups.ep = world.split(at.ep.colour, at.ep.rank);
  groups.edp = world.split(at.edp.colour, at.edp.rank);
  groups.dpCp = world.split(at.dpCp.colour, at.dpCp.rank);
  return groups;
}

} // namespace moe::rt
