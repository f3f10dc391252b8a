# cmake -DEXE=<binary> -P check_no_libcuda.cmake
# Fails when the binary depends on the CUDA driver library (libcuda.so): memattn::cuda links the
# static runtime only and resolves driver functions at run time, so binaries start without a driver.
cmake_minimum_required(VERSION 3.24)
if(NOT EXE OR NOT EXISTS "${EXE}")
  message(FATAL_ERROR "pass -DEXE=<binary>")
endif()
file(GET_RUNTIME_DEPENDENCIES EXECUTABLES "${EXE}"
     RESOLVED_DEPENDENCIES_VAR _resolved UNRESOLVED_DEPENDENCIES_VAR _unresolved)
set(_all ${_resolved} ${_unresolved})
foreach(_dep IN LISTS _all)
  get_filename_component(_name "${_dep}" NAME)
  if(_name MATCHES "^libcuda\\.so" OR _name MATCHES "^libcudart\\.so")
    message(FATAL_ERROR "${EXE} depends on ${_name}: link CUDA::cudart_static only, resolve driver entry points at run time")
  endif()
endforeach()
list(LENGTH _all _n)
message(STATUS "${EXE}: ${_n} shared-library dependencies, no libcuda / shared cudart")
