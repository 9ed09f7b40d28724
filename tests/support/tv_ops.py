"""Register torchvision's compiled-op schemas before torchvision loads. The PyPI torchvision
wheel is a CUDA build whose import fails on the CPU torch here ("operator torchvision::nms does
not exist"); with the schemas defined it imports, and only the compiled ops stay missing
(PKS never calls them). Test environments only: loaded by a .pth file in the test venvs."""

import torch

try:
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:  # already defined (a real torchvision build)
    pass
