#!/usr/bin/env bash
# Downloads, with apt-get download, the Debian packages ember compiles and links with that the GPU machine
# lacks, and Fashion-MNIST, into .gpu-debs/ (git-ignored), for tools/gpu-check.sh to unpack there without
# network. Carry .gpu-debs to the GPU machine (about 56 MB; the tree and what is carried may total 64 MiB).
# Usage: tools/gpu-deps.sh    (on a Debian 12 machine that reaches Debian's mirrors)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=.gpu-debs

# The closure of what ember needs to compile and link (headers, libopenblas.so and its runtime
# libraries, oneDNN, GoogleTest's sources and prebuilt libraries, header-only CLI11 and nlohmann-json, zlib),
# less what any machine with g++ has (libc6, libc6-dev, libgcc-s1, libstdc++6, gcc-12-base, libgomp1).
packages=(
  libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
  libdnnl-dev libdnnl2 ocl-icd-libopencl1  # oneDNN (the CPU convolutions) and the OpenCL loader it links
  libgtest-dev googletest
  libcli11-dev
  nlohmann-json3-dev
  zlib1g-dev zlib1g
  dataset-fashion-mnist  # not a build dependency: the data the tests and benchmarks use (31 MB)
  # OpenMPI for ember::dist and the NCCL row (the NCCL id travels over MPI): headers, libmpi, mpirun
  # (orterun) and the libraries they and their shared-memory/TCP components load, about 5 MB.
  # gpu-check.sh relocates it with OPAL_PREFIX.
  libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common
  libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libpmix2 libmunge2 libudev1
)
assumed_present=(libc6 libc6-dev libc-dev libgcc-s1 libstdc++6 gcc-12-base libgomp1)  # libgomp1: g++'s OpenMP runtime
# Dependencies a one-machine build and run of OpenMPI never uses: the Fortran compiler and modules, the
# -dev packages of its runtime libraries (libopenmpi-dev's headers and libmpi.so suffice to compile and
# link ember), the JavaScript of its HTML docs, ssh (mpirun reaches other machines with it), hwloc's
# optional plugins and the NVIDIA X control library (topology sources), adduser (an install script's;
# unpacking runs none), and the libraries of the network components for InfiniBand, Omni-Path, UCX and
# libfabric: when those are absent OpenMPI skips the components ("unable to open ... (ignored)",
# silenced by gpu-check.sh) and one machine uses shared memory and TCP (checked in a sandbox where they
# were hidden: the 2-rank dist tests passed).
not_needed=(gfortran-12 gfortran-mod-15 libibverbs-dev libhwloc-dev libevent-dev libpmix-dev libjs-jquery
            libjs-jquery-ui openssh-client ssh-client libhwloc-plugins libxnvctrl0 adduser
            libfabric1 libucx0 libibverbs1 librdmacm1 libpsm2-2 libpsm-infinipath1 libnl-3-200 libnl-route-3-200
            libnuma1)

mkdir -p "$dest"
rm -f "$dest"/*.deb
if ! (cd "$dest" && apt-get download -qq "${packages[@]}" 2>/dev/null); then
  # The package lists may be missing or stale on a fresh machine.
  apt-get update -qq
  (cd "$dest" && apt-get download -qq "${packages[@]}")
fi

# Plain file names (no URL-encoded epoch, "1%3a1.2.13" -> "1.2.13"): they travel to the GPU machine.
for deb in "$dest"/*%3a*.deb; do
  [[ -e $deb ]] && mv "$deb" "$(sed -E 's/[0-9]+%3a//' <<<"$deb")"
done

# Check the list is closed: every dependency of every package is in it (one alternative suffices),
# or is assumed present.
known=" ${packages[*]} ${assumed_present[*]} ${not_needed[*]} "
open=0
for deb in "$dest"/*.deb; do
  deps="$(dpkg-deb -f "$deb" Depends),$(dpkg-deb -f "$deb" Pre-Depends)"
  IFS=',' read -ra clauses <<<"$deps"
  for clause in "${clauses[@]}"; do
    [[ -z ${clause// /} ]] && continue
    ok=0
    IFS='|' read -ra alts <<<"$clause"
    for alt in "${alts[@]}"; do
      name=$(awk '{print $1}' <<<"$alt")
      name=${name%%:*}
      [[ $known == *" $name "* ]] && ok=1
    done
    if ((!ok)); then
      echo "gpu-deps: $(basename "$deb") depends on '${clause# }', which is not in the list" >&2
      open=1
    fi
  done
done
((open == 0)) || { echo "gpu-deps: add the packages above to tools/gpu-deps.sh" >&2; exit 1; }

echo "gpu-deps: $(ls "$dest"/*.deb | wc -l) packages, $(du -sh "$dest" | cut -f1), in $dest/:"
ls "$dest"
