// ember-bench's CPU GEMM figures (issue 13): the core's fp32 peak measured from its ISA and clock,
// the MLP / CNN GEMM shapes against it, and an MLP epoch's fp32 floor.
#pragma once
#include <cstdint>
#include <string>

namespace ember_bench {

struct CpuPeak {
  std::string isa;       // the vector ISA of the FMA loop: "avx512f" or "avx2"
  double clock_ghz = 0;  // measured: a chain of dependent integer adds (one cycle each) on this thread
  double flops_per_cycle = 0;  // measured: independent FMAs of that width, per cycle at that clock
  double peak_gflops = 0;      // flops_per_cycle x clock: one core's fp32 peak
};

// Measures one core's peak (about 0.3 s of this thread's CPU time; CPU time, so a shared machine's
// other processes do not count against it).
CpuPeak measure_cpu_peak();

// FLOPs of the GEMMs of one MLP epoch (784-hidden-10, full batches only, the first layer's input
// needs no gradient): forward, data gradient of the second layer, weight gradients of both.
double mlp_epoch_flops(int64_t images, int64_t hidden, int64_t batch);

// The GEMM shapes of the MLP (batch 64 and the 10,000-image evaluation batch) and of the CNN's fully
// connected layers, through ember's ops on the CPU: one JSON line each with GFLOP/s and the fraction
// of `peak`, then a line for the MLP epoch's floor.
void gemm_shapes(const CpuPeak& peak, int reps);

}  // namespace ember_bench
