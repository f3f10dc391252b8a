# memattn_cuda_test_architectures(): for the directories of the GPU tests and benchmarks. They
# use MEMATTN_CUDA_TEST_ARCHITECTURES when it is set (scripts/build-gpu.sh: the device's arch).
# When every entry is "-virtual" (scripts/test.sh on a machine without a GPU), they only have to
# compile: PTX only, with device code unoptimised (-Xcicc -O0), which takes their nvcc time from
# ~40 s to ~9 s per file. Every kernel still gets real, optimised SASS for each architecture in
# tests/compile.
macro(memattn_cuda_test_architectures)
  if(MEMATTN_CUDA_TEST_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES ${MEMATTN_CUDA_TEST_ARCHITECTURES})
    set(_memattn_compile_only ON)
    foreach(_memattn_arch IN LISTS MEMATTN_CUDA_TEST_ARCHITECTURES)
      if(NOT _memattn_arch MATCHES "-virtual$")
        set(_memattn_compile_only OFF)
      endif()
    endforeach()
    if(_memattn_compile_only)
      add_compile_options($<$<COMPILE_LANGUAGE:CUDA>:-Xcicc=-O0>)
    endif()
  endif()
endmacro()
