"""pruneyolo: prune Darknet YOLO models and deploy any pruned cfg to OpenVINO.

    model = pruneyolo.load("cfgs/prune_0.88.cfg", "cfgs/prune_0.88.weights")
    model.summary(); model.codegen("prune_0.88.py"); model.convert("ir"); model.prune(0.5).save("out")
    pruneyolo.run("ir/prune_0.88.xml", ["synthetic:seed=1"], max_frames=10)

`import pruneyolo` stays light: `load`, `run` and `Model` (pruneyolo.api) import the pipeline on first use.
"""

from pruneyolo.errors import ArgumentError, CfgError, PruneyoloError, WeightsError

__version__ = "0.1.0"
__all__ = ["ArgumentError", "CfgError", "Model", "PruneyoloError", "WeightsError", "__version__", "load", "run"]
LAZY = ("Model", "load", "run")


def __getattr__(name: str):
    if name in LAZY:
        from pruneyolo import api

        return getattr(api, name)
    raise AttributeError(f"module 'pruneyolo' has no attribute {name!r}")
