// Device helpers shared by the decode kernels that read quantisation codes (KIVI, MiKV, the
// composed cache's KIVI region).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

// An unsigned code (< 2^23) as its exact fp32 value, without an int-to-float conversion: I2F
// issues at a quarter of the FP32 rate (16 per clock per SM on sm_80 / sm_90) and a decode over
// 2-4-bit codes converts one per cached element, more than its memory time at these widths. ORing
// the code into the mantissa of 2^23 and subtracting 2^23 costs one logic op and one FADD and
// gives the same bits as the conversion.
MEMATTN_DEVICE float code_to_float(std::uint32_t code) { return __uint_as_float(code | 0x4B000000u) - 8388608.f; }

}  // namespace kernels
MEMATTN_NAMESPACE_END
