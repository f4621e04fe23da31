"""Channel and residual-block pruning by BatchNorm |gamma|, with its tables and plots."""

DEFAULT_ROUND = 4  # `prune --round`: what measured fastest at this CPU's default precision (bf16); docs/pruning.md

# `prune --allocate latency`'s default --round per device type: the GPU plugin's blocked layouts hold 16 channels
# (b_fs_yx_fsv16), the NPU compiler aligns convolution channels to 16 (its AlignTo16Channels pass) and pads the rest
DEVICE_ROUND = {"CPU": DEFAULT_ROUND, "GPU": 16, "NPU": 16}


def device_round(device: str) -> int:
    """The alignment default of a device name (GPU.1, AUTO:GPU,CPU: its first device), DEFAULT_ROUND if unknown."""
    first = device.split(":")[-1].split(",")[0].split(".")[0].upper()
    return DEVICE_ROUND.get(first, DEFAULT_ROUND)
