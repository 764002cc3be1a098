# The two third-party libraries the runtime and its tests use: nlohmann::json
# (header-only) and GoogleTest. On a Debian machine they are packages; a GPU
# machine without a package registry gets them in the bundle that
# scripts/gpu_roundtrip.sh carries (MOE_THIRD_PARTY_DIR: include/nlohmann
# and the googletest sources), copied from this machine's packages.
set(MOE_THIRD_PARTY_DIR "${PROJECT_SOURCE_DIR}/.third_party" CACHE PATH
  "Where the GPU bundle puts nlohmann/json.hpp and the googletest sources")

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND)
  if(EXISTS "${MOE_THIRD_PARTY_DIR}/include/nlohmann/json.hpp")
    add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED GLOBAL)
    set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${MOE_THIRD_PARTY_DIR}/include")
    message(STATUS "nlohmann_json: ${MOE_THIRD_PARTY_DIR}/include")
  else()
    message(FATAL_ERROR "nlohmann_json not found: install nlohmann-json3-dev "
      "or put nlohmann/json.hpp under ${MOE_THIRD_PARTY_DIR}/include")
  endif()
endif()

find_package(GTest QUIET)
if(NOT GTest_FOUND)
  if(EXISTS "${MOE_THIRD_PARTY_DIR}/googletest/CMakeLists.txt")
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    add_subdirectory("${MOE_THIRD_PARTY_DIR}/googletest"
      "${CMAKE_BINARY_DIR}/third_party/googletest" EXCLUDE_FROM_ALL)
    if(NOT TARGET GTest::gtest_main)
      add_library(GTest::gtest_main ALIAS gtest_main)
    endif()
    message(STATUS "GoogleTest: built from ${MOE_THIRD_PARTY_DIR}/googletest")
  else()
    message(FATAL_ERROR "GoogleTest not found: install libgtest-dev or put "
      "its sources under ${MOE_THIRD_PARTY_DIR}/googletest")
  endif()
endif()
