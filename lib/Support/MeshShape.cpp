//===- MeshShape.cpp - parse and check a DP x CP x TP x EP mesh -----------===//

#include "moe/Support/MeshShape.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace moe {

const char *axisName(MeshAxis axis) {
  switch (axis) {
  case MeshAxis::DP:
    return "dp";
  case MeshAxis::CP:
    return "cp";
  case MeshAxis::TP:
    return "tp";
  case MeshAxis::EP:
    return "ep";
  case MeshAxis::EDP:
    return "edp";
  }
  return "?";
}

std::optional<MeshAxis> parseAxis(std::string_view name) {
  for (MeshAxis axis : {MeshAxis::DP, MeshAxis::CP, MeshAxis::TP, MeshAxis::EP,
                        MeshAxis::EDP})
    if (name == axisName(axis))
      return axis;
  return std::nullopt;
}

int64_t MeshShape::size(MeshAxis axis) const {
  switch (axis) {
  case MeshAxis::DP:
    return dp;
  case MeshAxis::CP:
    return cp;
  case MeshAxis::TP:
    return tp;
  case MeshAxis::EP:
    return ep;
  case MeshAxis::EDP:
    break;
  }
  return expertDataParallelSize();
}

void MeshShape::setSize(MeshAxis axis, int64_t size) {
  switch (axis) {
  case MeshAxis::DP:
    dp = size;
    return;
  case MeshAxis::CP:
    cp = size;
    return;
  case MeshAxis::TP:
    tp = size;
    return;
  case MeshAxis::EP:
    ep = size;
    return;
  case MeshAxis::EDP:
    return; // derived from the others
  }
}

std::optional<MeshShape> MeshShape::parse(const std::string &text,
                                          std::string &error) {
  MeshShape mesh;
  // The four axes, then sp and etp.
  bool seen[6] = {false, false, false, false, false, false};
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos)
      end = text.size();
    std::string item = text.substr(pos, end - pos);
    pos = end + 1;
    if (end == text.size() - 1) {
      error = "trailing ',' in mesh '" + text + "'";
      return std::nullopt;
    }
    if (item == "sp") {
      if (seen[4]) {
        error = "mesh entry 'sp' is given twice";
        return std::nullopt;
      }
      seen[4] = mesh.sp = true;
      continue;
    }
    size_t eq = item.find('=');
    if (eq == std::string::npos) {
      error = "mesh entry '" + item + "' is not of the form axis=size or sp";
      return std::nullopt;
    }
    std::string axis = item.substr(0, eq), value = item.substr(eq + 1);
    std::optional<MeshAxis> named = parseAxis(axis);
    int index = named && *named != MeshAxis::EDP ? static_cast<int>(*named) : -1;
    if (axis == "etp")
      index = 5;
    if (index < 0) {
      error =
          "unknown mesh axis '" + axis + "' (expected dp, cp, tp, ep or etp)";
      return std::nullopt;
    }
    if (seen[index]) {
      error = "mesh axis '" + axis + "' is given twice";
      return std::nullopt;
    }
    seen[index] = true;
    char *parsedEnd = nullptr;
    errno = 0;
    long long size = std::strtoll(value.c_str(), &parsedEnd, 10);
    if (value.empty() || *parsedEnd != '\0' || errno == ERANGE ||
        value[0] == '+' || value[0] == ' ') {
      error = "mesh axis '" + axis + "' has size '" + value +
              "', which is not an integer";
      return std::nullopt;
    }
    if (index == 5)
      mesh.etp = size;
    else
      mesh.setSize(*named, size);
  }
  return mesh;
}

std::string MeshShape::validate(int64_t worldSize) const {
  for (MeshAxis axis : kMeshAxes)
    if (size(axis) < 1)
      return std::string("mesh axis '") + axisName(axis) +
             "' must have a positive size, but got " +
             std::to_string(size(axis));
  if ((dp * cp) % ep != 0)
    return "mesh ep=" + std::to_string(ep) +
           " must divide dp*cp=" + std::to_string(dp * cp) +
           " (expert parallelism borrows its ranks from dp and cp)";
  if (etp != 1 && etp != tp)
    return "mesh etp=" + std::to_string(etp) +
           " must be 1 or tp=" + std::to_string(tp) +
           " (the experts are split over all of tp or not at all)";
  if (sp && tp == 1)
    return "mesh entry 'sp' (sequence parallelism) needs tp > 1";
  if (worldSize > 0 && worldSize != this->worldSize())
    return "mesh " + str() +
           " spans dp*cp*tp=" + std::to_string(this->worldSize()) +
           " ranks, but the world has " + std::to_string(worldSize);
  return "";
}

std::string MeshShape::str() const {
  std::ostringstream os;
  os << "dp=" << dp << ",cp=" << cp << ",tp=" << tp << ",ep=" << ep;
  if (etp != 1)
    os << ",etp=" << etp;
  if (sp)
    os << ",sp";
  return os.str();
}

} // namespace moe
