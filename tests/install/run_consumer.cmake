# Drives a nested consumer build from ctest (see tests/install/CMakeLists.txt):
#   cmake -DMODE=install|subdir -DWORK_DIR=... -DGENERATOR=... [-DMAKE_PROGRAM=...] -DCXX_COMPILER=...
#         -DBUILD_TYPE=... -DCONFIG=... -DCTEST_COMMAND=... -DMEMATTN_SOURCE_DIR=... [-DMEMATTN_BINARY_DIR=...
#         -DMEMATTN_VERSION=... -DMEMATTN_HAS_CUDA=ON|OFF] -P run_consumer.cmake
# MODE=install: `cmake --install` the memattn build tree into a fresh prefix, then configure,
#   build and run tests/install/consumer against it with the CUDA toolkit hidden; when the
#   installing build had CUDA, also configure it with the toolkit visible and the cuda component
#   required.
# MODE=subdir: configure, build and run tests/install/subdir_consumer (add_subdirectory), and
#   check that the consumer's ctest sees only the consumer's own test.
cmake_minimum_required(VERSION 3.24)

foreach(_v MODE WORK_DIR GENERATOR CXX_COMPILER MEMATTN_SOURCE_DIR)
  if(NOT DEFINED ${_v} OR "${${_v}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${_v}=... is required")
  endif()
endforeach()
set(_here "${CMAKE_CURRENT_LIST_DIR}")

function(run_step what)
  string(REPLACE ";" " " _cmd "${ARGN}")
  message(STATUS "[${what}] ${_cmd}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[${what}] failed (${_rc}):\n${_out}")
  endif()
  set(STEP_OUTPUT "${_out}" PARENT_SCOPE)
endfunction()

# Configure arguments shared by every nested build: same generator and compiler as ours, CPU only.
set(_gen_args -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" -DMEMATTN_ENABLE_CUDA=OFF)
if(MAKE_PROGRAM)
  list(APPEND _gen_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(BUILD_TYPE)
  list(APPEND _gen_args "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
endif()
set(_config_args)
if(CONFIG)
  set(_config_args --config "${CONFIG}")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

if(MODE STREQUAL "install")
  if(NOT MEMATTN_BINARY_DIR)
    message(FATAL_ERROR "MODE=install needs -DMEMATTN_BINARY_DIR")
  endif()
  set(_prefix "${WORK_DIR}/prefix")
  run_step(install "${CMAKE_COMMAND}" --install "${MEMATTN_BINARY_DIR}" --prefix "${_prefix}" ${_config_args})
  # Headers and the package files are checked by the consumer (find_package, include directory
  # inside the prefix); the license must travel with them.
  file(GLOB_RECURSE _license "${_prefix}/LICENSE")
  list(FILTER _license INCLUDE REGEX "/memattn/LICENSE$")
  if(NOT _license)
    message(FATAL_ERROR "the install tree lacks memattn's LICENSE")
  endif()

  # A machine without CUDA: the toolkit is hidden, the package must still load.
  set(_build "${WORK_DIR}/consumer")
  run_step(configure "${CMAKE_COMMAND}" -S "${_here}/consumer" -B "${_build}" ${_gen_args}
           "-DCMAKE_PREFIX_PATH=${_prefix}" "-DMEMATTN_PREFIX=${_prefix}" "-DMEMATTN_MIN_VERSION=${MEMATTN_VERSION}"
           "-DMEMATTN_TESTS_DIR=${MEMATTN_SOURCE_DIR}/tests"
           -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON)
  run_step(build "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})
  set(_exe "${_build}/memattn_consumer")
  if(CONFIG AND NOT EXISTS "${_exe}")
    set(_exe "${_build}/${CONFIG}/memattn_consumer")
  endif()
  run_step(run "${_exe}")
  message(STATUS "${STEP_OUTPUT}")

  if(MEMATTN_HAS_CUDA)
    # The installing build had nvcc: with the toolkit visible, the cuda component resolves.
    run_step(configure-cuda "${CMAKE_COMMAND}" -S "${_here}/consumer" -B "${WORK_DIR}/consumer-cuda" ${_gen_args}
             "-DCMAKE_PREFIX_PATH=${_prefix}" "-DMEMATTN_PREFIX=${_prefix}" -DCONSUMER_EXPECT_CUDA=ON)
  endif()

elseif(MODE STREQUAL "subdir")
  set(_build "${WORK_DIR}/build")
  run_step(configure "${CMAKE_COMMAND}" -S "${_here}/subdir_consumer" -B "${_build}" ${_gen_args}
           "-DMEMATTN_SOURCE_DIR=${MEMATTN_SOURCE_DIR}")
  run_step(build "${CMAKE_COMMAND}" --build "${_build}" ${_config_args})
  # The consumer's ctest must list exactly its own test: nothing registered from memattn.
  set(_ctest "${CTEST_COMMAND}")
  if(NOT _ctest)
    get_filename_component(_bin "${CMAKE_COMMAND}" DIRECTORY)
    set(_ctest "${_bin}/ctest")
  endif()
  set(_ctest_config)
  if(CONFIG)
    set(_ctest_config -C "${CONFIG}")
  endif()
  run_step(ctest-list "${_ctest}" --test-dir "${_build}" -N ${_ctest_config})
  if(NOT STEP_OUTPUT MATCHES "Total Tests: 1[\r\n]" OR NOT STEP_OUTPUT MATCHES "memattn_subdir_consumer")
    message(FATAL_ERROR "the consumer's ctest should list only memattn_subdir_consumer:\n${STEP_OUTPUT}")
  endif()
  file(GLOB_RECURSE _testfiles "${_build}/memattn/CTestTestfile.cmake")
  foreach(_tf IN LISTS _testfiles)
    file(STRINGS "${_tf}" _adds REGEX "add_test|subdirs")
    if(_adds)
      message(FATAL_ERROR "memattn registered tests in the consumer build (${_tf}):\n${_adds}")
    endif()
  endforeach()
  run_step(ctest-run "${_ctest}" --test-dir "${_build}" --output-on-failure ${_ctest_config})
  message(STATUS "${STEP_OUTPUT}")
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
