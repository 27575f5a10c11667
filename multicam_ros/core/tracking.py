"""Multi-object tracking for one camera, ByteTrack style. ROS-free.

One `Tracker` per camera turns each frame's `Detections` into track ids that stay the same while
an object stays in view:

1. every track's box is predicted to the frame's capture time by a constant-velocity Kalman
   filter on box centre and size, using the REAL time since the previous frame (the detector
   drops frames under load, so the gap varies and can be long);
2. confident detections (score >= `high_score_threshold`) are matched to confirmed tracks by
   linear assignment on 1 - IoU (`scipy.optimize.linear_sum_assignment`), gated by
   `match_iou_threshold` and, by default, by class. For a track seen in the previous frame both
   boxes are grown by its predicted position uncertainty first (`match_padding_sigmas`), so a
   young track (speed not known yet) still finds its object after dropped frames;
3. confirmed tracks seen in the previous frame that are still unmatched get a second chance
   with the weak detections (`low_score_threshold` <= score < `high_score_threshold`): an object
   whose score dips while it is partly occluded keeps its id (ByteTrack's point);
4. tentative tracks (seen once) are matched with the confident detections left over; a match
   confirms them and gives them an id, no match removes them;
5. confident detections still unmatched with score >= `new_track_score_threshold` start
   tentative tracks (on the first frame of a stream they are confirmed at once);
6. a confirmed track unmatched for longer than `max_age_s` of stream time is removed.

Id convention: ids are positive ints counted per tracker from 1, given when a track is
confirmed and never reused by that tracker, not even after `reset()`. A detection that belongs
to no confirmed track gets `NO_TRACK_ID` (-1); the detector publishes '' for it.

Stamps: `dt = stamp_s - previous stamp_s`. A frame with dt <= 0 (duplicate or out of order) is
matched read-only: its detections get the ids of the tracks they match, but nothing is
predicted, updated, created or aged, so state never runs backwards. A stamp more than
`max_age_s` before the previous one means the stream's clock restarted: the tracker resets.

All tracks live in a few numpy arrays (structure of arrays), so a frame costs a fixed number
of vectorised numpy calls, never a Python loop per track. The four measured quantities (cx, cy,
w, h) move independently under this model, so the usual 8x8 Kalman covariance is four 2x2
(value, rate) blocks: kept as three [T, 4] arrays, the filter is exact and elementwise, and the
prediction of every track is one small matrix product.
"""
from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from multicam_ros.core.models.base import Detections
from multicam_ros.core.settings import ConfigError, check_fields, setting

NO_TRACK_ID = -1
"""The id of a detection that belongs to no confirmed track (yet)."""

_MIN_SIZE_PX = 1.0  # predicted widths and heights never shrink below this
_UNMATCHABLE = 1e6  # assignment cost of a gated-out pair (finite: scipy needs a full matching)
_VALUE, _RATE, _VAR, _COV, _RATE_VAR = range(5)  # parts of the Kalman state, see Tracker
# The tracker's internal tuning fields (not parameters): (field, accepted values, rule).
_TUNING_RULES = (
    ('match_iou_second', 'a number from 0 to 1', lambda v: 0.0 <= v <= 1.0),
    ('match_iou_tentative', 'a number from 0 to 1', lambda v: 0.0 <= v <= 1.0),
    ('measurement_noise_frac', 'a number > 0', lambda v: v > 0.0),
    ('accel_noise_frac_per_s2', 'a number > 0', lambda v: v > 0.0),
    ('size_accel_noise_frac_per_s2', 'a number > 0', lambda v: v > 0.0),
    ('initial_speed_std_frac_per_s', 'a number > 0', lambda v: v > 0.0),
    ('match_padding_sigmas', 'a number >= 0', lambda v: v >= 0.0),
)


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings, checked on creation. Defaults suit 10-30 fps cameras and a detector
    with sane scores. The `setting` fields are the detector's `tracking.*` parameters
    (core/params.py); the others are internal tuning, held to their own rules."""

    max_age_s: float = setting(
        1.0, 'A track not seen for this long (capture time) ends; its id is never reused.',
        min_value=0.01, max_value=600.0)
    high_score_threshold: float = setting(
        0.5, 'Detections from this score are matched to tracks first.',
        min_value=0.0, max_value=1.0)
    low_score_threshold: float = setting(
        0.1, 'Weaker detections, down to this score, can still continue a track (published '
        'when they do, even below confidence_threshold).', min_value=0.0, max_value=1.0)
    new_track_score_threshold: float = setting(
        0.6, 'An unmatched detection from this score starts a new track.',
        min_value=0.0, max_value=1.0)
    match_iou_threshold: float = setting(
        0.2, "Least IoU between a track's predicted box and a detection for them to match.",
        min_value=0.0, max_value=1.0)
    min_hits: int = setting(
        2, 'Matches before a track is confirmed and gets its id.', min_value=1, max_value=100)
    class_aware: bool = setting(
        True, 'A detection continues only tracks of its own class.')
    trail_length: int = setting(
        30, 'Centres drawn as a trail behind each track in image_annotated; 0 draws none.',
        min_value=0, max_value=1000)
    match_iou_second: float = 0.5  # min IoU, confirmed track vs weak detection
    match_iou_tentative: float = 0.3  # min IoU, tentative track vs confident detection
    measurement_noise_frac: float = 0.05  # detector box noise, std as a fraction of box size
    accel_noise_frac_per_s2: float = 6.0  # unmodelled acceleration of the centre, sizes / s^2
    size_accel_noise_frac_per_s2: float = 1.0  # unmodelled change of size rate, sizes / s^2
    initial_speed_std_frac_per_s: float = 2.0  # prior on a new track's speed, sizes / s
    match_padding_sigmas: float = 2.0  # grow both boxes by this many position std to match

    def __post_init__(self) -> None:
        """Reject values the tracker cannot work with (ConfigError naming the key)."""
        check_fields(self, 'tracking.')
        for name, accepted, ok in _TUNING_RULES:
            value = getattr(self, name)
            number = (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
                      and math.isfinite(value))
            if not (number and ok(value)):
                problem = 'is out of range' if number else 'is not a finite number'
                raise ConfigError.of(f'tracking.{name}', f'{value!r} {problem}', accepted)
        if self.low_score_threshold > self.high_score_threshold:
            raise ConfigError.of(
                'tracking.low_score_threshold', f'{self.low_score_threshold:g} is more than '
                f'tracking.high_score_threshold ({self.high_score_threshold:g})',
                'a score no higher than tracking.high_score_threshold')


@dataclass(frozen=True)
class TrackedFrame:
    """The tracker's answer for one frame, aligned with the detections it was given."""

    track_ids: np.ndarray  # int64 [N]: the confirmed track of each detection, or NO_TRACK_ID
    stamp_s: float  # the frame's stamp
    read_only: bool = False  # True when dt <= 0: ids were looked up, state was left alone

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass(frozen=True)
class TrackSnapshot:
    """A confirmed track as it stands after the latest update (for drawing and inspection)."""

    track_id: int
    class_id: int
    box_xyxy: np.ndarray  # float32 [4]: the filtered box at the latest stamp, source pixels
    velocity_px_per_s: np.ndarray  # float32 [2]: centre velocity
    score: float  # score of the latest matched detection
    time_since_update_s: float  # 0 when matched in the latest frame
    trail_xy: np.ndarray  # float32 [K, 2]: filtered centres of its last K matches, oldest first


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray,
               pad_xy: Optional[np.ndarray] = None) -> np.ndarray:
    """[A, B] IoU of every box in `boxes_a` [A, 4] with every box in `boxes_b` [B, 4] (xyxy).

    With `pad_xy` [A, 2], box a[i] AND every box b are first grown by pad_xy[i] px on each side
    (x, y). Written with in-place operations on contiguous [A, B] arrays: at 50 x 50 boxes the
    number of numpy calls and temporaries, not the arithmetic, is the cost.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    if pad_xy is None:
        grow_x = grow_y = np.zeros((len(a), 1))
    else:
        grow_x, grow_y = 2.0 * pad_xy[:, 0:1], 2.0 * pad_xy[:, 1:2]  # [A, 1]
    inter = np.minimum(a[:, 2:3], b[:, 2])
    inter -= np.maximum(a[:, 0:1], b[:, 0])
    inter += grow_x
    np.maximum(inter, 0.0, out=inter)
    inter_h = np.minimum(a[:, 3:4], b[:, 3])
    inter_h -= np.maximum(a[:, 1:2], b[:, 1])
    inter_h += grow_y
    np.maximum(inter_h, 0.0, out=inter_h)
    inter *= inter_h
    union = (b[:, 2] - b[:, 0]) + grow_x
    union *= (b[:, 3] - b[:, 1]) + grow_y
    union += (a[:, 2:3] - a[:, 0:1] + grow_x) * (a[:, 3:4] - a[:, 1:2] + grow_y)
    union -= inter
    with np.errstate(divide='ignore', invalid='ignore'):
        inter /= union
    inter[~(union > 0.0)] = 0.0  # only degenerate boxes
    return inter


def _xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) * 0.5, boxes[:, 2:] - boxes[:, :2]],
                          axis=1)


def _cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    half = state[:, 2:4] * 0.5
    return np.concatenate([state[:, :2] - half, state[:, :2] + half], axis=1)


def _size_per_dim(cxcywh: np.ndarray) -> np.ndarray:
    """[N, 4] scale of each measured dimension: width for cx and w, height for cy and h."""
    return np.concatenate([cxcywh[:, 2:4], cxcywh[:, 2:4]], axis=1)


def _match(iou: np.ndarray, min_iou: float) -> Tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the minimum (1 - IoU) assignment, keeping pairs with IoU >= min_iou.

    Gated-out pairs cost far more than any real pair, so the solver first maximises the number
    of admissible pairs and then their total IoU; forced inadmissible pairs are dropped.
    """
    admissible = iou >= max(min_iou, 1e-9)
    per_row = admissible.sum(axis=1)
    if not per_row.any() or (per_row.max() <= 1 and admissible.sum(axis=0).max() <= 1):
        return np.nonzero(admissible)  # no choice to make (this includes no pair at all)
    cost = np.where(admissible, 1.0 - iou, _UNMATCHABLE)
    from scipy.optimize import linear_sum_assignment  # here: importing scipy takes ~1 s
    rows, cols = linear_sum_assignment(cost)
    keep = admissible[rows, cols]
    return rows[keep], cols[keep]


class Tracker:
    """ByteTrack-style tracker for ONE camera; all state, the id counter included, is its own.

    Not thread-safe: call `update`, `reset`, `tracks` and `trails` from one thread (or under
    one lock), e.g. the detector's inference worker.
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self._next_id = 1
        self._accel = np.array([config.accel_noise_frac_per_s2] * 2
                               + [config.size_accel_noise_frac_per_s2] * 2)
        # Kalman state [5, T, 4]: for each part (value px, rate px/s, var(value),
        # cov(value, rate), var(rate)) one contiguous [T, 4] block over tracks and the
        # dimensions cx, cy, w, h. One row per track, confirmed and tentative alike.
        self._kf = np.zeros((5, 0, 4))
        self._ids = np.zeros(0, dtype=np.int64)  # NO_TRACK_ID while tentative
        self._class = np.zeros(0, dtype=np.int64)
        self._score = np.zeros(0, dtype=np.float32)
        self._hits = np.zeros(0, dtype=np.int64)  # matches so far (= trail points written)
        self._last_seen_s = np.zeros(0)
        self._seen_last_frame = np.zeros(0, dtype=bool)
        self._trail = np.zeros((0, max(1, config.trail_length), 2), dtype=np.float32)  # ring
        self._last_stamp_s: float = float('nan')
        self._frames = 0

    # -- public ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every track (the camera reconnected). Ids keep counting up, never reused."""
        self._keep(np.zeros(len(self._ids), dtype=bool))
        self._last_stamp_s = float('nan')
        self._frames = 0

    @property
    def next_id(self) -> int:
        """The id the next confirmed track will get."""
        return self._next_id

    def update(self, detections: Detections, stamp_s: float) -> TrackedFrame:
        """Track one frame captured at `stamp_s` (seconds); returns one id per detection."""
        stamp_s = float(stamp_s)
        if not np.isfinite(stamp_s):
            raise ValueError(f'stamp_s must be a finite number of seconds, got {stamp_s!r}')
        n = len(detections)
        if not n and not len(self._ids):  # nothing to predict, match or age out: 20x faster
            read_only = self._advance_clock(stamp_s)
            if not read_only:
                self._last_stamp_s = stamp_s
                self._frames += 1
            return TrackedFrame(track_ids=np.zeros(0, dtype=np.int64), stamp_s=stamp_s,
                                read_only=read_only)
        boxes = np.asarray(detections.boxes_xyxy, dtype=np.float64).reshape(n, 4)
        scores = np.asarray(detections.scores, dtype=np.float64).reshape(n)
        # Boxes with NaNs, infinities or no area, and scores below low_score_threshold (or NaN)
        # take no part (NaN compares False).
        valid = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                 & (scores >= self.config.low_score_threshold) & np.isfinite(boxes).all(axis=1))
        dets = valid.nonzero()[0]
        if len(dets) < n:
            boxes, scores = boxes[dets], scores[dets]
            classes = np.asarray(detections.class_ids, dtype=np.int64).reshape(n)[dets]
        else:
            classes = np.asarray(detections.class_ids, dtype=np.int64).reshape(n)

        read_only = self._advance_clock(stamp_s)
        if read_only:
            ids = self._lookup(boxes, scores, classes)
        else:
            ids = self._step(boxes, scores, classes, stamp_s)
        if len(dets) < n:
            all_ids = np.full(n, NO_TRACK_ID, dtype=np.int64)
            all_ids[dets] = ids
            ids = all_ids
        return TrackedFrame(track_ids=ids, stamp_s=stamp_s, read_only=read_only)

    def tracks(self, include_lost: bool = False) -> List[TrackSnapshot]:
        """Confirmed tracks after the latest update: those matched in it, or all alive."""
        rows = np.flatnonzero((self._ids != NO_TRACK_ID)
                              & (self._seen_last_frame | include_lost))
        boxes = _cxcywh_to_xyxy(self._kf[_VALUE, rows]).astype(np.float32)
        return [TrackSnapshot(
            track_id=int(self._ids[row]), class_id=int(self._class[row]), box_xyxy=boxes[k],
            velocity_px_per_s=self._kf[_RATE, row, :2].astype(np.float32),
            score=float(self._score[row]),
            time_since_update_s=float(self._last_stamp_s - self._last_seen_s[row]),
            trail_xy=self._trail_of(row))
            for k, row in enumerate(rows)]

    def trails(self) -> Dict[int, np.ndarray]:
        """Track id -> float32 [K, 2] centres (oldest first) of the confirmed tracks matched in
        the latest frame: what the annotated image draws."""
        rows = np.flatnonzero((self._ids != NO_TRACK_ID) & self._seen_last_frame)
        return {int(self._ids[row]): self._trail_of(row) for row in rows}

    def __len__(self) -> int:
        """Number of confirmed tracks alive (matched recently or within max_age_s)."""
        return int(np.count_nonzero(self._ids != NO_TRACK_ID))

    # -- one frame ---------------------------------------------------------------------------

    def _advance_clock(self, stamp_s: float) -> bool:
        """Predict every track forward to `stamp_s`, or forget them all when the stream's
        clock restarted; True when the frame is not after the previous one (then the frame
        changes no state)."""
        if self._frames > 0:
            dt_s = stamp_s - self._last_stamp_s
            if dt_s < -self.config.max_age_s:
                self.reset()  # the stream's clock restarted
            elif dt_s <= 0.0:
                return True
            else:
                self._predict(dt_s)
        return False

    def _step(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
              stamp_s: float) -> np.ndarray:
        """Age out, associate, update and create; returns the ids of the (valid) detections."""
        cfg = self.config
        # A confirmed track unseen for longer than max_age_s has ended, even when an object
        # shows up where it was: after a gap in the stream (a reconnect) that is a new track.
        expired = (self._ids != NO_TRACK_ID) & (stamp_s - self._last_seen_s > cfg.max_age_s)
        if expired.any():
            self._keep(~expired)
        n = len(scores)
        det_track = np.full(n, -1, dtype=np.intp)  # row of the track each detection updates
        is_high = scores >= cfg.high_score_threshold
        high = is_high.nonzero()[0]
        low = (~is_high).nonzero()[0]
        is_confirmed = self._ids != NO_TRACK_ID
        confirmed = is_confirmed.nonzero()[0]
        tentative = (~is_confirmed).nonzero()[0]
        iou = self._association_iou(boxes, classes) if len(self._ids) and n else None
        track_free = np.ones(len(self._ids), dtype=bool)
        det_free = np.ones(n, dtype=bool)

        def assign(rows: np.ndarray, dets: np.ndarray, min_iou: float) -> None:
            if iou is None or not len(rows) or not len(dets):
                return
            r, c = _match(iou[rows[:, None], dets], min_iou)
            det_track[dets[c]] = rows[r]
            track_free[rows[r]] = False
            det_free[dets[c]] = False

        # 1: confirmed tracks (lost ones included) vs confident detections.
        assign(confirmed, high, cfg.match_iou_threshold)
        # 2: confirmed tracks matched in the previous frame, still free, vs weak detections.
        if len(low):
            assign(confirmed[track_free[confirmed] & self._seen_last_frame[confirmed]], low,
                   cfg.match_iou_second)
        # 3: tentative tracks vs the confident detections left over.
        if len(tentative):
            assign(tentative, high[det_free[high]], cfg.match_iou_tentative)
        fresh = high[det_free[high] & (scores[high] >= cfg.new_track_score_threshold)]

        # Kalman update of the matched tracks, bookkeeping of hits, ids and trails.
        matched_dets = (det_track >= 0).nonzero()[0]
        matched_rows = det_track[matched_dets]
        self._seen_last_frame[:] = False
        if len(matched_rows):
            self._correct(matched_rows, _xyxy_to_cxcywh(boxes[matched_dets]))
            self._score[matched_rows] = scores[matched_dets]
            self._class[matched_rows] = classes[matched_dets]
            self._hits[matched_rows] += 1
            self._last_seen_s[matched_rows] = stamp_s
            self._seen_last_frame[matched_rows] = True
            self._append_trail(matched_rows)
            if len(tentative):
                promote = matched_rows[(self._ids[matched_rows] == NO_TRACK_ID)
                                       & (self._hits[matched_rows] >= cfg.min_hits)]
                self._give_ids(promote)
        track_ids = np.full(n, NO_TRACK_ID, dtype=np.int64)
        track_ids[matched_dets] = self._ids[matched_rows]

        # Removal: tentative tracks that missed this frame, confirmed ones past max_age_s.
        keep = np.where(is_confirmed, stamp_s - self._last_seen_s <= cfg.max_age_s,
                        ~track_free)

        # New tracks from the unmatched confident detections.
        if len(fresh):
            new_rows = self._add_tracks(boxes[fresh], scores[fresh], classes[fresh], stamp_s)
            keep = np.concatenate([keep, np.ones(len(fresh), dtype=bool)])
            if self._frames == 0 or cfg.min_hits <= 1:
                self._give_ids(new_rows)
                track_ids[fresh] = self._ids[new_rows]
        self._keep(keep)
        self._last_stamp_s = stamp_s
        self._frames += 1
        return track_ids

    def _lookup(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Ids for a frame whose stamp is not after the previous one; changes no state."""
        cfg = self.config
        track_ids = np.full(len(scores), NO_TRACK_ID, dtype=np.int64)
        confirmed = (self._ids != NO_TRACK_ID).nonzero()[0]
        if not len(confirmed) or not len(scores):
            return track_ids
        iou = self._association_iou(boxes, classes)[confirmed]
        min_iou = np.where(scores >= cfg.high_score_threshold,
                           cfg.match_iou_threshold, cfg.match_iou_second)
        iou = np.where(iou >= min_iou[None, :], iou, 0.0)
        rows, cols = _match(iou, 1e-9)
        track_ids[cols] = self._ids[confirmed[rows]]
        return track_ids

    def _association_iou(self, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """[T, D] IoU of every track's predicted box with every detection; 0 across classes
        when class-aware.

        For a track matched in the previous frame both boxes are first grown by the same margin,
        `match_padding_sigmas` times the track's predicted position std (at most one box size).
        That keeps the IoU of a perfect hit at 1 and lets a track whose position is uncertain,
        because its speed is not known yet or frames were dropped (long dt), reach a detection
        further away. Lost tracks (missed in the previous frame) get plain IoU: their
        uncertainty grows fast, and grown boxes would let them steal the detections of the
        object they were hidden behind.
        """
        cfg = self.config
        value = self._kf[_VALUE]
        pad = None
        if cfg.match_padding_sigmas > 0.0:
            pad = np.sqrt(self._kf[_VAR, :, :2])
            pad *= cfg.match_padding_sigmas
            np.minimum(pad, value[:, 2:4], out=pad)
            pad *= self._seen_last_frame[:, None]
        iou = iou_matrix(_cxcywh_to_xyxy(value), boxes, pad)
        if cfg.class_aware:
            iou *= self._class[:, None] == classes
        return iou

    # -- Kalman filter: constant velocity, each of cx, cy, w, h on its own -------------------

    def _predict(self, dt_s: float) -> None:
        """Move every track's state and covariance forward by dt_s seconds."""
        tracks = len(self._ids)
        if not tracks:
            return
        # Discrete white-noise acceleration, its std proportional to the box size.
        q = _size_per_dim(self._kf[_VALUE])
        q *= self._accel
        q *= q
        # x' = F x, P' = F P F^T + Q with F = [[1, dt], [0, 1]] per dimension: all five parts
        # of every track are linear in (value, rate, p_xx, p_xv, p_vv, q): one matrix product.
        dt2 = dt_s * dt_s
        step = np.array([[1.0, dt_s, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 1.0, 2.0 * dt_s, dt2, dt2 * dt2 / 4.0],
                         [0.0, 0.0, 0.0, 1.0, dt_s, dt2 * dt_s / 2.0],
                         [0.0, 0.0, 0.0, 0.0, 1.0, dt2]])
        parts = np.concatenate([self._kf.reshape(5, -1), q.reshape(1, -1)])
        self._kf = (step @ parts).reshape(5, tracks, 4)
        sizes = self._kf[_VALUE, :, 2:4]
        np.maximum(sizes, _MIN_SIZE_PX, out=sizes)

    def _correct(self, rows: np.ndarray, measured: np.ndarray) -> None:
        """Kalman update of tracks `rows` with measured cx, cy, w, h [M, 4]."""
        kf = self._kf[:, rows]
        noise = _size_per_dim(measured)
        noise *= self.config.measurement_noise_frac
        noise *= noise
        noise += kf[_VAR]  # innovation variance
        gain = kf[_VAR:_COV + 1] / noise  # [2, M, 4]: gain of value, gain of rate
        innovation = measured - kf[_VALUE]
        kf[_VALUE:_RATE + 1] += gain * innovation
        # P' = (I - K H) P per 2x2 block; p_vv first: it needs the old p_xv.
        kf[_RATE_VAR] -= gain[1] * kf[_COV]
        kf[_VAR:_COV + 1] *= 1.0 - gain[0]
        sizes = kf[_VALUE, :, 2:4]
        np.maximum(sizes, _MIN_SIZE_PX, out=sizes)
        self._kf[:, rows] = kf

    # -- bookkeeping ---------------------------------------------------------------------------

    def _add_tracks(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                    stamp_s: float) -> np.ndarray:
        """Append tentative tracks for detections; returns their rows."""
        cfg = self.config
        k = len(scores)
        measured = _xyxy_to_cxcywh(boxes)
        scale = _size_per_dim(measured)
        speed_std = cfg.initial_speed_std_frac_per_s * scale
        speed_std[:, 2:] *= 0.25  # sizes change slower than positions
        kf = np.zeros((5, k, 4))
        kf[_VALUE] = measured
        kf[_VAR] = (2.0 * cfg.measurement_noise_frac * scale) ** 2
        kf[_RATE_VAR] = speed_std ** 2
        first = len(self._ids)
        trail = np.zeros((k,) + self._trail.shape[1:], dtype=np.float32)
        trail[:, 0] = measured[:, :2]
        self._kf = np.concatenate([self._kf, kf], axis=1)
        self._ids = np.concatenate([self._ids, np.full(k, NO_TRACK_ID, dtype=np.int64)])
        self._class = np.concatenate([self._class, classes])
        self._score = np.concatenate([self._score, scores.astype(np.float32)])
        self._hits = np.concatenate([self._hits, np.ones(k, dtype=np.int64)])
        self._last_seen_s = np.concatenate([self._last_seen_s, np.full(k, stamp_s)])
        self._seen_last_frame = np.concatenate([self._seen_last_frame, np.ones(k, dtype=bool)])
        self._trail = np.concatenate([self._trail, trail])
        return np.arange(first, first + k)

    def _give_ids(self, rows: np.ndarray) -> None:
        """Confirm tracks `rows`: each gets the next id of this tracker."""
        count = len(rows)
        self._ids[rows] = np.arange(self._next_id, self._next_id + count)
        self._next_id += count

    def _append_trail(self, rows: np.ndarray) -> None:
        """Write the filtered centres of tracks `rows` (just matched) into their trail rings."""
        if self.config.trail_length:
            slot = (self._hits[rows] - 1) % self.config.trail_length
            self._trail[rows, slot] = self._kf[_VALUE, rows, :2]

    def _trail_of(self, row: int) -> np.ndarray:
        """Float32 [K, 2] trail of track `row`, oldest first (K <= trail_length)."""
        length = self.config.trail_length
        written = int(self._hits[row])
        if not length:
            return np.zeros((0, 2), dtype=np.float32)
        if written <= length:
            return self._trail[row, :written].copy()
        start = written % length
        return np.concatenate([self._trail[row, start:], self._trail[row, :start]])

    def _keep(self, keep: np.ndarray) -> None:
        """Drop every track whose entry in `keep` is False."""
        if keep.all():
            return
        self._kf = self._kf[:, keep]
        self._ids = self._ids[keep]
        self._class = self._class[keep]
        self._score = self._score[keep]
        self._hits = self._hits[keep]
        self._last_seen_s = self._last_seen_s[keep]
        self._seen_last_frame = self._seen_last_frame[keep]
        self._trail = self._trail[keep]
