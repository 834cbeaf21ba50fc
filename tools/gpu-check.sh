#!/usr/bin/env bash
# Checks ember on a GPU machine without network, in at most 8 minutes (480 s) on an H200 with 16 cores:
# unpacks .gpu-debs/*.deb (tools/gpu-deps.sh) into a private prefix, builds with the CUDA backend for sm_90,
# then, each step with its own limit and in this order: the CUDA tests (one process, so nothing runs beside
# the test that allocates the whole device), NCCL at world size 1 under the prefix's mpirun, ember-mnist
# for one epoch with its progress bar (the AsyncRead polling path) and then its default run, int8 inference
# of the MNIST CNN against fp32 (cuBLASLt's int8 GEMM),
# compute-sanitizer memcheck on a subset of the CUDA tests and racecheck on the reduction and softmax kernels, and the benchmarks against PyTorch. Logs go to $OUT
# (default /tmp/gpu-check-out); a summary table is printed last, also when a step fails or times out.
# Usage: bash tools/gpu-check.sh    (from the repository root)
#        With the device tool: carry [".gpu-debs"] (data/mnist is tracked, so it travels with the tree).
# Dry run, on a machine without a GPU: EMBER_GPU_CHECK_DRY_RUN=1 GPU_CHECK_BUDGET_S=3600 bash tools/gpu-check.sh
#   runs every step: unpack, configure and build for real, and each GPU step's command up to its no-GPU
#   answer (recorded as skipped); without a GPU and without DRY_RUN the env row fails.
# Environment: OUT, EMBER_DEPS_PREFIX (default /tmp/ember-prefix), BUILD_DIR (default build-gpu), JOBS
#              (default nproc), GPU_CHECK_BUDGET_S (default 480; the step limits scale with it),
#              EMBER_GPU_CHECK_FORCE_FAIL=step,step (replace those steps' commands by a failing one, to
#              see their failure paths and what is skipped after them).
set -uo pipefail  # no -e: a failed step is recorded, and the steps that do not depend on it still run
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

OUT=${OUT:-/tmp/gpu-check-out}
PREFIX=${EMBER_DEPS_PREFIX:-/tmp/ember-prefix}
BUILD=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
DRY_RUN=${EMBER_GPU_CHECK_DRY_RUN:-0}
FORCE_FAIL=",${EMBER_GPU_CHECK_FORCE_FAIL:-},"
ARCH=x86_64-linux-gnu
mkdir -p "$OUT"
t_start=$SECONDS
# nvcc, compute-sanitizer and ncu live in the toolkit's bin/, which PATH may lack.
[[ -d /usr/local/cuda/bin ]] && export PATH="$PATH:/usr/local/cuda/bin"

rows=()
failed=0
print_summary() {
  {
    echo
    echo "=== gpu-check summary (logs in $OUT)"
    printf '%-11s %-8s %6s  %s\n' step status seconds "key figures"
    ((DRY_RUN)) && echo "(dry run: no GPU expected; the GPU steps ran up to their no-GPU answer)"
    printf '%s\n' "${rows[@]}"
    printf '%-11s %-8s %6s\n' total "$([[ $failed -eq 0 ]] && echo ok || echo FAILED)" $((SECONDS - t_start))
  } | tee "$OUT/summary.txt"
}
trap print_summary EXIT
# Killed from outside (an outer time limit, Ctrl-C): stop the running step (timeout passes the signal on to
# its command) and say which step it was; the EXIT trap then prints the summary.
current_step= step_t0=$SECONDS step_pid=
on_signal() {
  [[ -n $step_pid ]] && kill -TERM "$step_pid" 2>/dev/null
  rows+=("$(printf '%-11s %-8s %6s  %s' "${current_step:-?}" KILLED $((SECONDS - step_t0)) "stopped by a signal")")
  failed=1
  exit 130
}
trap on_signal INT TERM

row() {  # row STEP STATUS SECONDS FIGURES
  rows+=("$(printf '%-11s %-8s %6s  %s' "$1" "$2" "$3" "$4")")
  [[ $2 == ok || $2 == skipped || $2 == fallback ]] || failed=1
}
remaining() { echo $((BUDGET - (SECONDS - t_start))); }
# run_step NAME CAP LOG COMMAND...: runs COMMAND under `timeout`, at most CAP seconds and never past the
# budget; sets step_rc (124: timed out) and step_s.
run_step() {
  local name=$1 cap=$2 log=$3 left
  shift 3
  cap=$((cap * BUDGET / 480))  # caps are sized for the default budget; a larger budget (slow machine) scales them
  left=$(($(remaining) - 5))
  ((cap > left)) && cap=$left
  if ((cap < 10)); then
    step_rc=125 step_s=0
    echo "gpu-check: $name: no time left in the ${BUDGET}s budget" | tee -a "$log"
    return
  fi
  echo "=== gpu-check: $name (limit ${cap}s; log $log)"
  : >"$log"  # this run's output only (the figures are read from it)
  current_step=$name step_t0=$SECONDS
  if [[ $FORCE_FAIL == *",$name,"* ]]; then
    set -- bash -c "echo 'gpu-check: $name: failure forced by EMBER_GPU_CHECK_FORCE_FAIL'; exit 1"
  fi
  # In the background and waited for, so a signal to this script is handled at once (see on_signal).
  timeout -k 10 "$cap" "$@" >>"$log" 2>&1 &
  step_pid=$!
  wait "$step_pid"
  step_rc=$? step_s=$((SECONDS - step_t0)) step_pid=
  ((step_rc == 0)) || tail -n 25 "$log"
}
status_of() { case $step_rc in 0) echo ok ;; 124 | 137) echo TIMEOUT ;; 125) echo NO-TIME ;; *) echo "FAIL($step_rc)" ;; esac; }

# ---- env: what this machine has ----
{
  echo "date: $(date -u +%FT%TZ)  host: $(hostname)  cores: $(nproc)"
  grep -h PRETTY_NAME /etc/os-release 2>/dev/null
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>/dev/null) (the Debian 12 OpenBLAS needs 2.34 or newer)"
  for tool in cmake ninja g++ nvcc compute-sanitizer ncu nsys dpkg-deb python3; do
    printf '%-18s %s\n' "$tool:" "$(command -v "$tool" >/dev/null 2>&1 && "$tool" --version 2>&1 | grep -m1 -iE 'version|[0-9]+\.[0-9]+' || echo 'not found')"
  done
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1
  else
    echo "nvidia-smi: not found"
  fi
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
have_gpu=1
[[ -z $gpu ]] && gpu="no GPU seen by nvidia-smi" have_gpu=0

# cuDNN 9: the CUDA backend's convolutions link it (cmake/EmberCuda.cmake finds it in the CUDA toolkit, or at
# CUDNN_ROOT). Find it where this machine keeps it (the toolkit's, the system's, or the nvidia-cudnn package
# of a PyTorch install) and hand its root to the configure step.
cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")")
cudnn_at=
for h in "$cuda_root/include/cudnn_version.h" /usr/include/cudnn_version.h "/usr/include/$ARCH/cudnn_version.h"; do
  [[ -e $h ]] && { cudnn_at=$h; break; }
done
if [[ -z $cudnn_at ]]; then
  cudnn_root=$(python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null)
  [[ -n $cudnn_root && -e $cudnn_root/include/cudnn_version.h ]] && cudnn_at=$cudnn_root/include/cudnn_version.h
fi
cudnn_root=
if [[ -n $cudnn_at ]]; then
  cudnn_version=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / {v = v (v ? "." : "") $3} END {print v}' "$cudnn_at")
  cudnn_root=$(dirname "$(dirname "$cudnn_at")")
  [[ $cudnn_root == /usr/include ]] && cudnn_root=/usr
  cudnn_figure="cuDNN $cudnn_version at $cudnn_root"
else
  cudnn_figure="no cuDNN found (the CUDA backend's convolutions need cuDNN 9: configure will fail)"
fi
echo "$cudnn_figure" | tee -a "$OUT/env.txt"

cmake_version=$(cmake --version 2>/dev/null | grep -o -m1 '[0-9][0-9.]*')
env_figures="$gpu; cmake ${cmake_version:-not found}; nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*'); $cudnn_figure"
if [[ -z $cmake_version || $(printf '%s\n3.25\n' "$cmake_version" | sort -V | head -1) != 3.25 ]]; then
  row env FAILED 0 "$env_figures (ember needs CMake 3.25 or newer)"
elif ((!have_gpu && !DRY_RUN)); then
  row env FAILED 0 "$env_figures (no GPU: set EMBER_GPU_CHECK_DRY_RUN=1 for a dry run)"
else
  row env ok 0 "$env_figures"
fi

# ---- unpack: every .gpu-debs/*.deb into $PREFIX (never into /) ----
unpack() {
  shopt -s nullglob
  local debs=("$repo"/.gpu-debs/*.deb)
  ((${#debs[@]})) || { echo "no .gpu-debs/*.deb: run tools/gpu-deps.sh on a machine with network, then carry .gpu-debs"; return 1; }
  [[ -n $PREFIX && $PREFIX != / ]] || { echo "refusing to unpack into '$PREFIX'"; return 1; }
  rm -rf "$PREFIX" && mkdir -p "$PREFIX" || return 1
  for deb in "${debs[@]}"; do
    if command -v dpkg-deb >/dev/null 2>&1; then
      dpkg-deb -x "$deb" "$PREFIX" || return 1
    else  # no dpkg: a .deb is an ar archive holding data.tar.{xz,zst,gz}
      local tmp member
      tmp=$(mktemp -d) && (cd "$tmp" && ar x "$deb") || return 1
      member=$(ls "$tmp"/data.tar.* | head -1)
      case $member in
        *.zst) zstd -dc "$member" | tar -x -C "$PREFIX" ;;
        *) tar -xf "$member" -C "$PREFIX" ;;
      esac || return 1
      rm -rf "$tmp"
    fi
    echo "unpacked $(basename "$deb")"
  done
  # Absolute links (zlib1g-dev's libz.so -> /lib/.../libz.so.1.2.13) would point at this machine's
  # files: make them point inside the prefix.
  local link target
  while IFS= read -r link; do
    target=$(readlink "$link")
    if [[ $target == /* ]]; then
      ln -sfn "$PREFIX$target" "$link" && echo "relinked ${link#"$PREFIX"} -> $PREFIX$target"
    fi
  done < <(find "$PREFIX" -type l)
  # Debian 12 is merged-/usr: packages put libraries in /lib and /usr/lib alike.
  if [[ -d $PREFIX/lib/$ARCH ]]; then
    mkdir -p "$PREFIX/usr/lib/$ARCH"
    for f in "$PREFIX/lib/$ARCH"/*; do ln -sfn "$f" "$PREFIX/usr/lib/$ARCH/$(basename "$f")"; done
  fi
  # Runtime libraries this machine lacks (libgfortran.so.5, say) go into ld-extra/, the only
  # directory put on LD_LIBRARY_PATH: libraries the machine has are never shadowed.
  mkdir -p "$PREFIX/ld-extra"
  local so soname system_libs
  system_libs=$({ ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | awk 'NR > 1 {print $1}' | sort -u)
  while IFS= read -r so; do
    soname=$(objdump -p "$so" 2>/dev/null | awk '/SONAME/ {print $2}')
    [[ -n $soname && ! -e $PREFIX/ld-extra/$soname ]] || continue
    grep -qxF "$soname" <<<"$system_libs" && continue
    ln -sfn "$so" "$PREFIX/ld-extra/$soname" && echo "ld-extra: $soname (not on this machine)"
  done < <(find "$PREFIX/usr/lib/$ARCH" "$PREFIX/lib/$ARCH" -name '*.so*' -type f \
             -not -path '*/openmpi/lib/openmpi3/*' -not -path '*/pmix2/lib/pmix/*' 2>/dev/null)  # components: dlopen()ed by path
  for f in usr/include/$ARCH/openblas-pthread/cblas.h usr/lib/$ARCH/openblas-pthread/libopenblas.so \
           usr/include/zlib.h usr/lib/$ARCH/libz.so usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake \
           usr/src/googletest/CMakeLists.txt usr/include/oneapi/dnnl/dnnl.hpp usr/lib/$ARCH/libdnnl.so; do
    [[ -e $PREFIX/$f ]] || { echo "missing after unpacking: $PREFIX/$f"; return 1; }
  done
}
export PREFIX repo ARCH
export -f unpack
run_step unpack 15 "$OUT/unpack.log" bash -c unpack
row unpack "$(status_of)" "$step_s" "$(ls "$repo"/.gpu-debs/*.deb 2>/dev/null | wc -l) debs; ld-extra: $(ls "$PREFIX/ld-extra" 2>/dev/null | tr '\n' ' ')"
unpack_ok=$step_rc
# data/ holds the shipped MNIST digits; link Fashion-MNIST from the unpacked package, as tools/get-data.sh does.
if [[ ! -e data/fashion-mnist && -d $PREFIX/usr/share/datasets/fashion-mnist ]]; then
  mkdir -p data && ln -sfn "$PREFIX/usr/share/datasets/fashion-mnist" data/fashion-mnist
fi

export LD_LIBRARY_PATH="$PREFIX/ld-extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
lib=$PREFIX/usr/lib/$ARCH
# OpenMPI from the prefix (ember::dist; the NCCL id travels over MPI): OPAL_PREFIX relocates its
# libraries, components and help files, PMIx is told where its components are, and the components
# whose network libraries were left out of .gpu-debs (InfiniBand, UCX, libfabric) are skipped quietly.
mpi_wrapper=$PREFIX/usr/bin/mpicxx.openmpi mpi_run=$PREFIX/usr/bin/orterun
if [[ -x $mpi_run ]]; then
  export OPAL_PREFIX=$PREFIX/usr PMIX_MCA_mca_base_component_path=$lib/pmix2/lib/pmix
  export OMPI_MCA_mca_base_component_show_load_errors=0
fi

# ---- gtest: GoogleTest built from the googletest package's sources with this machine's compiler
# (the prebuilt libgtest.a of libgtest-dev was made by Debian's g++ 12 and is the fallback) ----
gtest_dir=$lib/cmake/GTest
if ((unpack_ok == 0)); then
  run_step gtest 35 "$OUT/gtest.log" bash -c "
    cmake -S '$PREFIX/usr/src/googletest' -B '$PREFIX/gtest-build' -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX='$PREFIX/gtest' -DCMAKE_POSITION_INDEPENDENT_CODE=ON &&
    cmake --build '$PREFIX/gtest-build' -j '$JOBS' && cmake --install '$PREFIX/gtest-build'"
  if ((step_rc == 0)); then
    gtest_dir=$(dirname "$(find "$PREFIX/gtest" -name GTestConfig.cmake | head -1)")
    row gtest ok "$step_s" "built from source: $gtest_dir"
  else
    # The prebuilt library may still link with this compiler; configure and build tell.
    row gtest fallback "$step_s" "source build $(status_of); using libgtest-dev's prebuilt libgtest.a"
  fi
else
  row gtest skipped 0 "unpack failed"
fi

# ---- configure: every dependency named by path inside the prefix, so nothing on this machine is picked ----
rpath_link="-Wl,-rpath-link,$lib/openblas-pthread:$lib:$PREFIX/lib/$ARCH"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
configure_args=(
  -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
  -DEMBER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90
  -DCMAKE_PREFIX_PATH="$PREFIX/gtest;$PREFIX/usr"
  -DGTest_DIR="$gtest_dir"
  -Dnlohmann_json_DIR="$PREFIX/usr/share/cmake/nlohmann_json"
  -DCLI11_DIR="$PREFIX/usr/share/cmake/CLI11"
  -DBLA_VENDOR=OpenBLAS
  -DBLAS_openblas_LIBRARY="$lib/openblas-pthread/libopenblas.so"
  -DCMAKE_LIBRARY_PATH="$lib/openblas-pthread;$lib"
  -DOPENBLAS_CBLAS_INCLUDE="$PREFIX/usr/include/$ARCH/openblas-pthread"
  -DZLIB_INCLUDE_DIR="$PREFIX/usr/include"
  -DZLIB_LIBRARY="$lib/libz.so"
  -DDNNL_INCLUDE_DIR="$PREFIX/usr/include"
  -DDNNL_LIBRARY="$lib/libdnnl.so"
  ${cudnn_root:+-DCUDNN_ROOT="$cudnn_root"}
  -DEMBER_MPI=ON -DMPI_CXX_COMPILER="$mpi_wrapper" -DEMBER_MPIEXEC="$mpi_run"
  -DCMAKE_EXE_LINKER_FLAGS="$rpath_link"
  -DCMAKE_SHARED_LINKER_FLAGS="$rpath_link"
  --no-warn-unused-cli
  "${launcher[@]}"
)
# After configuring, every dependency must resolve inside the prefix.
check_deps() {
  local cache=$BUILD/CMakeCache.txt var value bad=0
  for var in GTest_DIR nlohmann_json_DIR BLAS_openblas_LIBRARY OPENBLAS_CBLAS_INCLUDE ZLIB_LIBRARY ZLIB_INCLUDE_DIR \
             DNNL_INCLUDE_DIR DNNL_LIBRARY MPI_mpi_LIBRARY EMBER_MPIEXEC CMAKE_CUDA_COMPILER CUDNN_LIBRARY; do
    value=$(grep -m1 "^$var:" "$cache" | cut -d= -f2-)
    echo "dependency: $var = $value"
    case $var in
      CMAKE_CUDA_* | CUDNN_*) ;;  # the machine's own CUDA toolkit and cuDNN
      *) [[ $value == "$PREFIX"/* ]] || { echo "  ^ not inside $PREFIX"; bad=1; } ;;
    esac
  done
  return $bad
}
if ((unpack_ok == 0)); then
  rm -f "$BUILD/CMakeCache.txt"  # a cache from another prefix or machine would keep its paths
  run_step configure 20 "$OUT/configure.log" cmake "${configure_args[@]}"
  configure_ok=$step_rc
  if ((configure_ok == 0)); then
    check_deps >>"$OUT/configure.log" 2>&1 || { configure_ok=1 step_rc=1; tail -n 12 "$OUT/configure.log"; }
  fi
  row configure "$(status_of)" "$step_s" "$(grep -m1 -o 'CUDA backend [A-Z]* (architectures: [0-9;]*)' "$OUT/configure.log")"
else
  configure_ok=1
  row configure skipped 0 "unpack failed"
fi

# ---- build: sm_90 only, all cores ----
if ((configure_ok == 0)); then
  run_step build 150 "$OUT/build.log" cmake --build "$BUILD" -j "$JOBS"
  build_ok=$step_rc
  row build "$(status_of)" "$step_s" "-j $JOBS; $(grep -c 'Building CUDA object' "$OUT/build.log") .cu, $(grep -c 'Building CXX object' "$OUT/build.log") .cpp compiled; $(grep -ci 'warning' "$OUT/build.log") warning lines"
else
  build_ok=1
  row build skipped 0 "configure failed"
fi

tests_bin=$BUILD/tests/ember_tests
mnist_bin=$BUILD/tools/ember-mnist
# The convention: a CUDA test's suite name, or its own name, starts with "Cuda" (CudaBackend.Fill,
# DataLoader.CudaBatchesMatchTheCpu). DeviceMemory.* provokes a real allocation failure (the whole
# device), which compute-sanitizer reports as an API error: it runs here, never under the sanitizers.
cuda_filter='Cuda*:*/Cuda*:*.Cuda*'
no_gpu_note="no GPU"
# How ember's programs and the CUDA runtime say there is no device.
no_gpu_words='no CUDA device( is)? available|is not available: no usable CUDA device|no CUDA-capable device|cudaErrorNoDevice'
# gtest_counts LOG: "P passed, S skipped, F failed of N" from a gtest log.
gtest_counts() {
  local n p s f
  n=$(grep -oE '^\[==========\] [0-9]+ tests? from' "$1" | tail -1 | grep -oE '[0-9]+' | head -1)
  p=$(grep -oE '^\[  PASSED  \] [0-9]+' "$1" | tail -1 | grep -oE '[0-9]+$')
  s=$(grep -oE '^\[  SKIPPED \] [0-9]+' "$1" | tail -1 | grep -oE '[0-9]+$')
  f=$(grep -oE '^\[  FAILED  \] [0-9]+ tests?' "$1" | tail -1 | grep -oE '[0-9]+' | head -1)
  echo "${p:-0} passed, ${s:-0} skipped, ${f:-0} failed of ${n:-?}"
}
# A GPU step on a machine without one: its command ran and must have answered "no GPU" in its own
# words (NEEDLE, a grep -E pattern); then the step is skipped, else it failed.
no_gpu_row() {  # no_gpu_row STEP LOG NEEDLE FIGURES
  if grep -qE "$3" "$2"; then
    row "$1" skipped "$step_s" "$no_gpu_note: $4"
  else
    row "$1" "FAIL($step_rc)" "$step_s" "no GPU, and the command did not say so: $4"
  fi
}

# ---- cuda-tests: every CUDA test, in one process (serial: the whole-device allocation runs alone) ----
if ((build_ok != 0)); then
  row cuda-tests skipped 0 "build failed"
else
  run_step cuda-tests 45 "$OUT/cuda-tests.log" "$tests_bin" --gtest_filter="$cuda_filter:DeviceMemory.*" --gtest_brief=0
  counts=$(gtest_counts "$OUT/cuda-tests.log")
  if ((have_gpu)); then
    row cuda-tests "$(status_of)" "$step_s" "$counts"
  elif ((step_rc == 0)) && grep -q 'no CUDA device' "$OUT/cuda-tests.log" && [[ $counts == *" 0 failed"* ]]; then
    row cuda-tests skipped "$step_s" "$no_gpu_note: $counts (each skip says why)"
  else
    row cuda-tests "FAIL($step_rc)" "$step_s" "$counts"
  fi
fi

# ---- nccl: ember::dist's NCCL collectives and DDP on the GPU, world size 1 under mpirun through the same
# process group as any world size (NCCL refuses two ranks on one GPU) ----
dist_bin=$BUILD/tests/ember_dist_tests
if ((build_ok != 0)); then
  row nccl skipped 0 "build failed"
elif [[ ! -x $dist_bin ]]; then
  row nccl FAILED 0 "no $dist_bin: the build found no MPI (see configure.log)"
else
  run_step nccl 20 "$OUT/nccl.log" "$mpi_run" -np 1 --oversubscribe --allow-run-as-root --mca btl self,vader,tcp \
    "$dist_bin" --gtest_filter='DistNccl.*' --gtest_brief=0
  counts=$(gtest_counts "$OUT/nccl.log")
  if ((have_gpu)); then
    # Skipped tests on a GPU machine mean NCCL did not run: that is a failure here.
    [[ $counts == *" 0 skipped"* ]] || step_rc=1
    row nccl "$(status_of)" "$step_s" "world size 1: $counts"
  elif ((step_rc == 0)) && grep -q 'no CUDA device' "$OUT/nccl.log" && [[ $counts == *" 0 failed"* ]]; then
    row nccl skipped "$step_s" "$no_gpu_note: $counts (mpirun and MPI from the prefix ran)"
  else
    row nccl "FAIL($step_rc)" "$step_s" "$counts"
  fi
fi

# ---- mnist: one epoch with the progress bar (a pseudo-terminal where `script` exists, so it refreshes
# every 100 ms and polls AsyncRead::ready() each time), then the default run (10 epochs) ----
mnist_data=data/mnist
if ((build_ok != 0)); then
  row mnist-epoch skipped 0 "build failed"
  row mnist skipped 0 "build failed"
elif [[ ! -e $mnist_data/train-images-idx3-ubyte.gz && ! -e $mnist_data/train-images-idx3-ubyte ]]; then
  row mnist-epoch skipped 0 "no $mnist_data (it ships with the repository: git checkout -- data/mnist)"
  row mnist skipped 0 "no $mnist_data"
else
  epoch_cmd="'$mnist_bin' --data '$mnist_data' --device cuda --epochs 1"
  if command -v script >/dev/null 2>&1; then
    run_step mnist-epoch 20 "$OUT/mnist-epoch.log" script -qefc "$epoch_cmd" /dev/null
  else
    run_step mnist-epoch 20 "$OUT/mnist-epoch.log" bash -c "$epoch_cmd"
  fi
  refreshes=$(tr '\r' '\n' <"$OUT/mnist-epoch.log" | grep -c '^epoch 1/1 .*%')
  figures="$refreshes progress refreshes; $(tr '\r' '\n' <"$OUT/mnist-epoch.log" | grep -m1 -o 'final test accuracy: [0-9.]*%')"
  if ((have_gpu)); then row mnist-epoch "$(status_of)" "$step_s" "$figures"
  else no_gpu_row mnist-epoch "$OUT/mnist-epoch.log" "$no_gpu_words" "$(tr '\r' '\n' <"$OUT/mnist-epoch.log" | grep -m1 -oE "($no_gpu_words)[^;]*")"
  fi
  run_step mnist 45 "$OUT/mnist.log" "$mnist_bin" --data "$mnist_data" --device cuda --target-accuracy 94.5
  acc=$(grep -m1 -o 'final test accuracy: [0-9.]*%' "$OUT/mnist.log")
  secs=$(grep -E '^epoch 10/10:' "$OUT/mnist.log" | grep -o '[0-9.]* s, [0-9]* img/s' | head -1)
  if ((have_gpu)); then row mnist "$(status_of)" "$step_s" "defaults (10 epochs, target 94.5%): ${acc:-?}; epoch 10: ${secs:-?}"
  else no_gpu_row mnist "$OUT/mnist.log" "$no_gpu_words" "$(grep -m1 -oE "($no_gpu_words)[^;]*" "$OUT/mnist.log")"
  fi
fi

# ---- int8: the MNIST CNN trained one epoch on the GPU, then int8 inference (cuBLASLt int8 GEMM) against
# fp32 on the same GPU in one run (issue 17): accuracy, images/s and their ratio ----
if ((build_ok != 0)); then
  row int8 skipped 0 "build failed"
elif [[ ! -e $mnist_data/train-images-idx3-ubyte.gz && ! -e $mnist_data/train-images-idx3-ubyte ]]; then
  row int8 skipped 0 "no $mnist_data"
else
  int8_ckpt="$OUT/int8-cnn.safetensors"
  run_step int8 20 "$OUT/int8.log" bash -c "'$mnist_bin' --data '$mnist_data' --device cuda --model cnn --epochs 1 -q \
    --save '$int8_ckpt' && '$mnist_bin' --data '$mnist_data' --device cuda --model cnn --eval '$int8_ckpt' --int8"
  if ((have_gpu)); then row int8 "$(status_of)" "$step_s" "$(grep -m1 '^int8 vs fp32:' "$OUT/int8.log" | cut -c1-100)"
  else no_gpu_row int8 "$OUT/int8.log" "$no_gpu_words" "$(grep -m1 -oE "($no_gpu_words)[^;]*" "$OUT/int8.log")"
  fi
fi

# ---- memcheck: compute-sanitizer on the CUDA tests of hand-written indexing ----
# Chosen to fit 70 s: the gathers and scatters (index_select/index_add and their bounds guards, the
# device-side index check writing mapped memory), the batch gather of the data pipeline, the split
# reductions with their scratch, the softmax and cross-entropy row kernels, the fused optimizer launch
# table, strided copies of many dims and overlapping views, and the GEMM epilogue path. Left out: the
# unary/binary sweeps (a thousand instantiations of the one map indexing the copies already cover),
# the GEMM layout sweep (cuBLAS's own kernels), CUDA training and the AsyncRead tests (long GEMMs that
# only make the GPU busy; ten times slower under the sanitizer).
memcheck_filter='CudaBackend.CopyHandlesManyDimsAndOverlap:CudaBackend.IndexSelectAndIndexAddMatchCpu'
memcheck_filter+=':CudaBackend.IndexAddRejectsByteDtypes:CudaIndexCheck.*:DataLoader.Cuda*:CudaBackend.Reduce*'
memcheck_filter+=':CudaBackend.Softmax*:CudaBackend.LogSoftmax*:CudaBackend.CrossEntropy*:CudaOptim.FusedUpdatesMatchCpu'
memcheck_filter+=':CudaBackend.GemmReluEpiloguesPassNaNOn:CudaMemory.ScratchIsNotCountedAsTensorBytes'
memcheck_filter+=':CudaBackend.GemmReluMaskEpiloguesMatchCpuExactly'  # cuBLASLt's aux mask and the relu_mask kernels
# racecheck: the kernels that share memory between threads of a block (the block-wide all-reduce of
# reduce.cu and softmax.cu's rows longer than a warp).
racecheck_filter='CudaBackend.Reduce*:CudaBackend.Softmax*:CudaBackend.LogSoftmax*:CudaBackend.CrossEntropy*'
sanitizer() {  # sanitizer STEP CAP TOOL FILTER
  local log=$OUT/$1.log
  if ((build_ok != 0)); then
    row "$1" skipped 0 "build failed"
  elif ! command -v compute-sanitizer >/dev/null 2>&1; then
    if ((have_gpu)); then row "$1" FAILED 0 "compute-sanitizer not found (the CUDA toolkit's bin/)"
    else row "$1" skipped 0 "$no_gpu_note; compute-sanitizer not found either (the toolkit's bin/)"
    fi
  else
    local listed
    listed=$("$tests_bin" --gtest_list_tests --gtest_filter="$4" 2>/dev/null | grep -c '^  ')
    run_step "$1" "$2" "$log" compute-sanitizer --tool "$3" --error-exitcode 99 --print-limit 50 \
      "$tests_bin" --gtest_filter="$4" --gtest_brief=1
    local errors
    errors=$(grep -oE 'ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard' "$log" | tail -1)
    if ((have_gpu)); then row "$1" "$(status_of)" "$step_s" "$listed tests; ${errors:-no sanitizer summary}; $(gtest_counts "$log")"
    else no_gpu_row "$1" "$log" "$no_gpu_words|no CUDA device: ember::cuda::is_available" "$listed tests listed; $(gtest_counts "$log")"
    fi
  fi
}
sanitizer memcheck 70 memcheck "$memcheck_filter"
sanitizer racecheck 35 racecheck "$racecheck_filter"

# ---- bench: ember against PyTorch on the same GPU (Fashion-MNIST from .gpu-debs) ----
if ((build_ok != 0)); then
  row bench skipped 0 "build failed"
else
  run_step bench 45 "$OUT/bench.log" bash tools/bench/run.sh --build "$BUILD" --device cuda --data data/fashion-mnist
  if ((have_gpu)); then row bench "$(status_of)" "$step_s" "$(tail -n 1 "$OUT/bench.log" | cut -c1-100)"
  else no_gpu_row bench "$OUT/bench.log" "$no_gpu_words" "$(grep -m1 -oE "($no_gpu_words)[^;]*" "$OUT/bench.log")"
  fi
fi

# ---- cnn-bench: one training step of the MNIST CNN and its convolutions, ember (cuDNN) against PyTorch eager ----
if ((build_ok != 0)); then
  row cnn-bench skipped 0 "build failed"
else
  run_step cnn-bench 30 "$OUT/cnn-bench.log" bash tools/bench/convnet.sh --build "$BUILD" --device cuda --threads 1 \
    --python "$(command -v python3 || echo python3)"
  if ((have_gpu)); then
    row cnn-bench "$(status_of)" "$step_s" "$(grep -m1 '^cnn_train_step' "$OUT/cnn-bench.log" | tr -s ' ' | cut -c1-100)"
  else no_gpu_row cnn-bench "$OUT/cnn-bench.log" "$no_gpu_words" "$(grep -m1 -oE "($no_gpu_words)[^;]*" "$OUT/cnn-bench.log")"
  fi
fi
# ---- gpu-bench: GPU epochs, ember against PyTorch in one run (issue 14): the MLP eager and as one CUDA graph
# per step (PyTorch: capturable Adam, torch.cuda.graph), the CNN eager in fp32 and tf32; time and peak-memory
# ratios (tools/bench/gpu_epoch.sh). Last, so its ratio row ends the table. ----
if ((build_ok != 0)); then
  row gpu-bench skipped 0 "build failed"
else
  run_step gpu-bench 40 "$OUT/gpu-bench.log" bash tools/bench/gpu_epoch.sh --build "$BUILD" --data data/fashion-mnist \
    --epochs 2 --python "$(command -v python3 || echo python3)"
  if ((have_gpu)); then
    row gpu-bench "$(status_of)" "$step_s" "$(grep -m1 '^ember/PyTorch epoch time' "$OUT/gpu-bench.log" | cut -c1-110)"
  else no_gpu_row gpu-bench "$OUT/gpu-bench.log" "$no_gpu_words" "$(grep -m1 -oE "($no_gpu_words)[^;]*" "$OUT/gpu-bench.log")"
  fi
fi
exit $failed
