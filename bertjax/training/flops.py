"""Device peaks for TFLOP/s and model FLOPs utilisation (MFU).

The model FLOPs of a training step come from the objective or task
(`objective.flops_per_sequence(family, config, seq_len)`): 3 x the forward matmuls (backward =
2 x forward) of the family's backbone (`Family.forward_flops`, e.g. `models.bert.forward_flops`)
and of the heads the objective runs (`models.heads.mlm_flops`, ...). Embedding lookups,
LayerNorm, softmax and biases are not counted (the PaLM/MaxText MFU convention); padding tokens
are, since the step does the work whether or not a token is real.
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
