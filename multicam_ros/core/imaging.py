"""Pure frame functions the camera node applies before publishing: size, encoding, NO SIGNAL.

ROS-free and stateless; every function takes and returns numpy arrays (OpenCV's BGR order).
The node's `encoding`, `width` and `height` settings (core/params.py) are checked where they are
declared; the functions here still refuse what they cannot work with, as a ConfigError of that
setting.
"""
from __future__ import annotations

import cv2
import numpy as np

from multicam_ros.core.settings import ConfigError
from multicam_ros.core.sources import redact

ENCODINGS = ('bgr8', 'rgb8', 'mono8')


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def output_size(src_width: int, src_height: int, width: int = 0,
                height: int = 0) -> tuple[int, int]:
    """The (width, height) to publish: 0 keeps the source size; one of them set keeps aspect.
    A requested size that is not an integer >= 0 is a ConfigError of `width` or `height`."""
    for key, value in (('width', width), ('height', height)):
        if not _is_int(value) or value < 0:
            raise ConfigError.of(key, f'{value!r} is not an integer >= 0',
                                 'an integer >= 0 (0 keeps the source size)')
    width, height = int(width), int(height)
    if width and height:
        return width, height
    if width:
        return width, max(1, int(round(src_height * width / src_width)))
    if height:
        return max(1, int(round(src_width * height / src_height))), height
    return src_width, src_height


def resize_frame(image: np.ndarray, width: int = 0, height: int = 0) -> np.ndarray:
    """Resize to ``output_size``; returns ``image`` itself when the size does not change."""
    src_height, src_width = image.shape[:2]
    out_width, out_height = output_size(src_width, src_height, width, height)
    if (out_width, out_height) == (src_width, src_height):
        return image
    shrinking = out_width * out_height < src_width * src_height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (out_width, out_height), interpolation=interpolation)


def convert_encoding(image: np.ndarray, encoding: str) -> np.ndarray:
    """Convert an OpenCV frame (BGR, BGRA or single-channel) to ``encoding`` (one of
    ENCODINGS, else a ConfigError of `encoding`)."""
    if encoding not in ENCODINGS:
        raise ConfigError.of('encoding', f'{encoding!r} is not a choice',
                             'one of ' + ', '.join(repr(name) for name in ENCODINGS))
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        gray = image if image.ndim == 2 else image[:, :, 0]
        if encoding == 'mono8':
            return gray
        code = cv2.COLOR_GRAY2BGR if encoding == 'bgr8' else cv2.COLOR_GRAY2RGB
        return cv2.cvtColor(gray, code)
    if channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if encoding == 'bgr8':
        return image
    code = cv2.COLOR_BGR2RGB if encoding == 'rgb8' else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def prepare_frame(image: np.ndarray, width: int = 0, height: int = 0,
                  encoding: str = 'bgr8') -> np.ndarray:
    """Resize, then convert: what the node publishes for one captured frame."""
    return convert_encoding(resize_frame(image, width, height), encoding)


def _fit_text_scale(text: str, font: int, thickness: int, max_width_px: int,
                    max_height_px: int) -> float:
    """Largest font scale at which ``text`` fits in the given box."""
    (text_width, text_height), baseline = cv2.getTextSize(text, font, 1.0, thickness)
    by_width = max_width_px / max(1, text_width)
    by_height = max_height_px / max(1, text_height + baseline)
    return max(0.1, min(by_width, by_height))


# header.frame_id of every NO SIGNAL picture on image_raw: the mark a consumer can check (with
# no camera_info beside it). Never a frame of the scene, so the detector never runs on it.
NO_SIGNAL_FRAME_ID = 'no_signal'


def make_no_signal_frame(width: int, height: int, text: str = 'NO SIGNAL',
                         detail: str = '') -> np.ndarray:
    """A BGR frame that cannot be mistaken for video: dark, red border, big red banner.

    ``text`` goes in the banner; ``detail`` (camera name, time of the last frame...) goes
    below it in small grey letters, redacted in case it holds a URL.
    """
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise ValueError(f'a NO SIGNAL frame needs an integer size > 0, got {width!r} x '
                         f'{height!r}')
    width, height = int(width), int(height)
    frame = np.full((height, width, 3), 24, dtype=np.uint8)
    # Diagonal hatching: a still picture of a dark scene never looks like this.
    step_px = max(8, min(width, height) // 12)
    for offset in range(-height, width, step_px):
        cv2.line(frame, (offset, height), (offset + height, 0), (48, 48, 48), 1)
    border_px = max(1, min(width, height) // 60)
    cv2.rectangle(frame, (0, 0), (width - 1, height - 1), (0, 0, 220), border_px)
    banner_top = int(height * 0.35)
    banner_bottom = int(height * 0.60)
    cv2.rectangle(frame, (0, banner_top), (width - 1, banner_bottom), (0, 0, 200), -1)
    font = cv2.FONT_HERSHEY_DUPLEX
    thickness = max(1, min(width, height) // 120)
    banner_px = banner_bottom - banner_top
    if text:
        scale = _fit_text_scale(text, font, thickness, int(width * 0.85), int(banner_px * 0.7))
        (text_width, text_height), _ = cv2.getTextSize(text, font, scale, thickness)
        origin = ((width - text_width) // 2, banner_top + (banner_px + text_height) // 2)
        cv2.putText(frame, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    if detail:
        detail = redact(detail)
        small_thickness = max(1, thickness // 2)
        scale = _fit_text_scale(detail, font, small_thickness, int(width * 0.9),
                                int(height * 0.08))
        (text_width, text_height), _ = cv2.getTextSize(detail, font, scale, small_thickness)
        origin = ((width - text_width) // 2, min(height - 2, banner_bottom + 2 * text_height))
        cv2.putText(frame, detail, origin, font, scale, (200, 200, 200), small_thickness,
                    cv2.LINE_AA)
    return frame
