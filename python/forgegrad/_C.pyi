"""Type stub of forgegrad._C (C++ kernels, pybind11), written by tools/gen_c_stub.py: do not
edit by hand; rerun it after changing a binding (tests/test_c_stub.py checks that it is current).
Each submodule is declared as a class of static methods.
"""
import collections.abc
import typing

import numpy

_Int = typing.SupportsInt | typing.SupportsIndex
_Float = typing.SupportsFloat | typing.SupportsIndex

__version__: str

class activation:
    GELU: int
    GELU_TANH: int
    LEAKY_RELU: int
    PW_ELU: int
    PW_ELU_FROM_OUTPUT: int
    PW_HARDSHRINK: int
    PW_HARDSIGMOID: int
    PW_HARDSWISH: int
    PW_HARDTANH: int
    PW_LOGSIGMOID: int
    PW_MISH: int
    PW_SOFTPLUS: int
    PW_SOFTSHRINK: int
    PW_SOFTSIGN: int
    PW_TANHSHRINK: int
    PW_THRESHOLD: int
    RELU: int
    SIGMOID: int
    SILU: int
    TANH: int
    @staticmethod
    def act_backward(op: _Int, grad: numpy.ndarray, saved: numpy.ndarray, out: numpy.ndarray,
                     alpha: _Float = ...) -> None:
        """out = grad * act'(.) from saved = the forward output (relu, sigmoid, tanh) or input (others: leaky_relu,
        gelu, gelu_tanh, silu).
        """
        ...
    @staticmethod
    def act_forward(op: _Int, x: numpy.ndarray, out: numpy.ndarray, alpha: _Float = ...) -> None:
        """out = act(x) elementwise on C-contiguous float32 arrays of the same shape (out may be x)."""
        ...
    @staticmethod
    def column_sums(x: numpy.ndarray, out: numpy.ndarray) -> None:
        """out[c] = sum over rows of x[:, c] for a C-contiguous (rows, cols) float32 array, in row order."""
        ...
    @staticmethod
    def glu_backward(grad: numpy.ndarray, x: numpy.ndarray, dim: _Int, out: numpy.ndarray) -> None:
        """out (x's shape) = the gradients of both halves: s * grad for a, (1 - s) * s * a * grad for b, s =
        sigmoid(b).
        """
        ...
    @staticmethod
    def glu_forward(x: numpy.ndarray, dim: _Int, out: numpy.ndarray) -> None:
        """out = a * sigmoid(b), a and b the first and second halves of x along dim; out has x's shape with shape[dim]
        halved.
        """
        ...
    @staticmethod
    def prelu_backward(grad: numpy.ndarray, x: numpy.ndarray, weight: numpy.ndarray, grad_input: object,
                       grad_weight: object) -> None:
        """grad_input = x > 0 ? grad : weight[c] * grad (may be grad itself); grad_weight (weight's shape) = the sum of
        (x > 0 ? 0 : grad * x) over all but dim 1, in float64 over a fixed blocking; either output may be None.
        """
        ...
    @staticmethod
    def prelu_forward(x: numpy.ndarray, weight: numpy.ndarray, out: numpy.ndarray) -> None:
        """out = x > 0 ? x : weight[c] * x on C-contiguous float32 arrays, c the index along dim 1 (weight of one
        element: one slope for all; a 0-d or 1-d x has one channel); out may be x.
        """
        ...
    @staticmethod
    def pw_backward(op: _Int, grad: numpy.ndarray, saved: numpy.ndarray, out: numpy.ndarray, p0: _Float = ...,
                    p1: _Float = ..., p2: _Float = ...) -> None:
        """out = grad * f'(.) from saved = the forward input x (PW_ELU_FROM_OUTPUT: the output y of elu, p0 = alpha);
        PW_ELU's p0..p2: scale, input_scale * negcoef, input_scale; PW_SOFTPLUS's: beta, threshold; PW_HARDTANH's
        lo, hi; the shrinks' lambd; PW_THRESHOLD's threshold.
        """
        ...
    @staticmethod
    def pw_forward(op: _Int, x: numpy.ndarray, out: numpy.ndarray, p0: _Float = ..., p1: _Float = ...,
                   p2: _Float = ...) -> None:
        """out = f(x) elementwise on C-contiguous float32 arrays of the same shape (out may be x); op a PW_ code (not
        PW_ELU_FROM_OUTPUT), p0..p2 its parameters: PW_ELU scale, negcoef, input_scale; PW_SOFTPLUS beta, threshold;
        PW_HARDTANH lo, hi; PW_SOFTSHRINK, PW_HARDSHRINK lambd; PW_THRESHOLD threshold, value; the others none.
        """
        ...
    @staticmethod
    def rrelu_train_forward(x: numpy.ndarray, noise: numpy.ndarray, out: numpy.ndarray) -> None:
        """rrelu in training: noise (x's shape) holds uniform slopes on entry and the slopes used on return (x <= 0 ?
        slope : 1); out = x * noise (out may be x).
        """
        ...

class allocator:
    class HostCachingAllocator:
        """fg::CachingAllocator over malloc, failing beyond limit bytes (limit < 0: none)"""
        def __init__(self, limit: _Int = ..., small_limit: _Int = ..., small_segment: _Int = ...,
                     large_round: _Int = ...) -> None: ...
        def allocate(self, nbytes: _Int) -> int: ...
        def block_size(self, ptr: _Int) -> int: ...
        def empty_cache(self) -> None: ...
        def free(self, ptr: _Int) -> None: ...
        @property
        def raw_failures(self) -> int: ...
        @property
        def raw_outstanding(self) -> int: ...
        def reset_peak(self) -> None: ...
        def stats(self) -> dict: ...
        def stress(self, threads: _Int, iterations: _Int, max_bytes: _Int, seed: _Int = ...) -> int: ...
    class OutOfMemoryError(MemoryError): ...
    ROUND: int
    @staticmethod
    def round_size(nbytes: _Int) -> int: ...

class attention:
    @staticmethod
    def attention_backward(q: numpy.ndarray, k: numpy.ndarray, v: numpy.ndarray, out: numpy.ndarray,
                           grad_out: numpy.ndarray, lse: numpy.ndarray, scale: _Float, causal: bool, mask: object,
                           mask_offsets: object, mask_row_stride: _Int, dq: numpy.ndarray, dk: numpy.ndarray,
                           dv: numpy.ndarray, softcap: _Float = ...) -> None:
        """Fills dq, dk, dv of attention_forward from grad_out, recomputing the scores tile by tile. softcap: the
        forward's (0: none); the gradient then goes through softcap * tanh(s / softcap).
        """
        ...
    @staticmethod
    def attention_backward_packed(split: numpy.ndarray, out: numpy.ndarray, grad_out: numpy.ndarray, lse: numpy.ndarray,
                                  heads: _Int, scale: _Float, dqkv: numpy.ndarray) -> None:
        """Fills dqkv (B, T, 3C), laid out as qkv, with the gradient of attention_forward_packed for grad_out (B, T,
        C), from forward's split, out and lse.
        """
        ...
    @staticmethod
    def attention_forward(q: numpy.ndarray, k: numpy.ndarray, v: numpy.ndarray, scale: _Float, causal: bool,
                          mask: object, mask_offsets: object, mask_row_stride: _Int, out: numpy.ndarray,
                          lse: numpy.ndarray, softcap: _Float = ...) -> None:
        """out = softmax(q k^T * scale + mask) v for q (N, L, E), k (N, S, E), v (N, S, Ev), without storing the
        scores; lse (N, L) gets the row logsumexp. causal: query r sees keys c <= r. mask: None or a float32 array
        whose element (n, r, c) is mask[mask_offsets[n] + r * mask_row_stride + c]. softcap > 0: each scaled score s
        becomes softcap * tanh(s / softcap) before the mask (attention_backward takes the same softcap).
        """
        ...
    @staticmethod
    def attention_forward_packed(qkv: numpy.ndarray, heads: _Int, scale: _Float, out: numpy.ndarray, lse: numpy.ndarray,
                                 split: numpy.ndarray) -> None:
        """Causal self-attention on a packed projection qkv (B, T, 3C) = [q | k | v], each C = heads x D columns head
        by head: split (3, B x heads, T, D) gets q, k, v per head (what backward reads), out (B, T, C) the heads'
        outputs side by side (head-merged), lse (B x heads, T) the row logsumexp.
        """
        ...
    @staticmethod
    def backward_splits(pairs: _Int, keys: _Int, threads: _Int) -> bool:
        """Whether attention_backward at `threads` threads splits each of `pairs` (batch, head) pairs over its key
        blocks and query tiles (few pairs) rather than running whole pairs per thread; both give the same bits.
        """
        ...
    @staticmethod
    def paged_decode(q: numpy.ndarray, k_pool: numpy.ndarray, v_pool: numpy.ndarray, tables: numpy.ndarray,
                     lengths: numpy.ndarray, scale: _Float, softcap: _Float, window: _Int, out: numpy.ndarray,
                     bias: object = ...) -> None:
        """Decode attention over a paged KV cache: out (B, Hkv, rep, D) = softmax(q k^T * scale) v of the query rows q
        (B, Hkv, rep, D) against row b's first lengths[b] keys and values, position p read from block tables[b, p //
        BT], place p % BT of k_pool and v_pool (blocks, Hkv, BT, D). window > 0: only a row's last window keys;
        softcap > 0: each scaled score s becomes softcap * tanh(s / softcap). bias: None or a float32 (Hkv * rep,
        distances) table: query head h * rep + r's score against position p then gains bias[h * rep + r,
        min(lengths[b] - 1 - p, distances - 1)] (T5's relative-position bias; past the table, its last column). The
        same bits at any thread count.
        """
        ...
    @staticmethod
    def small_path(L: _Int, S: _Int, softcap: _Float = ...) -> bool:
        """Whether attention of L queries over S keys (softcap: 0 for none) runs on the whole-row kernels for short
        sequences (every query and key count <= kAttnSmallLen, no soft cap) rather than the flash-tiled ones.
        """
        ...

class batchnorm:
    @staticmethod
    def batch_norm_backward(input: numpy.ndarray, grad_output: numpy.ndarray, weight: object, save_mean: numpy.ndarray,
                            save_invstd: numpy.ndarray, training: bool, grad_input: object, grad_weight: object,
                            grad_bias: object) -> None: ...
    @staticmethod
    def batch_norm_forward(input: numpy.ndarray, weight: object, bias: object, running_mean: object,
                           running_var: object, training: bool, momentum: _Float, eps: _Float, out: numpy.ndarray,
                           save_mean: numpy.ndarray, save_invstd: numpy.ndarray) -> None: ...

class bf16:
    @staticmethod
    def gemm(a: object, b: object, trans_a: bool = ..., trans_b: bool = ..., bias: object = ...) -> numpy.ndarray:
        """out = op(a) op(b) + bias: a (M, K) or (K, M) with trans_a, b (K, N) or (N, K) with trans_b, each 2-D or 3-D
        (batch, ...; a 2-D one is shared by the batch), bias (N) or None; bfloat16 (or uint16 bit pattern) arrays
        in, the float32 result rounded once to uint16 bit patterns out. The vdpbf16ps kernel where gemm_path() is
        'avx512_bf16' (denormal bfloat16 inputs and products flushed; the same bits at any thread count), else the
        widened operands through the float32 sgemm.
        """
        ...
    @staticmethod
    def gemm_path() -> str:
        """The path linear and gemm take now: 'avx512_bf16' (vdpbf16ps; the CPU has AVX512_BF16 and the SIMD path is
        avx512) or 'float32' (the operands widened, float32 kernels).
        """
        ...
    @staticmethod
    def linear(x: object, w: object, bias: object) -> numpy.ndarray:
        """y (M, N) = x (M, K) w (N, K)^T + bias (N or None), bfloat16 (or uint16 bit pattern) arrays in, uint16 bit
        patterns out, the float32 result rounded once to nearest even: the vdpbf16ps GEMM where gemm_path() is
        'avx512_bf16' and M >= 8, else the float32 Linear of the exactly widened operands.
        """
        ...
    @staticmethod
    def round_from_float32(src: object, out: object) -> None:
        """out[i] = src[i] (float32) rounded to bfloat16, to nearest even (a NaN: the quiet NaN of its sign, as
        ml_dtypes); out a bfloat16 or uint16 array of src's length. Threads over large arrays; the same bits on
        every ISA and thread count.
        """
        ...
    @staticmethod
    def set_gemm_native(allow: bool) -> None:
        """allow=False keeps linear and gemm on the 'float32' path even where vdpbf16ps runs (A/B comparisons); True
        (the default) takes the best path the SIMD setting allows.
        """
        ...
    @staticmethod
    def widen_to_float32(src: object, out: object) -> None:
        """out[i] = src[i] (bfloat16, or its uint16 bit pattern) as float32, exactly."""
        ...

class conv:
    class PackedConvWeight:
        """A conv weight's Winograd transform made once (a snapshot); pass it to conv2d_forward with that weight."""
        def __init__(self, weight: numpy.ndarray, groups: _Int = ...) -> None: ...
        @property
        def groups(self) -> int: ...
        @property
        def nbytes(self) -> int: ...
        @property
        def source(self) -> object: ...
    @staticmethod
    def conv2d_backward_input(grad_output: numpy.ndarray, weight: numpy.ndarray, grad_input: numpy.ndarray,
                              stride: tuple[_Int, _Int], padding: tuple[_Int, _Int, _Int, _Int],
                              dilation: tuple[_Int, _Int], groups: _Int) -> None:
        """grad_input (overwritten) of conv2d."""
        ...
    @staticmethod
    def conv2d_backward_weight(input: numpy.ndarray, grad_output: numpy.ndarray, grad_weight: object, grad_bias: object,
                               weight_shape: collections.abc.Sequence[_Int], stride: tuple[_Int, _Int],
                               padding: tuple[_Int, _Int, _Int, _Int], dilation: tuple[_Int, _Int],
                               groups: _Int) -> None:
        """grad_weight and grad_bias (either may be None; overwritten) of conv2d."""
        ...
    @staticmethod
    def conv2d_forward(input: numpy.ndarray, weight: numpy.ndarray, bias: object, out: numpy.ndarray,
                       stride: tuple[_Int, _Int], padding: tuple[_Int, _Int, _Int, _Int], dilation: tuple[_Int, _Int],
                       groups: _Int, activation: _Int = ..., alpha: _Float = ..., max_pool2x2: bool = ...,
                       packed: conv.PackedConvWeight = ...) -> None:
        """out = act(conv2d(input, weight) + bias); padding is (top, bottom, left, right); activation an activation
        code (-1: none), applied to each block of out as it is written; alpha: leaky_relu's slope. max_pool2x2: out
        is the 2x2 / stride 2 max pool (floor) of that, (N, OC, OH // 2, OW // 2), pooled block by block (the full-
        size output is never stored). packed: a PackedConvWeight of weight (the Winograd path then skips the
        kernels' transform).
        """
        ...
    @staticmethod
    def conv2d_forward_implicit(input: numpy.ndarray, weight: numpy.ndarray, bias: object, out: numpy.ndarray,
                                stride: tuple[_Int, _Int], padding: tuple[_Int, _Int, _Int, _Int],
                                dilation: tuple[_Int, _Int], groups: _Int, activation: _Int = ...,
                                alpha: _Float = ...) -> None:
        """conv2d_forward's implicit-GEMM path on any geometry (B panels gathered from the image, no im2col): out =
        act(conv2d(input, weight) + bias), the bits conv2d_forward gives where it routes a shape there.
        """
        ...
    @staticmethod
    def conv2d_forward_ocv(input: numpy.ndarray, weight: numpy.ndarray, bias: object, out: numpy.ndarray,
                           stride: tuple[_Int, _Int], padding: tuple[_Int, _Int, _Int, _Int],
                           dilation: tuple[_Int, _Int], groups: _Int, activation: _Int = ...,
                           alpha: _Float = ...) -> None:
        """conv2d_forward's direct path with output channels along the vector lanes (AVX-512; output channels per group
        a multiple of 16, column stride <= 2; the implicit-GEMM path otherwise), on any geometry: out =
        act(conv2d(input, weight) + bias), the bits conv2d_forward gives where it routes a shape there.
        """
        ...
    @staticmethod
    def conv_taps_gather(out: numpy.ndarray, cols: numpy.ndarray) -> None:
        """cols (overwritten) from out: conv_taps_scatter's reverse copy."""
        ...
    @staticmethod
    def conv_taps_scatter(cols: numpy.ndarray, out: numpy.ndarray) -> None:
        """out (B, D * KD, H * KH, W * KW) (overwritten) = cols (B, KD, KH, KW, D, H, W) with each tap's plane
        interleaved: out[b, d * KD + a, h * KH + e, w * KW + c] = cols[b, a, e, c, d, h, w] (a transposed conv whose
        kernel equals its stride).
        """
        ...
    @staticmethod
    def geometry(input_shape: collections.abc.Sequence[_Int], weight_shape: collections.abc.Sequence[_Int],
                 stride: tuple[_Int, _Int], padding: object, dilation: tuple[_Int, _Int], groups: _Int,
                 op: str = ...) -> tuple[tuple[int, int, int, int], list[int]]:
        """Validated conv2d geometry: ((top, bottom, left, right), (N, OC, OH, OW))."""
        ...
    @staticmethod
    def resolve_padding(padding: object, kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int] = ...,
                        dilation: tuple[_Int, _Int] = ..., input_size: tuple[_Int, _Int] | None = ...,
                        keras: bool = ..., op: str = ...) -> object:
        """padding (int, pair, (top, bottom, left, right), 'valid', 'same'; keras=True: Keras' 'valid' / 'same', which
        needs input_size (H, W) and otherwise only validates, returning None) -> (top, bottom, left, right). Raises
        ValueError / TypeError naming the argument, prefixed by op.
        """
        ...
    @staticmethod
    def weight_shape(in_channels: _Int, out_channels: _Int, kernel_size: tuple[_Int, _Int], groups: _Int,
                     op: str = ...) -> list[int]:
        """(out_channels, in_channels / groups, kH, kW), checking the channels against groups."""
        ...

class ctc:
    @staticmethod
    def backward(log_probs: numpy.ndarray, targets: numpy.ndarray, input_lengths: numpy.ndarray,
                 target_lengths: numpy.ndarray, blank: _Int, nll: numpy.ndarray, alpha: numpy.ndarray,
                 grad_nll: numpy.ndarray, zero_infinity: bool) -> numpy.ndarray:
        """d (sum_b grad_nll[b] * nll[b]) / d log_probs, (T, N, C) in log_probs' dtype; 0 past each input length, and
        for every step of a sample whose nll is inf when zero_infinity.
        """
        ...
    @staticmethod
    def forward(log_probs: numpy.ndarray, targets: numpy.ndarray, input_lengths: numpy.ndarray,
                target_lengths: numpy.ndarray, blank: _Int, keep_alpha: bool) -> tuple:
        """CTC negative log-likelihood per sample: returns (nll float64 (N,), alpha float64 1-D or None). alpha (the
        log-space forward variables, sample after sample) is what backward needs.
        """
        ...

class cuda:
    built: bool
    @staticmethod
    def device_count() -> int: ...
    @staticmethod
    def unavailable_reason() -> str: ...
    # CUDA build only (cpp/bindings/bind_cuda.cpp), written by hand and kept by tools/gen_c_stub.py
    class DeviceArray:
        """A contiguous row-major array in GPU memory (storage of tensors on cuda)"""
        def __array__(self, *args, **kwargs) -> object: ...
        def __init__(self, shape: collections.abc.Sequence[_Int], dtype: object = ..., device: _Int = ...) -> None: ...
        def __len__(self) -> int: ...
        def copy_(self, src: cuda.DeviceArray) -> None: ...
        @property
        def data_ptr(self) -> int: ...
        @property
        def device(self) -> int: ...
        @property
        def dtype(self) -> numpy.dtype: ...
        def fill(self, value: _Float) -> None: ...
        @staticmethod
        def from_numpy(array: numpy.ndarray, device: _Int = ...) -> cuda.DeviceArray: ...
        @property
        def itemsize(self) -> int: ...
        @property
        def nbytes(self) -> int: ...
        @property
        def ndim(self) -> int: ...
        def numpy(self) -> numpy.ndarray: ...
        def reshape(self, *args) -> cuda.DeviceArray: ...
        @property
        def shape(self) -> tuple: ...
        def shares_storage(self, other: cuda.DeviceArray) -> bool: ...
        @property
        def size(self) -> int: ...
    @staticmethod
    def _fault_for_tests() -> None:
        """launches a kernel that faults (tests of error reporting only: the process's CUDA context is lost)"""
        ...
    @staticmethod
    def adam_step(arg0: cuda.DeviceArray, arg1: cuda.DeviceArray, arg2: cuda.DeviceArray, arg3: cuda.DeviceArray,
                  arg4: _Float, arg5: _Float, arg6: _Float, arg7: _Float, arg8: _Float, arg9: bool, arg10: _Float,
                  arg11: _Float) -> None:
        """param, grad, exp_avg, exp_avg_sq; lr, beta1, beta2, eps, weight_decay, decoupled; bias_correction1,
        sqrt(bias_correction2): one Adam (AdamW when decoupled) step in place (forgegrad.cuda.adam_step)."""
        ...
    @staticmethod
    def cast(src: cuda.DeviceArray, dtype: object) -> cuda.DeviceArray: ...
    @staticmethod
    def cat(arrays: collections.abc.Sequence[cuda.DeviceArray], axis: _Int = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def current_device() -> int: ...
    @staticmethod
    def empty_cache(device: _Int = ...) -> None: ...
    @staticmethod
    def launch_blocking() -> bool: ...
    @staticmethod
    def memory_stats(device: _Int = ...) -> dict: ...
    @staticmethod
    def relu_backward(arg0: cuda.DeviceArray, arg1: cuda.DeviceArray, arg2: cuda.DeviceArray) -> None:
        """y, grad_y, grad_x (written)."""
        ...
    @staticmethod
    def relu_forward(arg0: cuda.DeviceArray, arg1: cuda.DeviceArray) -> None:
        """x, y (written)."""
        ...
    @staticmethod
    def reset_peak_memory_stats(device: _Int = ...) -> None: ...
    @staticmethod
    def set_device(device: _Int) -> None: ...
    @staticmethod
    def sgemm(a: cuda.DeviceArray, b: cuda.DeviceArray, out: cuda.DeviceArray, trans_a: bool = ..., trans_b: bool = ...,
              alpha: _Float = ..., beta: _Float = ...) -> None: ...
    @staticmethod
    def strided_assign(dst: cuda.DeviceArray, shape: collections.abc.Sequence[_Int],
                       strides: collections.abc.Sequence[_Int], offset: _Int, src: cuda.DeviceArray) -> None: ...
    @staticmethod
    def strided_copy(src: cuda.DeviceArray, shape: collections.abc.Sequence[_Int],
                     strides: collections.abc.Sequence[_Int], offset: _Int = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def sum_to_shape(src: cuda.DeviceArray, shape: collections.abc.Sequence[_Int]) -> cuda.DeviceArray: ...
    @staticmethod
    def synchronize(device: _Int = ...) -> None: ...
    # end of CUDA build only

class cuda_gemm:
    @staticmethod
    def adaptive_avg_pool2d_backward(grad_output: object, input_shape: collections.abc.Sequence[_Int]) -> object:
        """grad_input of adaptive_avg_pool2d."""
        ...
    @staticmethod
    def adaptive_avg_pool2d_forward(input: object, output_size: tuple[_Int, _Int]) -> object:
        """adaptive_avg_pool2d to output_size (oh, ow) -> new DeviceArray."""
        ...
    @staticmethod
    def avg_pool2d_backward(grad_output: object, input_shape: collections.abc.Sequence[_Int],
                            kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int], padding: tuple[_Int, _Int],
                            ceil_mode: bool, count_include_pad: bool, divisor_override: _Int) -> object:
        """grad_input of avg_pool2d."""
        ...
    @staticmethod
    def avg_pool2d_forward(input: object, kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int],
                           padding: tuple[_Int, _Int], ceil_mode: bool, count_include_pad: bool,
                           divisor_override: _Int) -> object:
        """avg_pool2d (divisor_override 0: none) -> new DeviceArray."""
        ...
    built: bool
    @staticmethod
    def conv2d_backward(input: object, weight: object, grad_output: object, stride: tuple[_Int, _Int],
                        padding: tuple[_Int, _Int, _Int, _Int], dilation: tuple[_Int, _Int], groups: _Int,
                        need_input: bool, need_weight: bool, need_bias: bool) -> object:
        """(grad_input, grad_weight, grad_bias); entries not needed are None."""
        ...
    @staticmethod
    def conv2d_forward(input: object, weight: object, bias: object, stride: tuple[_Int, _Int],
                       padding: tuple[_Int, _Int, _Int, _Int], dilation: tuple[_Int, _Int], groups: _Int) -> object:
        """conv2d (NCHW; padding as (top, bottom, left, right)) -> new DeviceArray."""
        ...
    @staticmethod
    def linear(input: object, weight: object, bias: object = ..., allow_tf32: bool = ...) -> object:
        """input @ weight.T + bias -> new DeviceArray."""
        ...
    @staticmethod
    def linear_backward(input: object, weight: object, grad_output: object, need_input: bool, need_weight: bool,
                        need_bias: bool, allow_tf32: bool = ...) -> object:
        """(grad_input, grad_weight, grad_bias) of linear; entries not needed are None."""
        ...
    @staticmethod
    def matmul(a: object, b: object, allow_tf32: bool = ...) -> object:
        """a @ b with torch.matmul's shape rules (1-D promotion, broadcast batches) -> new DeviceArray."""
        ...
    @staticmethod
    def matmul_backward(a: object, b: object, grad_output: object, need_a: bool, need_b: bool,
                        allow_tf32: bool = ...) -> object:
        """(grad_a, grad_b) of matmul; an entry not needed is None. Broadcast batches are summed."""
        ...
    @staticmethod
    def max_pool2d_backward(grad_output: object, indices: object, input_shape: collections.abc.Sequence[_Int],
                            kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int], padding: tuple[_Int, _Int],
                            dilation: tuple[_Int, _Int], ceil_mode: bool) -> object:
        """grad_input of max_pool2d (a gather over the windows: no atomics)."""
        ...
    @staticmethod
    def max_pool2d_forward(input: object, kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int],
                           padding: tuple[_Int, _Int], dilation: tuple[_Int, _Int], ceil_mode: bool) -> object:
        """(values, int64 indices h * W + w in each plane) of max_pool2d -> new DeviceArrays."""
        ...

class cuda_nn:
    # CUDA build only (_C.cuda_nn), written by tools/gen_c_stub.py from a CUDA build
    @staticmethod
    def arg_reduce(is_max: bool, x: cuda.DeviceArray, axis: _Int | None = ..., keepdim: bool = ...) -> tuple:
        """(int64 index, values) of the first max / min"""
        ...
    @staticmethod
    def attention_backward(g: cuda.DeviceArray, q: cuda.DeviceArray, k: cuda.DeviceArray, v: cuda.DeviceArray,
                           out: cuda.DeviceArray, lse: cuda.DeviceArray, mask: cuda.DeviceArray | None, scale: _Float,
                           causal: bool) -> tuple:
        """(dq, dk, dv)"""
        ...
    @staticmethod
    def attention_forward(q: cuda.DeviceArray, k: cuda.DeviceArray, v: cuda.DeviceArray, mask: cuda.DeviceArray | None,
                          scale: _Float, causal: bool) -> tuple:
        """(out, lse)"""
        ...
    @staticmethod
    def attention_mask_grad(g: cuda.DeviceArray, q: cuda.DeviceArray, k: cuda.DeviceArray, v: cuda.DeviceArray,
                            out: cuda.DeviceArray, lse: cuda.DeviceArray, mask: cuda.DeviceArray | None, scale: _Float,
                            causal: bool) -> cuda.DeviceArray:
        """the [B, L, S] score gradient (an additive mask's, before summing to its shape)"""
        ...
    @staticmethod
    def batch_norm_backward(g: cuda.DeviceArray, x: cuda.DeviceArray, weight: cuda.DeviceArray | None,
                            mean: cuda.DeviceArray, invstd: cuda.DeviceArray, training: bool,
                            need: tuple[bool, bool, bool] = ...) -> tuple: ...
    @staticmethod
    def batch_norm_forward(x: cuda.DeviceArray, weight: cuda.DeviceArray | None, bias: cuda.DeviceArray | None,
                           running_mean: cuda.DeviceArray | None, running_var: cuda.DeviceArray | None, training: bool,
                           momentum: _Float = ..., eps: _Float = ...) -> tuple:
        """(y, save_mean, save_invstd); running stats updated in place when training"""
        ...
    @staticmethod
    def compare(op: str, a: object, b: object) -> cuda.DeviceArray: ...
    @staticmethod
    def cross_entropy_backward(prob: cuda.DeviceArray, target: cuda.DeviceArray, weight: cuda.DeviceArray | None,
                               g: cuda.DeviceArray, denom: cuda.DeviceArray | None, ignore_index: _Int = ...,
                               label_smoothing: _Float = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def cross_entropy_forward(logits: cuda.DeviceArray, target: cuda.DeviceArray, weight: cuda.DeviceArray | None = ...,
                              ignore_index: _Int = ..., label_smoothing: _Float = ...) -> tuple:
        """(prob, per-row loss, per-row target weight)"""
        ...
    @staticmethod
    def embedding_backward(g: cuda.DeviceArray, indices: cuda.DeviceArray, num_weights: _Int,
                           padding_idx: _Int = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def embedding_forward(weight: cuda.DeviceArray, indices: cuda.DeviceArray) -> cuda.DeviceArray: ...
    @staticmethod
    def layer_norm_backward(g: cuda.DeviceArray, x: cuda.DeviceArray, mean: cuda.DeviceArray | None,
                            rstd: cuda.DeviceArray, weight: cuda.DeviceArray | None, normalized_ndim: _Int,
                            need: tuple[bool, bool, bool] = ..., rms: bool = ...) -> tuple: ...
    @staticmethod
    def layer_norm_forward(x: cuda.DeviceArray, normalized_ndim: _Int, weight: cuda.DeviceArray | None,
                           bias: cuda.DeviceArray | None, eps: _Float, rms: bool = ...) -> tuple:
        """(y, mean or None for rms, rstd)"""
        ...
    @staticmethod
    def nll_backward(shape: collections.abc.Sequence[_Int], target: cuda.DeviceArray, weight: cuda.DeviceArray | None,
                     g: cuda.DeviceArray, denom: cuda.DeviceArray | None,
                     ignore_index: _Int = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def nll_forward(logp: cuda.DeviceArray, target: cuda.DeviceArray, weight: cuda.DeviceArray | None = ...,
                    ignore_index: _Int = ...) -> tuple: ...
    @staticmethod
    def pointwise(op: str, inputs: list, alpha: _Float = ...,
                  shape: collections.abc.Sequence[_Int] | None = ...) -> cuda.DeviceArray:
        """op over broadcast inputs (DeviceArrays, numbers, None); the output has `shape` when given, else the inputs'
        broadcast shape; see cuda_nn.h for the ops
        """
        ...
    @staticmethod
    def reduce(op: str, x: cuda.DeviceArray, axes: collections.abc.Sequence[_Int] | None = ..., keepdim: bool = ...,
               scale: _Float = ..., sqrt: bool = ..., center: cuda.DeviceArray | None = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def scatter_axis(g: cuda.DeviceArray, index: cuda.DeviceArray, shape: collections.abc.Sequence[_Int],
                     axis: _Int) -> cuda.DeviceArray: ...
    @staticmethod
    def softmax(x: cuda.DeviceArray, axis: _Int = ..., log: bool = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def softmax_backward(y: cuda.DeviceArray, g: cuda.DeviceArray, axis: _Int = ...,
                         log: bool = ...) -> cuda.DeviceArray: ...
    @staticmethod
    def sum_to(g: cuda.DeviceArray, shape: collections.abc.Sequence[_Int]) -> cuda.DeviceArray: ...
    @staticmethod
    def where(cond: cuda.DeviceArray, a: object, b: object) -> cuda.DeviceArray: ...
    # end of CUDA build only

class cuda_pointwise:
    @staticmethod
    def act_backward(op: _Int, grad: object, saved: object, out: object, alpha: _Float = ...) -> None:
        """out = grad * act'(saved); saved = y (relu, sigmoid, tanh) or x (the others)"""
        ...
    @staticmethod
    def act_forward(op: _Int, x: object, out: object, alpha: _Float = ...) -> None:
        """out = act(x) on device arrays; op is a forgegrad._C.activation code (RELU, ...)"""
        ...
    @staticmethod
    def adam_step(params: collections.abc.Sequence[object], grads: collections.abc.Sequence[object],
                  exp_avgs: collections.abc.Sequence[object], exp_avg_sqs: collections.abc.Sequence[object],
                  max_exp_avg_sqs: collections.abc.Sequence[object] | None,
                  step_sizes: collections.abc.Sequence[_Float],
                  bias_correction2_sqrts: collections.abc.Sequence[_Float], *, beta1: _Float, beta2: _Float,
                  eps: _Float, lr: _Float, weight_decay: _Float, decoupled: bool, maximize: bool) -> None:
        """One Adam/AdamW step of every device parameter in one kernel launch (forgegrad._C.optim.adam_step's
        contract).
        """
        ...
    built: bool
    @staticmethod
    def gru_cell_backward(gates: object, hn: object, h_prev: object, dh: object, gy: object, d_input: object,
                          d_hidden: object, dh_direct: object) -> None: ...
    @staticmethod
    def gru_cell_forward(xg: object, hp: object, h_prev: object, h_out: object, hn_save: object) -> None: ...
    @staticmethod
    def lstm_cell_backward(gates: object, c: object, c_prev: object, dh: object, gy: object, dc: object,
                           d_pre: object) -> None: ...
    @staticmethod
    def lstm_cell_forward(gates: object, c_prev: object, c_out: object, h_out: object) -> None: ...
    @staticmethod
    def rnn_backward(mode: _Int, x: object, h0: object, c0: object, w_ih: object, w_hh: object, y: object,
                     gates: object, cells: object, hn_lin: object, grad_y: object, grad_hn: object, grad_cn: object,
                     gx: object, gh0: object, gc0: object, gw_ih: object, gw_hh: object, gb_ih: object, gb_hh: object,
                     reverse: bool) -> None:
        """Backward through time on device arrays (the contract of forgegrad._C.rnn.backward)."""
        ...
    @staticmethod
    def rnn_forward(mode: _Int, x: object, h0: object, c0: object, w_ih: object, w_hh: object, b_ih: object,
                    b_hh: object, y: object, h_n: object, c_n: object, gates: object, cells: object, hn_lin: object,
                    reverse: bool) -> None:
        """One recurrent layer on device arrays (the contract of forgegrad._C.rnn.forward)."""
        ...
    @staticmethod
    def sgd_step(params: collections.abc.Sequence[object], grads: collections.abc.Sequence[object],
                 momentum_buffers: collections.abc.Sequence[object] | None,
                 init_buffers: collections.abc.Sequence[bool], *, lr: _Float, momentum: _Float, dampening: _Float,
                 weight_decay: _Float, nesterov: bool, maximize: bool) -> None:
        """One SGD step of every device parameter in one kernel launch (forgegrad._C.optim.sgd_step's contract)."""
        ...

class embedding:
    @staticmethod
    def embedding_backward(grad: numpy.ndarray, indices: numpy.ndarray, padding_idx: _Int,
                           grad_weight: numpy.ndarray) -> None:
        """grad_weight[v] = sum of grad[p] over the positions p with indices[p] == v, added in ascending p (the same
        bits at any thread count); row padding_idx (-1: none) gets 0. grad (n, D), indices (n,) int64.
        """
        ...

class embedding_bag:
    @staticmethod
    def backward_f32(grad: numpy.ndarray, indices: numpy.ndarray, bag_starts: numpy.ndarray, per_sample_weights: object,
                     mean: bool, freq: object, padding_idx: _Int, grad_weight: numpy.ndarray) -> None:
        """grad_weight (V, D) of mode sum (mean=False) or mean: row v sums grad[bag of p] times per_sample_weights[p]
        (or None), 1 / the bag's count (mean) and 1 / freq[v] (freq (V,) int64 or None) over the kept positions p of
        row v in ascending order. Bit-identical for any thread count.
        """
        ...
    @staticmethod
    def forward_f32(weight: numpy.ndarray, indices: numpy.ndarray, bag_starts: numpy.ndarray,
                    per_sample_weights: object, mode: _Int, padding_idx: _Int, out: numpy.ndarray,
                    counts: numpy.ndarray, arg: object) -> None:
        """out (B, D) = each bag's rows of float32 weight (V, D) summed (mode 0, times per_sample_weights (n,) or
        None), averaged (1) or maximised (2); bag b holds indices[bag_starts[b]:bag_starts[b + 1]] less the
        padding_idx entries (-1: none); counts (B,) int64 = the entries kept; arg (B, D) int64 (mode 2, else None) =
        the first position of each maximum (a NaN only as a bag's first kept entry, as torch's), -1 for an empty
        bag. Empty bags give 0. Sums in float64. Bit-identical for any thread count.
        """
        ...
    @staticmethod
    def max_backward_f32(grad: numpy.ndarray, arg: numpy.ndarray, indices: numpy.ndarray,
                         grad_weight: numpy.ndarray) -> None:
        """grad_weight (V, D) of mode max: grad[b, c] added to grad_weight[indices[arg[b, c]], c] (arg -1: none), bags
        in ascending order. Bit-identical for any thread count.
        """
        ...
    @staticmethod
    def psw_backward_f32(grad: numpy.ndarray, weight: numpy.ndarray, indices: numpy.ndarray, bag_starts: numpy.ndarray,
                         padding_idx: _Int, grad_psw: numpy.ndarray) -> None:
        """grad_psw (n,) = dot(grad[bag of p], weight[indices[p]]) (float64 partial sums), 0 at padding_idx entries.
        Bit-identical for any thread count.
        """
        ...

class float64:
    """float64 kernels of a training step: Adam, conv2d's im2col / col2im, the LSTM cell, relu"""
    @staticmethod
    def adam_step(params: collections.abc.Sequence[numpy.ndarray], grads: collections.abc.Sequence[numpy.ndarray],
                  exp_avgs: collections.abc.Sequence[numpy.ndarray],
                  exp_avg_sqs: collections.abc.Sequence[numpy.ndarray],
                  max_exp_avg_sqs: collections.abc.Sequence[numpy.ndarray] | None,
                  step_sizes: collections.abc.Sequence[_Float],
                  bias_correction2_sqrts: collections.abc.Sequence[_Float], *, beta1: _Float, beta2: _Float,
                  eps: _Float, lr: _Float, weight_decay: _Float, decoupled: bool, maximize: bool) -> None:
        """In-place float64 Adam/AdamW update (torch's single-tensor float64 math); arguments as _C.optim.adam_step."""
        ...
    @staticmethod
    def col2im(cols: numpy.ndarray, grad_input: numpy.ndarray, kernel_size: tuple[_Int, _Int],
               stride: tuple[_Int, _Int], padding: tuple[_Int, _Int], dilation: tuple[_Int, _Int], out_h: _Int,
               out_w: _Int) -> None:
        """grad_input (N, C, H, W) = im2col's adjoint applied to cols (taps in a fixed order per plane)."""
        ...
    @staticmethod
    def im2col(input: numpy.ndarray, cols: numpy.ndarray, kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int],
               padding: tuple[_Int, _Int], dilation: tuple[_Int, _Int], out_h: _Int, out_w: _Int) -> None:
        """cols (C*KH*KW, N*OH*OW) of float64 input (N, C, H, W): rows (c, kh, kw), columns (n, oh, ow)."""
        ...
    @staticmethod
    def lstm_cell_backward(act: numpy.ndarray, c_prev: numpy.ndarray, tanh_c: numpy.ndarray, dh: numpy.ndarray,
                           dc: numpy.ndarray, d_gates: numpy.ndarray) -> None:
        """Its backward: d_gates (B, 4H) from dh and dc (B, H); dc is replaced by the gradient for c_prev."""
        ...
    @staticmethod
    def lstm_cell_forward(gates: numpy.ndarray, c_prev: numpy.ndarray, act: numpy.ndarray, c: numpy.ndarray,
                          tanh_c: numpy.ndarray, h: numpy.ndarray) -> None:
        """One LSTM step's pointwise part: pre-activations gates (B, 4H) and c_prev (B, H) -> act (sigmoid i, f, o;
        tanh g), c, tanh(c), h.
        """
        ...
    @staticmethod
    def relu(input: numpy.ndarray, out: numpy.ndarray) -> None:
        """out = relu(input), float64 (NaN kept); out may be input."""
        ...
    @staticmethod
    def relu_backward(grad_output: numpy.ndarray, output: numpy.ndarray, grad_input: numpy.ndarray) -> None:
        """grad_input = output <= 0 ? 0 : grad_output (torch's threshold_backward); grad_input may be grad_output."""
        ...

class gemm:
    class PackedWeight:
        """A linear weight packed once for the GEMM (a snapshot); pass it to linear() with it."""
        def __init__(self, weight: object) -> None: ...
        @property
        def nbytes(self) -> int: ...
        @property
        def shape(self) -> tuple[int, int]: ...
        @property
        def source(self) -> object: ...
    @staticmethod
    def bmm(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray, trans_a: bool = ..., trans_b: bool = ...,
            alpha: _Float = ..., beta: _Float = ...) -> None:
        """out[i] = alpha * op(a[i]) @ op(b[i]) + beta * out[i] on float32 3-D arrays; a batch stride of 0 broadcasts
        (rows may be strided).
        """
        ...
    @staticmethod
    def bmm_plain(a: object, b: object, out: object = ...) -> object:
        """a @ b for 3-D float32 stacks of one batch size readable in place (see forgegrad.kernels.bmm); returns out
        (allocated when None), or None when the inputs need the general path.
        """
        ...
    @staticmethod
    def linear(x: object, weight: object, bias: object = ..., activation: _Int = ..., alpha: _Float = ...,
               packed: gemm.PackedWeight = ...) -> numpy.ndarray:
        """act(x @ weight.T + bias) for x (..., in_features) float32, weight (out_features, in_features), bias
        (out_features,) or None, activation an activation code (-1: none; alpha: leaky_relu's slope), packed a
        PackedWeight of this weight array or None (same result, without packing the weight); returns a new (...,
        out_features) array.
        """
        ...
    @staticmethod
    def linear_backward(grad: object, x: object, weight: object, need_x: bool = ..., need_weight: bool = ...,
                        need_bias: bool = ...) -> tuple:
        """(gx, gw, gb) of x @ weight.T + bias for grad (..., out_features): gx = grad @ weight, gw = grad^T x, gb =
        grad's column sums (each None when not needed); one call, the bias gradient taken while gw's product reads
        grad (the same bits as matmul and column_sums).
        """
        ...
    @staticmethod
    def matmul(a: object, b: object, out: object = ..., trans_a: bool = ..., trans_b: bool = ..., alpha: _Float = ...,
               beta: _Float = ...) -> numpy.ndarray:
        """out = alpha * op(a) @ op(b) + beta * out on 2-D float32 arrays of any layout (see forgegrad.kernels.matmul);
        returns out, allocated when None.
        """
        ...
    @staticmethod
    def sgemm(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray, trans_a: bool = ..., trans_b: bool = ...,
              alpha: _Float = ..., beta: _Float = ..., reference: bool = ...) -> None:
        """out = alpha * op(a) @ op(b) + beta * out on float32 2-D arrays (rows may be strided)."""
        ...

class grid_sample:
    @staticmethod
    def grid_sample2d_backward(grad: numpy.ndarray, x: numpy.ndarray, grid: numpy.ndarray, mode: _Int, padding: _Int,
                               align_corners: bool, grad_x: object, grad_grid: object) -> None:
        """The gradients of grid_sample2d_forward into grad_x (x's shape) and grad_grid (grid's shape), either None to
        skip it; bit-identical for any thread count.
        """
        ...
    @staticmethod
    def grid_sample2d_forward(x: numpy.ndarray, grid: numpy.ndarray, mode: _Int, padding: _Int, align_corners: bool,
                              out: numpy.ndarray) -> None:
        """out (N, C, Ho, Wo) = F.grid_sample(x, grid) for float32 x (N, C, H, W), grid (N, Ho, Wo, 2); mode 0
        bilinear, 1 nearest; padding 0 zeros, 1 border, 2 reflection.
        """
        ...

class groupnorm:
    @staticmethod
    def group_norm_backward(grad: numpy.ndarray, x: numpy.ndarray, mean: numpy.ndarray, rstd: numpy.ndarray,
                            weight: object, grad_x: object, grad_weight: object, grad_bias: object) -> None:
        """Fills grad_x, grad_weight, grad_bias (each None when not needed) of group_norm_forward; the groups are
        mean's second axis.
        """
        ...
    @staticmethod
    def group_norm_forward(x: numpy.ndarray, groups: _Int, weight: object, bias: object, eps: _Float,
                           out: numpy.ndarray, mean: numpy.ndarray, rstd: numpy.ndarray) -> None:
        """out = (x - mean) * rstd * weight[c] + bias[c] over each (n, group) of x (N, C, *), groups dividing C; mean
        and rstd (1 / sqrt(biased var + eps)) are (N, groups). weight / bias: None or (C,).
        """
        ...

class hd_math:
    @staticmethod
    def act_backward(op: _Int, grad: numpy.ndarray, saved: numpy.ndarray,
                     alpha: _Float = ...) -> numpy.typing.NDArray[numpy.float32]:
        """grad * act'(.) from saved = y (relu, sigmoid, tanh) or x (the others)"""
        ...
    @staticmethod
    def act_forward(op: _Int, x: numpy.ndarray, alpha: _Float = ...) -> numpy.typing.NDArray[numpy.float32]:
        """act(x) elementwise; op is a forgegrad._C.activation code (RELU, ...)"""
        ...
    @staticmethod
    def adam_update(param: numpy.ndarray, grad: numpy.ndarray, exp_avg: numpy.ndarray, exp_avg_sq: numpy.ndarray,
                    max_exp_avg_sq: numpy.ndarray | None, *, step: _Float, lr: _Float, beta1: _Float, beta2: _Float,
                    eps: _Float, weight_decay: _Float = ..., decoupled: bool = ..., maximize: bool = ...) -> None:
        """one Adam/AdamW step in place (amsgrad when max_exp_avg_sq is given)"""
        ...
    @staticmethod
    def erf(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...
    @staticmethod
    def exp(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...
    @staticmethod
    def gru_backward(gates: numpy.ndarray, hn: numpy.ndarray, h_prev: numpy.ndarray, dh: numpy.ndarray) -> tuple: ...
    @staticmethod
    def gru_forward(xg: numpy.ndarray, hp: numpy.ndarray, h_prev: numpy.ndarray) -> tuple: ...
    @staticmethod
    def lstm_backward(gates: numpy.ndarray, c: numpy.ndarray, c_prev: numpy.ndarray, dh: numpy.ndarray,
                      dc: numpy.ndarray) -> tuple: ...
    @staticmethod
    def lstm_forward(pre: numpy.ndarray, c_prev: numpy.ndarray) -> tuple: ...
    @staticmethod
    def rnn_backward(h: numpy.ndarray, dh: numpy.ndarray, relu: bool) -> numpy.typing.NDArray[numpy.float32]: ...
    @staticmethod
    def rnn_forward(pre: numpy.ndarray, relu: bool) -> numpy.typing.NDArray[numpy.float32]: ...
    @staticmethod
    def sgd_update(param: numpy.ndarray, grad: numpy.ndarray, momentum_buffer: numpy.ndarray | None, init_buffer: bool,
                   *, lr: _Float, momentum: _Float = ..., dampening: _Float = ..., weight_decay: _Float = ...,
                   nesterov: bool = ..., maximize: bool = ...) -> None:
        """one SGD step in place"""
        ...
    @staticmethod
    def sigmoid(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...
    @staticmethod
    def tanh(x: numpy.ndarray) -> numpy.typing.NDArray[numpy.float32]: ...

class int_math:
    @staticmethod
    def gcd(a: numpy.ndarray, b: numpy.ndarray, out: numpy.ndarray) -> None:
        """out[i] = torch.gcd(a[i], b[i]) for int64 / int32 1-D arrays (a or b of length 1: that number for every i);
        binary GCD, torch's Euclid loop where an operand is the type's MIN.
        """
        ...

class layernorm:
    @staticmethod
    def layer_norm_backward(grad: numpy.ndarray, x: numpy.ndarray, mean: numpy.ndarray, rstd: numpy.ndarray,
                            weight: object, grad_x: object, grad_weight: object, grad_bias: object) -> None:
        """Fills grad_x, grad_weight, grad_bias (each None when not needed) of layer_norm_forward; the normalized axes
        are those of x after mean's shape.
        """
        ...
    @staticmethod
    def layer_norm_forward(x: numpy.ndarray, normalized_ndim: _Int, weight: object, bias: object, eps: _Float,
                           out: numpy.ndarray, mean: numpy.ndarray, rstd: numpy.ndarray) -> None:
        """out = (x - mean) * rstd * weight + bias over the last normalized_ndim axes of x; mean and rstd (1 /
        sqrt(biased var + eps)) get the batch shape (x's leading axes). weight / bias: None or the normalized shape.
        """
        ...
    @staticmethod
    def rms_norm_backward(grad: numpy.ndarray, x: numpy.ndarray, rstd: numpy.ndarray, weight: object, grad_x: object,
                          grad_weight: object) -> None:
        """Fills grad_x and grad_weight (each None when not needed) of rms_norm_forward."""
        ...
    @staticmethod
    def rms_norm_forward(x: numpy.ndarray, normalized_ndim: _Int, weight: object, eps: _Float, out: numpy.ndarray,
                         rstd: numpy.ndarray) -> None:
        """out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) over the last normalized_ndim axes."""
        ...

class loss:
    @staticmethod
    def cross_entropy_backward(prob: numpy.ndarray, target: numpy.ndarray, weight: object, ignore_index: _Int,
                               label_smoothing: _Float, grad_loss: object, grad_scale: _Float,
                               out: numpy.ndarray) -> None:
        """out = d loss / d logits scaled by grad_scale * grad_loss[i] (grad_loss may be None)."""
        ...
    @staticmethod
    def cross_entropy_forward(logits: numpy.ndarray, target: numpy.ndarray, weight: object, ignore_index: _Int,
                              label_smoothing: _Float, prob_out: numpy.ndarray, loss_out: numpy.ndarray) -> tuple:
        """Per-row cross-entropy losses into loss_out and softmax(logits) into prob_out; returns (loss_sum,
        weight_sum).
        """
        ...

class optim:
    @staticmethod
    def adam_step(params: collections.abc.Sequence, grads: collections.abc.Sequence, exp_avgs: collections.abc.Sequence,
                  exp_avg_sqs: collections.abc.Sequence, max_exp_avg_sqs: collections.abc.Sequence | None,
                  step_sizes: collections.abc.Sequence[_Float],
                  bias_correction2_sqrts: collections.abc.Sequence[_Float], *, beta1: _Float, beta2: _Float,
                  eps: _Float, lr: _Float, weight_decay: _Float, decoupled: bool, maximize: bool) -> None:
        """In-place Adam/AdamW update of every (param, grad, exp_avg, exp_avg_sq[, max_exp_avg_sq]) in one fused pass.
        step_sizes[i] = lr / (1 - beta1**step_i), bias_correction2_sqrts[i] = sqrt(1 - beta2**step_i);
        max_exp_avg_sqs=None means no amsgrad.
        """
        ...
    @staticmethod
    def norms(arrays: collections.abc.Sequence, kind: str) -> list[float]:
        """Per-array reductions in double: 'l1' sum|x|, 'l2sq' sum x^2, 'inf' max|x| (NaN if any NaN); bit-identical
        for any thread count.
        """
        ...
    @staticmethod
    def sgd_step(params: collections.abc.Sequence, grads: collections.abc.Sequence,
                 momentum_buffers: collections.abc.Sequence | None, init_buffers: collections.abc.Sequence[bool], *,
                 lr: _Float, momentum: _Float, dampening: _Float, weight_decay: _Float, nesterov: bool,
                 maximize: bool) -> None:
        """In-place SGD update (torch's formulas). init_buffers[i]: the momentum buffer is new and takes the gradient
        (no decay).
        """
        ...

class plan:
    class SequentialPlan:
        """A frozen Sequential's graph-free steps run in one call (see nn.Sequential): add the steps, then run(x)."""
        def __init__(self) -> None: ...
        def __len__(self) -> int: ...
        def add_conv2d(self, parameters: object, stride: tuple[_Int, _Int], padding: tuple[_Int, _Int, _Int, _Int],
                       dilation: tuple[_Int, _Int], groups: _Int, kernel_size: tuple[_Int, _Int],
                       activation: _Int = ..., alpha: _Float = ..., max_pool2x2: bool = ..., ceil_mode: bool = ...,
                       packed: object = ..., hooks: list = ...) -> None: ...
        def add_flatten(self, hooks: list = ...) -> None: ...
        def add_linear(self, parameters: object, activation: _Int = ..., alpha: _Float = ..., packed: object = ...,
                       hooks: list = ...) -> None: ...
        def run(self, x: object) -> object: ...

class pool:
    @staticmethod
    def adaptive_avg_pool2d_backward(grad_output: numpy.ndarray, grad_input: numpy.ndarray) -> None: ...
    @staticmethod
    def adaptive_avg_pool2d_forward(input: numpy.ndarray, out: numpy.ndarray) -> None: ...
    @staticmethod
    def adaptive_max_pool2d_forward(input: numpy.ndarray, out: numpy.ndarray, indices: numpy.ndarray) -> None:
        """out, indices (N, C, OH, OW; their shape gives the output size) = adaptive max pooling of float32 input (N,
        C, H, W): torch's windows, values and int64 indices h * W + w (the first maximum in row-major order, or the
        last NaN). The backward is max_pool2d_backward.
        """
        ...
    @staticmethod
    def avg_pool2d_backward(grad_output: numpy.ndarray, grad_input: numpy.ndarray, kernel_size: tuple[_Int, _Int],
                            stride: tuple[_Int, _Int], padding: tuple[_Int, _Int], ceil_mode: bool,
                            count_include_pad: bool, divisor_override: _Int) -> None: ...
    @staticmethod
    def avg_pool2d_forward(input: numpy.ndarray, out: numpy.ndarray, kernel_size: tuple[_Int, _Int],
                           stride: tuple[_Int, _Int], padding: tuple[_Int, _Int], ceil_mode: bool,
                           count_include_pad: bool, divisor_override: _Int) -> None: ...
    @staticmethod
    def max_pool2d_backward(grad_output: numpy.ndarray, indices: numpy.ndarray, grad_input: numpy.ndarray) -> None: ...
    @staticmethod
    def max_pool2d_forward(input: numpy.ndarray, out: numpy.ndarray, indices: numpy.ndarray | None,
                           kernel_size: tuple[_Int, _Int], stride: tuple[_Int, _Int], padding: tuple[_Int, _Int],
                           dilation: tuple[_Int, _Int], ceil_mode: bool) -> None: ...
    @staticmethod
    def max_pool3d_forward(input: numpy.ndarray, out: numpy.ndarray, indices: numpy.ndarray,
                           kernel_size: tuple[_Int, _Int, _Int], stride: tuple[_Int, _Int, _Int],
                           padding: tuple[_Int, _Int, _Int], dilation: tuple[_Int, _Int, _Int]) -> None:
        """out, indices (N, C, OD, OH, OW; their shape gives the output sizes) = the 3-D max pool of float32 input (N,
        C, D, H, W): torch's values and int64 indices d * H * W + h * W + w per volume (the first maximum in (d, h,
        w) order, or the last NaN); taps outside the volume are skipped.
        """
        ...
    @staticmethod
    def output_shape(input_shape: collections.abc.Sequence[_Int], kernel_size: tuple[_Int, _Int],
                     stride: tuple[_Int, _Int] | None, padding: tuple[_Int, _Int] = ...,
                     dilation: tuple[_Int, _Int] = ..., ceil_mode: bool = ..., op: str = ...) -> list[int]:
        """Validated (N, C, OH, OW) of max / avg pooling (stride None: kernel_size), torch's rules incl. ceil_mode.
        Raises ValueError naming the argument, prefixed by op.
        """
        ...

class quant:
    @staticmethod
    def amx_status() -> str: ...
    @staticmethod
    def avx_vnni_encoding() -> str: ...
    @staticmethod
    def choose_qparams(x: object, reduce_range: bool) -> tuple: ...
    @staticmethod
    def conv2d_f32(x: object, x_scale: _Float, x_zero_point: _Int, packed: object, colsum: object, w_scale: object,
                   bias: object, weight_shape: collections.abc.Sequence[_Int], stride: collections.abc.Sequence[_Int],
                   padding: collections.abc.Sequence[_Int], dilation: collections.abc.Sequence[_Int], out_scale: _Float,
                   out_zero_point: _Int, relu: bool = ...,
                   pool: collections.abc.Sequence[_Int] = ...) -> numpy.ndarray: ...
    @staticmethod
    def gemm_u8s8s32(a: object, packed: object, N: _Int, K: _Int) -> numpy.ndarray: ...
    @staticmethod
    def linear_bf16(x: object, w: object, bias: object) -> numpy.ndarray:
        """x @ widen(w).T + bias for x (M, K) float32 and w (N, K) uint16 bfloat16 bit patterns: the same bits as a
        float32 linear over the widened weight.
        """
        ...
    @staticmethod
    def linear_dynamic(x: object, packed: object, colsum: object, w_scale: object, bias: object, reduce_range: bool,
                       relu: bool) -> numpy.ndarray: ...
    @staticmethod
    def linear_u8(a: object, a_scale: _Float, a_zero_point: _Int, packed: object, colsum: object, w_scale: object,
                  bias: object, relu: bool, out_scale: object, out_zero_point: _Int) -> numpy.ndarray: ...
    @staticmethod
    def linear_weight_only(x: object, w: object, w_scale: object, bias: object) -> numpy.ndarray: ...
    @staticmethod
    def pack_weight(w: object) -> tuple: ...
    @staticmethod
    def path() -> str: ...
    @staticmethod
    def paths() -> list: ...
    @staticmethod
    def quantize_u8(x: object, scale: _Float, zero_point: _Int, qmin: _Int, qmax: _Int) -> numpy.ndarray: ...
    @staticmethod
    def rnn_dynamic_layer(mode: _Int, gi: object, packed: object, colsum: object, w_scale: object, bias: object,
                          h0: object, c0: object, reverse: bool, reduce_range: bool) -> tuple: ...
    @staticmethod
    def set_path(name: object) -> None: ...

class reduce_rows:
    @staticmethod
    def fill_rows(g: numpy.ndarray, out: numpy.ndarray, divisor: _Float) -> None:
        """out[r, :] = g[r] / float32(divisor) for float32 g (R,) and out (R, L)."""
        ...
    @staticmethod
    def sum_axes(x: numpy.ndarray, reduced: collections.abc.Sequence[bool], out: numpy.ndarray, mean: bool) -> None:
        """out = the sum (mean: / the count) of float32 x (any strides; its innermost axis of size > 1 contiguous) over
        the axes k with reduced[k], out holding the kept axes in x's order; accumulated in float64 in a fixed order
        (forgegrad/reduce_rows.h: the same bits on every ISA and at any thread count).
        """
        ...
    @staticmethod
    def sum_lead(x: numpy.ndarray, out: numpy.ndarray, mean: bool) -> None:
        """out[b] = the sum (mean: / (A * L)) of x[:, b, :] for float32 x (A, B, L), accumulated in float64 in a fixed
        order (the same bits on every ISA and at any thread count).
        """
        ...
    @staticmethod
    def sum_mid(x: numpy.ndarray, out: numpy.ndarray, mean: bool) -> None:
        """out[o, i] = the sum (mean: / M) of x[o, :, i] for float32 x (O, M, I), accumulated in float64 in a fixed
        order (the same bits on every ISA and at any thread count).
        """
        ...
    @staticmethod
    def sum_rows(x: numpy.ndarray, out: numpy.ndarray, mean: bool) -> None:
        """out[r] = the sum (mean: / L) of row r of float32 x (R, L), accumulated in float64 in a fixed order (the same
        bits on every ISA and at any thread count).
        """
        ...

class resample:
    @staticmethod
    def resample2d_backward(grad: numpy.ndarray, idx_h: numpy.ndarray, w_h: object, idx_w: numpy.ndarray, w_w: object,
                            grad_x: numpy.ndarray) -> None:
        """grad_x = the transpose of resample2d_forward's map applied to grad (no -1 entries); each source sums its
        contributions in increasing output position, so the bits do not depend on the thread count.
        """
        ...
    @staticmethod
    def resample2d_forward(x: numpy.ndarray, idx_h: numpy.ndarray, w_h: object, idx_w: numpy.ndarray, w_w: object,
                           fill: _Float, out: numpy.ndarray) -> None:
        """out[n, c, i, j] = sum_a w_h[a, i] * (sum_b w_w[b, j] * x[n, c, idx_h[a, i], idx_w[b, j]]), the width sum
        first; idx_* int64 (taps, out size), w_* None (ones) or float32 of that shape. An unweighted one-tap map may
        hold -1: fill there.
        """
        ...

class rnn:
    @staticmethod
    def activation(kind: str, x: numpy.ndarray) -> numpy.ndarray:
        """The SIMD sigmoid / tanh / exp the gate passes use (for accuracy tests), on a 1-D float32 array."""
        ...
    @staticmethod
    def backward(mode: _Int, x: object, h0: object, c0: object, w_ih: object, w_hh: object, y: object, gates: object,
                 cells: object, hn_lin: object, grad_y: object, grad_hn: object, grad_cn: object, gx: object,
                 gh0: object, gc0: object, gw_ih: object, gw_hh: object, gb_ih: object, gb_hh: object,
                 reverse: bool) -> None:
        """Backward through time of one recurrent layer; writes every gradient."""
        ...
    @staticmethod
    def forward(mode: _Int, x: object, h0: object, c0: object, w_ih: object, w_hh: object, b_ih: object, b_hh: object,
                y: object, h_n: object, c_n: object, gates: object, cells: object, hn_lin: object,
                reverse: bool) -> None:
        """One recurrent layer over a sequence; writes y, h_n, c_n and (training) the saved activations."""
        ...

class runtime:
    @staticmethod
    def _check_region_alloc(tasks: _Int, floats: _Int, dynamic: bool = ...) -> int: ...
    @staticmethod
    def _threads_for(work: _Int) -> int: ...
    @staticmethod
    def cpu_info() -> dict:
        """Detected and active SIMD path, thread count, build options."""
        ...
    @staticmethod
    def get_isa() -> str: ...
    @staticmethod
    def get_num_threads() -> int: ...
    @staticmethod
    def set_isa(name: str) -> None:
        """Force the SIMD path ('avx512', 'avx2' or 'scalar'); raises ValueError if the CPU lacks it."""
        ...
    @staticmethod
    def set_num_threads(n: _Int) -> None: ...

class serve:
    @staticmethod
    def json_number_array(body: bytes, start: _Int = ..., stop: _Int = ..., float32: bool = ...) -> object:
        """body[start:stop] (stop -1: the end) parsed as one JSON array of numbers: a float64 array of its shape, each
        number as Python's float() (an integer literal of up to 15 digits as int()) gives it; None for any other
        text (other JSON values, ragged or empty arrays, integers past 15 digits, numbers beyond a double's normal
        range, malformed JSON), which the caller's generic JSON path then decodes or refuses. float32: the float64
        values rounded to float32 (as numpy's astype), and None where one is beyond float32's range.
        """
        ...

class shape_copy:
    @staticmethod
    def diff_backward(g: numpy.ndarray, out: numpy.ndarray) -> None:
        """The adjoint of one forward difference along axis 1: g (outer, m, inner) float32 / float64 -> out (outer, m +
        1, inner), out[:, k] = (0 + g[:, k - 1]) - g[:, k] (numpy's zeros / += / -= bits, one pass).
        """
        ...
    @staticmethod
    def diff_forward(x: numpy.ndarray, out: numpy.ndarray) -> None:
        """One forward difference along axis 1: x (outer, m, inner) float32 / float64, m >= 1 -> out (outer, m - 1,
        inner), out[:, k] = x[:, k + 1] - x[:, k].
        """
        ...
    @staticmethod
    def transpose_copy(src: numpy.ndarray, dst: numpy.ndarray) -> None:
        """dst[b, r, c] = src[b, r, c]: a copy of a 3-D view with any strides (a transposed or flipped one) into a
        C-contiguous dst of its dtype; elements of 4 or 8 bytes, moved as bits.
        """
        ...
    @staticmethod
    def unfold_backward(g: numpy.ndarray, step: _Int, out: numpy.ndarray) -> None:
        """Tensor.unfold's overlap-add: g (outer, count, inner, size) -> out (outer, n, inner), out[:, w * step + j] =
        sum over windows w (ascending, from 0) of g[:, w, :, j]; float32 / float64.
        """
        ...

class softmax:
    @staticmethod
    def softmax_backward(grad: numpy.ndarray, y: numpy.ndarray, out: numpy.ndarray,
                         log_softmax: bool = ...) -> None:
        """out = d softmax (or log_softmax) from the saved output y."""
        ...
    @staticmethod
    def softmax_forward(x: numpy.ndarray, out: numpy.ndarray, log_softmax: bool = ...) -> None:
        """out = softmax(x) (or log_softmax) over the last axis; C-contiguous float32, out may be x."""
        ...

class sparse:
    @staticmethod
    def csr_transpose(crow_indices: numpy.ndarray, col_indices: numpy.ndarray, ncols: _Int,
                      out_crow_indices: numpy.ndarray, out_col_indices: numpy.ndarray, perm: numpy.ndarray) -> None:
        """The CSR pattern of A^T (ncols rows) by a stable counting sort of A's nonzeros by column: out_crow_indices
        (ncols+1,), out_col_indices (nnz,) and perm (nnz,), A^T's values being values[perm]; int64 arrays, serial
        O(nnz), deterministic.
        """
        ...
    @staticmethod
    def sddmm(crow_indices: numpy.ndarray, col_indices: numpy.ndarray, grad: numpy.ndarray, dense: numpy.ndarray,
              out: numpy.ndarray) -> None:
        """out (nnz,) = (grad @ dense.T) sampled at the CSR pattern: out[p] = dot(grad[i], dense[col_indices[p]]) for
        each nonzero p of row i (the gradient of A's values in A @ dense).
        """
        ...
    @staticmethod
    def spgemm(a_crow_indices: numpy.ndarray, a_col_indices: numpy.ndarray, a_values: numpy.ndarray,
               b_crow_indices: numpy.ndarray, b_col_indices: numpy.ndarray, b_values: numpy.ndarray,
               ncols: _Int) -> tuple:
        """C = A @ B for CSR matrices A (len(a_crow_indices) - 1, len(b_crow_indices) - 1) and B (len(b_crow_indices) -
        1, ncols), int64 indices, float32 or float64 values of one dtype. Returns C's (crow_indices (M+1,),
        col_indices (nnz,), values (nnz,)): each row's columns sorted and distinct, every structural product kept (a
        cancelling sum stays as an explicit 0). Products are rounded to the values' dtype and summed in float64 in
        A's then B's nonzero order: the same bits at any thread count.
        """
        ...
    @staticmethod
    def spmm(crow_indices: numpy.ndarray, col_indices: numpy.ndarray, values: numpy.ndarray, dense: numpy.ndarray,
             out: numpy.ndarray) -> None:
        """out (M, N) = A @ dense for A a float32 CSR matrix of M rows (crow_indices (M+1,), col_indices (nnz,), values
        (nnz,), int64 indices) and dense (K, N) float32 C-contiguous; the same bits at any thread count and on every
        ISA.
        """
        ...

class special_poly:
    @staticmethod
    def recurrence(kind: _Int, coef: numpy.ndarray, n: numpy.ndarray, q0: numpy.ndarray, q1: numpy.ndarray, start: _Int,
                   stop_nan: bool) -> numpy.typing.NDArray[numpy.float64]:
        """q_k for k = start .. n[i] of one orthogonal polynomial's three-term recurrence per element (kind: 0
        Chebyshev with coef = 2y, 1 Hermite H, 2 Hermite He, 3 Laguerre, 4 Legendre; coef = x for 1-4), from
        q_{start-2} = q0[i], q_{start-1} = q1[i]; stops where q turns NaN when stop_nan. float64 1-D arrays of one
        length; returns the last q per element (q1[i] where n[i] < start).
        """
        ...

class testing:
    @staticmethod
    def strided_copy(src: numpy.ndarray, shape: collections.abc.Sequence[_Int], strides: collections.abc.Sequence[_Int],
                     offset: _Int = ...) -> numpy.ndarray: ...
    @staticmethod
    def sum_to_shape(src: typing.Annotated[numpy.typing.ArrayLike, numpy.float64],
                     shape: collections.abc.Sequence[_Int]) -> numpy.typing.NDArray[numpy.float64]: ...

class topk:
    @staticmethod
    def sort_f32(x: numpy.ndarray, descending: bool, values: numpy.ndarray, indices: numpy.ndarray) -> None:
        """values, indices (rows, n) = each row of float32 x (rows, n) sorted stably (equal values in index order),
        ascending with NaN last, or descending with NaN first. Bit-identical for any thread count.
        """
        ...
    @staticmethod
    def topk_f32(x: numpy.ndarray, k: _Int, largest: bool, values: numpy.ndarray, indices: numpy.ndarray) -> None:
        """values, indices (rows, k) = the k largest (largest=False: smallest) of each row of float32 x (rows, n), best
        first: NaN the largest, -0.0 equal to 0.0, equal values in index order (the first k of a stable sort). Bit-
        identical for any thread count.
        """
        ...
