"""Register torchvision's compiled-op schemas before torchvision loads. The PyPI torchvision
wheel is a CUDA build whose import fails on the CPU torch here ("operator torchvision::nms does
not exist"); with the schemas defined it imports, and only the compiled ops stay missing
(PKS never calls them). Test environments only: loaded by a .pth file in the test venvs.

Lazily: a .pth runs in every interpreter of the venv, and importing torch there cost each one
about 1.5 s (every `pks` subprocess, every Ray worker and helper process: a Ray session took
twice as long to start). So the schemas are registered on the first import of torchvision."""

import sys

_libs = []  # a Library's definitions live as long as the Library object


def _register() -> None:
    import torch

    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _libs.append(lib)
    except RuntimeError:  # already defined (a real torchvision build)
        pass


class _BeforeTorchvision:
    """A meta-path finder that finds nothing: asked for torchvision the first time, it registers
    the schemas, and the normal finders import torchvision. It stays in sys.meta_path (removing
    itself there would skip the next finder of the lookup that is iterating over that list)."""

    asked = False

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" and not self.asked:
            self.asked = True
            _register()
        return None


sys.meta_path.insert(0, _BeforeTorchvision())
