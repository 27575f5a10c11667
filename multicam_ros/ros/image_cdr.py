"""sensor_msgs/Image read straight from its serialized CDR bytes, so that the detector sees a
frame's size before anything copies its pixels.

A typed subscription makes rclpy build a Python Image from every sample, pixels included
(about 10 ms of CPU with the GIL held per 720p frame, ENVIRONMENT.md), before the callback can
look at it: a hostile 8000x8000 frame cost the detector most of a second and gigabytes of
memory before it could be refused. With a raw subscription the callback gets the bytes as the
middleware delivered them; `read_image` parses the few header fields and hands out the pixel
data as a view into those bytes, so a frame that is too large is refused having cost one
read of its header, and an accepted one reaches numpy without another copy.

CDR as the ROS 2 middlewares write it (XCDR1): a 4-byte encapsulation header (0x0001: little
endian), then every primitive aligned to its size from the start of the payload, strings as a
uint32 length (NUL included) and the bytes, sequences as a uint32 count and the elements.
`reading_matches()` checks the reader once, at start-up, against rclpy's own serialization;
where it does not match (another middleware, another message definition) the detector falls
back to typed subscriptions.
"""
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from multicam_ros.ros.convert import stamp_from_ns

_LITTLE_ENDIAN_CDR = b'\x00\x01'  # plain CDR, little endian: what rmw_fastrtps writes
_U32 = struct.Struct('<I')
_TIME = struct.Struct('<iI')
MAX_STRING = 4096  # frame_id and encoding longer than this are not a camera's


@dataclass(frozen=True)
class RawImage:
    """The fields of one serialized Image; `data` is a view into the received bytes."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    encoding: str
    step: int
    data: memoryview


class _Reader:
    def __init__(self, blob: memoryview) -> None:
        self.blob = blob
        self.offset = 4

    def _align(self, size: int) -> None:
        self.offset += -(self.offset - 4) % size

    def u32(self) -> int:
        self._align(4)
        value, = _U32.unpack_from(self.blob, self.offset)
        self.offset += 4
        return value

    def time(self) -> tuple:
        self._align(4)
        value = _TIME.unpack_from(self.blob, self.offset)
        self.offset += 8
        return value

    def string(self) -> str:
        length = self.u32()
        if not 1 <= length <= MAX_STRING or self.offset + length > len(self.blob):
            raise ValueError('bad string')
        text = bytes(self.blob[self.offset:self.offset + length - 1]).decode('utf-8', 'replace')
        self.offset += length
        return text

    def u8(self) -> int:
        value = self.blob[self.offset]
        self.offset += 1
        return value


def read_image(blob: bytes) -> Optional[RawImage]:
    """The Image in `blob` (serialized bytes), or None when they are not a well-formed
    little-endian Image (truncated, or lengths that do not fit)."""
    view = memoryview(blob)
    if len(view) < 4 or bytes(view[:2]) != _LITTLE_ENDIAN_CDR:
        return None
    reader = _Reader(view)
    try:
        sec, nanosec = reader.time()
        frame_id = reader.string()
        height, width = reader.u32(), reader.u32()
        encoding = reader.string()
        reader.u8()  # is_bigendian: meaningless for the 8-bit encodings the detector takes
        step = reader.u32()
        count = reader.u32()
    except (ValueError, struct.error, IndexError):
        return None
    if reader.offset + count > len(view):
        return None
    stamp_ns = sec * 1_000_000_000 + nanosec
    return RawImage(stamp_ns, frame_id, height, width, encoding, step,
                    view[reader.offset:reader.offset + count])


def reading_matches() -> bool:
    """Whether `read_image` reads rclpy's serialization of an Image back field for field
    (checked on odd string lengths, so every alignment rule is exercised)."""
    msg = Image(header=Header(stamp=stamp_from_ns(1_700_000_000_123_456_789),
                              frame_id='cam_optical_frame_x'),
                height=3, width=5, encoding='rgb8', is_bigendian=0, step=15)
    msg.data = bytes(range(45))
    raw = read_image(serialize_message(msg))
    return raw is not None and (
        raw.stamp_ns, raw.frame_id, raw.height, raw.width, raw.encoding, raw.step,
        bytes(raw.data)) == (1_700_000_000_123_456_789, 'cam_optical_frame_x', 3, 5, 'rgb8', 15,
                             bytes(range(45)))


def size_bounds(max_pixels: int, max_bytes: int) -> List[Tuple[str, int, int]]:
    """Rectangles whose union holds every frame within the limits and nothing beyond twice
    them: for each power of two w, (field <= w AND height <= 2 * limit // w), for width (pixel
    limit) and for step (byte limit). A frame of w x h pixels within the limit fits the
    rectangle of the smallest power of two >= w (which is < 2w), and whatever fits a rectangle
    has at most twice the limit, so the exact check on the header refuses the rest."""
    bounds = []
    for field, limit in (('width', max_pixels), ('step', max_bytes)):
        side = 1
        while side <= 2 * limit:
            bounds.append((field, side, 2 * limit // side))
            side *= 2
    return bounds


def size_filter(max_pixels: int, max_bytes: int) -> str:
    """A DDS content-filter expression (the SQL subset: comparisons, AND, OR) passing every
    Image within the limits and refusing every one over twice them (`size_bounds`). Fast DDS
    evaluates it where the sample is written, or on arrival, so a huge frame never reaches
    this process's history: no take, no copy, nothing on the executor."""
    terms = {'width': [], 'step': []}
    for field, side, height in size_bounds(max_pixels, max_bytes):
        terms[field].append(f'({field} <= {side} AND height <= {height})')
    return ' AND '.join('(' + ' OR '.join(group) + ')' for group in terms.values())
