// FG_LAUNCH(kernel, grid, block, args...): launch on fg::cuda::current_stream() with no dynamic
// shared memory. One macro for every launch of the GEMM-family kernels so that the CPU emulation
// harness (tests/cuda_emulation/, built with FG_CUDA_EMULATION) can run the same kernels' logic
// with one host thread per CUDA thread: it checks index arithmetic, tiling and edge handling
// without a GPU. Emulation is not a GPU run: it says nothing of speed, races the host threads'
// barriers hide, or the hardware's own behaviour.
#pragma once
#include "common.cuh"

#ifdef FG_CUDA_EMULATION
#define FG_LAUNCH(kernel, grid, block, ...) ::fg_emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); })
#else
#define FG_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block), 0, current_stream()>>>(__VA_ARGS__)
#endif
