"""Run inside Python 3.10 + OpenVINO 2022.3: infer IR.xml on CPU with inputs.npz, write outputs.npz."""

import sys

import numpy as np
from openvino.runtime import Core


def cpu_config(core: Core) -> dict:
    """Ask for f32 inference where this release knows the hint, else the default."""
    supported = core.get_property("CPU", "SUPPORTED_PROPERTIES")
    return {"INFERENCE_PRECISION_HINT": "f32"} if "INFERENCE_PRECISION_HINT" in supported else {}


def main(xml: str, src: str, dst: str) -> None:
    """Compile `xml`, feed arr_0..arr_N from `src` positionally, save outputs as arr_0..arr_M to `dst`."""
    core = Core()
    compiled = core.compile_model(core.read_model(xml), "CPU", cpu_config(core))
    with np.load(src) as data:
        inputs = {i: data[f"arr_{i}"] for i in range(len(data.files))}
    results = compiled.create_infer_request().infer(inputs)
    np.savez(dst, *[results[out] for out in compiled.outputs])


if __name__ == "__main__":
    main(*sys.argv[1:4])
