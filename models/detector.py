"""A small 2.5-D Faster R-CNN for lung nodules on ~128 x 128 axial slices at 2.5 mm.

Input images are three adjacent slices (k-1, k, k+1) as channels, already windowed to [0, 1].
Boxes are (x1, y1, x2, y2) in working-grid pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

NODULE_CATEGORIES = ("background", "nodule")


def _conv(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SliceBackbone(nn.Module):
    """Seven 3x3 convolutions to one feature map at stride 4; dilations widen the receptive field."""

    def __init__(self, *, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(in_channels, width),
            _conv(width, width, stride=2),
            _conv(width, 2 * width, stride=2),
            _conv(2 * width, 2 * width),
            _conv(2 * width, 2 * width, dilation=2),
            _conv(2 * width, 2 * width, dilation=4),
            _conv(2 * width, 2 * width),
        )
        self.out_channels = 2 * width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": self.body(x)}


class FixedSizeTransform(GeneralizedRCNNTransform):
    """Normalises and batches images but never resizes them: the working grid already fixes the pixel size."""

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        return image, target


def build_detector(
    *,
    num_classes: int = 2,
    width: int = 32,
    anchor_sizes: tuple[int, ...] = (4, 8, 16),
    image_size: int = 128,
    box_score_thresh: float = 0.05,
    detections_per_img: int = 20,
) -> FasterRCNN:
    """Build the 2.5-D nodule Faster R-CNN (random init; no pretrained weights).

    `anchor_sizes` are square anchor sides in working-grid pixels (2.5 mm each: 4..16 px covers 5..30 mm
    nodules); `image_size` is the nominal slice side in pixels (images are never resized).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + objects), got {num_classes}")
    backbone = SliceBackbone(width=width)
    anchors = AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=((1.0,),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    representation = 128
    model = FasterRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=50,
        rpn_fg_iou_thresh=0.5,
        rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=128,
        box_batch_size_per_image=128,
        box_fg_iou_thresh=0.5,
        box_bg_iou_thresh=0.4,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=0.3,
        box_detections_per_img=detections_per_img,
    )
    model.transform = FixedSizeTransform(
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        size_divisible=4,
    )
    return model


BUILDERS: dict[str, Callable[..., nn.Module]] = {"small_faster_rcnn_2p5d": build_detector}


def build_from_architecture(architecture: dict[str, Any]) -> nn.Module:
    """Build a network from a registry `architecture` entry: {"builder": name, "kwargs": {...}}."""
    name = architecture.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"unknown builder {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](**architecture.get("kwargs", {}))
