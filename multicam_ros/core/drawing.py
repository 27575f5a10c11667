"""Boxes and labels drawn onto a copy of a frame, for image_annotated. ROS-free."""
from typing import Optional, Sequence

import cv2
import numpy as np

from multicam_ros.core.models.base import Detections


def class_color(class_id: int) -> tuple:
    """A stable, well-separated BGR colour per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(image_bgr: np.ndarray, detections: Detections, class_names: Sequence[str],
                    labels: Optional[Sequence[str]] = None,
                    trails: Optional[Sequence[Optional[np.ndarray]]] = None) -> np.ndarray:
    """A copy of `image_bgr` with each box, its class name and score, `labels[i]` (e.g. a track
    id) and `trails[i]` (K x 2 past centres, drawn as a line) when given. Line width and text
    scale follow the image size."""
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(width, height) / 320))
    scale = max(0.35, min(width, height) / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, (box, score, class_id) in enumerate(zip(detections.boxes_xyxy, detections.scores,
                                                   detections.class_ids)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = class_color(int(class_id))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        trail = trails[i] if trails is not None else None
        if trail is not None and len(trail) > 1:
            cv2.polylines(canvas, [np.round(trail).astype(np.int32)], False, color, thickness,
                          cv2.LINE_AA)
        name = class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)
        text = f'{name} {score:.2f}' + (f' {labels[i]}' if labels is not None and labels[i]
                                        else '')
        (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, 1)
        top = max(0, y1 - text_h - baseline - 2)
        cv2.rectangle(canvas, (x1, top), (x1 + text_w + 2, top + text_h + baseline + 2), color,
                      cv2.FILLED)
        cv2.putText(canvas, text, (x1 + 1, top + text_h + 1), font, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas
