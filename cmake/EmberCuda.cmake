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

# cuDNN 9 (the convolutions, cuda/dnn.cpp) has no CMake target: find its header and library in the
# CUDA toolkit (where the toolkit's installer and NVIDIA's cudnn packages put them), the system's
# dirs, or CUDNN_ROOT. The CUDA backend needs it: AUTO builds CPU-only without it, ON fails.
if(EMBER_WITH_CUDA)
  set(_ember_cudnn_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR})
  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${_ember_cudnn_hints} ${CUDAToolkit_INCLUDE_DIRS} PATH_SUFFIXES include)
  # libcudnn.so.9 alone: the pip nvidia-cudnn package ships no unversioned link.
  find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 HINTS ${_ember_cudnn_hints} ${CUDAToolkit_LIBRARY_DIR}
               PATH_SUFFIXES lib64 lib lib/x64)
  if(CUDNN_INCLUDE_DIR AND EXISTS ${CUDNN_INCLUDE_DIR}/cudnn_version.h)
    file(STRINGS ${CUDNN_INCLUDE_DIR}/cudnn_version.h _cudnn_major REGEX "#define CUDNN_MAJOR [0-9]+")
    string(REGEX MATCH "[0-9]+" CUDNN_VERSION_MAJOR "${_cudnn_major}")
  endif()
  if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY OR NOT CUDNN_VERSION_MAJOR OR CUDNN_VERSION_MAJOR LESS 9)
    set(_ember_cudnn_msg "cuDNN 9 not found (cudnn.h: ${CUDNN_INCLUDE_DIR}, libcudnn: ${CUDNN_LIBRARY}, major version: ${CUDNN_VERSION_MAJOR}); the CUDA backend's convolutions need it. Install cuDNN 9 for your CUDA toolkit, or point -DCUDNN_ROOT at it")
    if(EMBER_CUDA STREQUAL "ON")
      message(FATAL_ERROR "EMBER_CUDA=ON: ${_ember_cudnn_msg}, or configure with -DEMBER_CUDA=OFF.")
    endif()
    message(STATUS "ember: ${_ember_cudnn_msg}; building CPU-only")
    set(EMBER_WITH_CUDA OFF)
  else()
    message(STATUS "ember: cuDNN ${CUDNN_VERSION_MAJOR} at ${CUDNN_LIBRARY}")
  endif()
endif()
message(STATUS "ember: CUDA backend ${EMBER_WITH_CUDA} (architectures: ${CMAKE_CUDA_ARCHITECTURES})")

function(ember_configure_cuda_target target)
  # C++20 for CUDA sources through CUDA_STANDARD, now that CMake knows nvcc's flag for it (see above).
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -Xcompiler=-fvisibility=hidden -Xcompiler=-Werror=switch
                                      -Wno-deprecated-declarations>)
  target_include_directories(${target} PRIVATE ${CUDAToolkit_INCLUDE_DIRS}/cccl ${CUDNN_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE CUDA::cudart CUDA::cublas CUDA::cublasLt ${CUDNN_LIBRARY})
  if(TARGET CUDA::nvtx3)
    target_link_libraries(${target} PRIVATE CUDA::nvtx3)
  endif()
  target_compile_definitions(${target} PRIVATE EMBER_WITH_CUDA=1)
  # Kernels whose results the parity tests compare bit for bit with the CPU loop must round as the
  # host does: no fused multiply-adds (the host's x86-64 baseline code has none, and -std=c++20
  # keeps GCC from contracting). The data pipeline (data_math.h, f64) and the optimizer updates
  # (optim_math.h). The other kernels contract freely; their parity tests use the f32 tolerance.
  # And the int8 inference kernels (quant_math.h), whose outputs are compared with the CPU's exactly.
  set_source_files_properties(${PROJECT_SOURCE_DIR}/cuda/kernels/data.cu ${PROJECT_SOURCE_DIR}/cuda/kernels/optim.cu
                              ${PROJECT_SOURCE_DIR}/cuda/kernels/int8.cu PROPERTIES COMPILE_OPTIONS "-fmad=false")
endfunction()
