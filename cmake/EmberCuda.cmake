# Decides whether the CUDA backend is built (EMBER_CUDA=AUTO|ON|OFF) and how CUDA sources compile.
set(EMBER_WITH_CUDA OFF)
if(NOT EMBER_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  set(_ember_cuda_missing "")
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    # CMake 3.25 predates nvcc's C++20 flag, so a C++20 requirement on a target with CUDA sources
    # (ember's public cxx_std_20, or CUDA_STANDARD 20) would fail with "CMake does not know the
    # flags": teach it the flag.
    if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    find_package(CUDAToolkit)
    if(NOT CUDAToolkit_FOUND OR NOT TARGET CUDA::cublasLt)
      set(_ember_cuda_missing "cuBLAS/cuBLASLt")
    endif()
  else()
    set(_ember_cuda_missing "nvcc")
  endif()
  if(_ember_cuda_missing STREQUAL "")
    set(EMBER_WITH_CUDA ON)
  elseif(EMBER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "EMBER_CUDA=ON but not found: ${_ember_cuda_missing}. Install the CUDA toolkit (with cuBLAS), or configure with -DEMBER_CUDA=OFF.")
  else()
    message(STATUS "ember: CUDA backend off (not found: ${_ember_cuda_missing}); building CPU-only")
  endif()
endif()
message(STATUS "ember: CUDA backend ${EMBER_WITH_CUDA} (architectures: ${CMAKE_CUDA_ARCHITECTURES})")

# cuDNN is not needed yet: no source calls it (the convnet work will). It is neither looked for nor
# linked, so configuring needs no cuDNN and libember.so carries no dependency on it; the test
# LibraryNeedsOnlyWhatItUses (tests/CMakeLists.txt) fails if the library NEEDs a library it uses
# no symbol of. The source that first calls cuDNN adds find_library(CUDNN_LIBRARY cudnn ...) and
# links it here.

function(ember_configure_cuda_target target)
  # C++20 for CUDA sources through CUDA_STANDARD, now that CMake knows nvcc's flag for it (see above).
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-fvisibility=hidden -Xcompiler=-Werror=switch
                                      -Wno-deprecated-declarations>)
  target_include_directories(${target} PRIVATE ${CUDAToolkit_INCLUDE_DIRS}/cccl)
  target_link_libraries(${target} PRIVATE CUDA::cudart CUDA::cublas CUDA::cublasLt)
  if(TARGET CUDA::nvtx3)
    target_link_libraries(${target} PRIVATE CUDA::nvtx3)
  endif()
  target_compile_definitions(${target} PRIVATE EMBER_WITH_CUDA=1)
  # Kernels whose results the parity tests compare bit for bit with the CPU loop must round as the
  # host does: no fused multiply-adds (the host's x86-64 baseline code has none, and -std=c++20
  # keeps GCC from contracting). The data pipeline (data_math.h, f64) and the optimizer updates
  # (optim_math.h). The other kernels contract freely; their parity tests use the f32 tolerance.
  set_source_files_properties(${PROJECT_SOURCE_DIR}/cuda/kernels/data.cu ${PROJECT_SOURCE_DIR}/cuda/kernels/optim.cu
                              PROPERTIES COMPILE_OPTIONS "-fmad=false")
endfunction()
