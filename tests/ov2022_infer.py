"""Run inside Python 3.10 + OpenVINO 2022.3: for each (IR.xml, inputs.npz, outputs.npz) triple of the arguments,
infer the IR on CPU with the inputs and write the outputs (one interpreter and Core for them all)."""

import sys

import numpy as np
from openvino.runtime import Core


def cpu_config(core: Core) -> dict:
    """Ask for f32 inference where this release knows the hint, else the default."""
    supported = core.get_property("CPU", "SUPPORTED_PROPERTIES")
    return {"INFERENCE_PRECISION_HINT": "f32"} if "INFERENCE_PRECISION_HINT" in supported else {}


def infer(core: Core, xml: str, src: str, dst: str) -> None:
    """Compile `xml`, feed arr_0..arr_N from `src` positionally, save outputs as arr_0..arr_M to `dst`."""
    compiled = core.compile_model(core.read_model(xml), "CPU", cpu_config(core))
    with np.load(src) as data:
        inputs = {i: data[f"arr_{i}"] for i in range(len(data.files))}
    results = compiled.create_infer_request().infer(inputs)
    np.savez(dst, *[results[out] for out in compiled.outputs])


def main(args: list[str]) -> None:
    """infer() each (xml, src, dst) triple of `args` with one Core."""
    core = Core()
    for start in range(0, len(args), 3):
        infer(core, *args[start:start + 3])


if __name__ == "__main__":
    main(sys.argv[1:])
