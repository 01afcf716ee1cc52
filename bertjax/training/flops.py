"""Model FLOPs: the one formula bertjax uses for TFLOP/s and model FLOPs utilisation (MFU).

Training FLOPs of one sequence of length S (forward + backward = 3 x forward, matmuls only):

    6 * N_enc * S                      encoder weights (N_enc = L * (4 H^2 + 2 H I)), per token
  + 12 * L * S^2 * H                   attention scores QK^T and the weighted sum AV
  + 6 * P * (H^2 + H V)                MLM head (transform + tied decoder) on P gathered positions
  + 6 * (H^2 + 2 H)                    pooler and NSP head on [CLS]

Embedding lookups, LayerNorm, softmax and biases are not counted (as in the PaLM/MaxText MFU
convention). Padding tokens are counted: the step does the work whether or not a token is real.
"""

from __future__ import annotations

import jax

# Dense bf16 peak TFLOP/s per device, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H100": 989.0,  # H100 SXM
    "H200": 989.0,
    "A100": 312.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5": 459.0,  # v5p
    "TPU v6 lite": 918.0,  # v6e (Trillium)
}


def peak_tflops(device: jax.Device | None = None, override: float = 0.0) -> float | None:
    """Peak bf16 TFLOP/s of a device: `override` when > 0, else looked up by device kind."""
    if override > 0:
        return override
    kind = (device or jax.devices()[0]).device_kind
    for name, value in sorted(PEAK_TFLOPS.items(), key=lambda item: -len(item[0])):
        if name.lower() in kind.lower():
            return value
    return None
