"""Unit tests of multicam_ros.core.tracking on synthetic scenes with known ground truth.

Every scene is a set of objects moving at constant velocity (plus box noise), rendered into
per-frame ground truth and shuffled, noisy detections. Tracking quality is scored with the
standard CLEAR-MOT / ID metrics of motmetrics (MOTA, IDF1, identity switches). Its
`distances.iou_matrix` calls np.asfarray, which numpy 2 removed, so the distance matrix is built
here from motmetrics' own `distances.boxiou` (the same three lines, without that call).
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import motmetrics as mm
import numpy as np
import pytest

from multicam_ros.core.models.base import Detections
from multicam_ros.core.settings import ConfigError
from multicam_ros.core.tracking import NO_TRACK_ID, TrackedFrame, Tracker, TrackerConfig

FRAME_W_PX, FRAME_H_PX = 1280, 720
MATCH_IOU = 0.5  # a hypothesis counts as covering a ground-truth box from this IoU on
Interval = Tuple[float, float]


# -- synthetic scenes -------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneObject:
    """One object: a box moving at constant velocity while it is in the scene."""

    gt_id: int
    start_xy: Tuple[float, float]  # centre at enter_s, px
    velocity_px_per_s: Tuple[float, float]
    size_wh: Tuple[float, float] = (40.0, 80.0)
    enter_s: float = 0.0
    leave_s: float = math.inf
    class_id: int = 0
    score: float = 0.9
    hidden: Tuple[Interval, ...] = ()  # not visible: neither ground truth nor detection
    weak: Tuple[Interval, ...] = ()  # visible, detected with a low score
    weak_score: float = 0.3

    def centre(self, t_s: float) -> Tuple[float, float]:
        dt = t_s - self.enter_s
        return (self.start_xy[0] + self.velocity_px_per_s[0] * dt,
                self.start_xy[1] + self.velocity_px_per_s[1] * dt)

    def visible(self, t_s: float) -> bool:
        return (self.enter_s <= t_s < self.leave_s
                and not any(a <= t_s < b for a, b in self.hidden))


@dataclass
class SceneFrame:
    """Ground truth and detections of one frame (detections in shuffled order)."""

    stamp_s: float
    gt_ids: np.ndarray  # [G]
    gt_xyxy: np.ndarray  # [G, 4]
    detections: Detections
    det_gt_ids: np.ndarray  # [N]: the object each detection comes from


def render(objects: Sequence[SceneObject], stamps_s: Sequence[float], seed: int = 0,
           box_noise_px: float = 1.5, score_noise: float = 0.04) -> List[SceneFrame]:
    """Ground truth and noisy, shuffled detections of `objects` at each stamp."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in stamps_s:
        visible = [o for o in objects if o.visible(t)]
        gt = np.array([[c[0] - o.size_wh[0] / 2, c[1] - o.size_wh[1] / 2,
                        c[0] + o.size_wh[0] / 2, c[1] + o.size_wh[1] / 2]
                       for o in visible for c in [o.centre(t)]], dtype=np.float64).reshape(-1, 4)
        noisy = gt + rng.normal(0.0, box_noise_px, gt.shape)
        scores = np.array([o.weak_score if any(a <= t < b for a, b in o.weak) else o.score
                           for o in visible])
        scores = np.clip(scores + rng.normal(0.0, score_noise, len(visible)), 0.01, 1.0)
        order = rng.permutation(len(visible))
        ids = np.array([o.gt_id for o in visible], dtype=np.int64)
        classes = np.array([o.class_id for o in visible], dtype=np.int64)
        frames.append(SceneFrame(
            stamp_s=float(t), gt_ids=ids, gt_xyxy=gt,
            detections=Detections(noisy[order].astype(np.float32),
                                  scores[order].astype(np.float32), classes[order]),
            det_gt_ids=ids[order]))
    return frames


def random_objects(rng: np.random.Generator, count: int, start_s: float = 0.0,
                   speed_px_per_s: float = 120.0) -> List[SceneObject]:
    """`count` objects in a 1280x720 frame at `start_s`: random places, sizes, velocities."""
    objects = []
    for k in range(count):
        w = float(rng.uniform(30, 80))
        h = float(rng.uniform(1.2, 2.5) * w)
        start = (float(rng.uniform(100, FRAME_W_PX - 100)),
                 float(rng.uniform(100, FRAME_H_PX - 100)))
        angle = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.2, 1.0) * speed_px_per_s
        velocity = (float(speed * math.cos(angle)), float(speed * math.sin(angle)))
        objects.append(SceneObject(gt_id=k + 1, start_xy=start, velocity_px_per_s=velocity,
                                   size_wh=(w, h), enter_s=start_s,
                                   score=float(rng.uniform(0.6, 0.95))))
    return objects


def stamps(duration_s: float, fps: float, start_s: float = 0.0) -> np.ndarray:
    return start_s + np.arange(int(round(duration_s * fps))) / fps


def run(tracker: 'TrackerLike', frames: Sequence[SceneFrame]) -> List[np.ndarray]:
    return [tracker.update(f.detections, f.stamp_s).track_ids for f in frames]


# -- standard metrics ------------------------------------------------------------------------

def xywh(xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def score(frames: Sequence[SceneFrame], ids_per_frame: Sequence[np.ndarray]) -> Dict[str, float]:
    """MOTA, IDF1, identity switches, ... of the published ids (motmetrics)."""
    acc = mm.MOTAccumulator(auto_id=True)
    for frame, ids in zip(frames, ids_per_frame):
        published = ids != NO_TRACK_ID
        hyp_boxes = frame.detections.boxes_xyxy[published]
        if len(frame.gt_ids) and len(hyp_boxes):
            dist = 1.0 - mm.distances.boxiou(xywh(frame.gt_xyxy)[:, None],
                                             xywh(hyp_boxes)[None, :])
            dist = np.where(dist > 1.0 - MATCH_IOU, np.nan, dist)
        else:
            dist = np.empty((len(frame.gt_ids), len(hyp_boxes)))
        acc.update(frame.gt_ids.tolist(), ids[published].tolist(), dist)
    names = ['mota', 'idf1', 'num_switches', 'num_misses', 'num_false_positives',
             'num_unique_objects', 'mostly_tracked']
    summary = mm.metrics.create().compute(acc, metrics=names, name='scene')
    return {name: float(summary[name].iloc[0]) for name in names}


def assert_tracked_well(metrics: Dict[str, float], max_switches: int = 0,
                        min_mota: float = 0.9, min_idf1: float = 0.9) -> None:
    """The bar a correct tracker clears with margin on these scenes."""
    assert metrics['num_switches'] <= max_switches, metrics
    assert metrics['mota'] >= min_mota, metrics
    assert metrics['idf1'] >= min_idf1, metrics


# -- broken trackers: prove the metric assertions can fail ----------------------------------

class TrackerLike:
    def update(self, detections: Detections, stamp_s: float) -> TrackedFrame:
        raise NotImplementedError


class FreshIdEveryFrame(TrackerLike):
    """Gives every detection a brand-new id in every frame."""

    def __init__(self) -> None:
        self.next_id = 1

    def update(self, detections: Detections, stamp_s: float) -> TrackedFrame:
        ids = np.arange(self.next_id, self.next_id + len(detections), dtype=np.int64)
        self.next_id += len(detections)
        return TrackedFrame(track_ids=ids, stamp_s=stamp_s)


class IdIsIndex(TrackerLike):
    """Uses a detection's position in the list as its id."""

    def update(self, detections: Detections, stamp_s: float) -> TrackedFrame:
        return TrackedFrame(track_ids=np.arange(1, len(detections) + 1), stamp_s=stamp_s)


@pytest.fixture
def busy_scene() -> List[SceneFrame]:
    rng = np.random.default_rng(7)
    return render(random_objects(rng, 12), stamps(4.0, 30.0), seed=7)


# -- whole scenes ------------------------------------------------------------------------------

@pytest.mark.parametrize('seed', [1, 2, 3])
def test_random_scene_is_tracked_cleanly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = render(random_objects(rng, 12), stamps(5.0, 25.0), seed=seed)
    metrics = score(frames, run(Tracker(), frames))
    assert_tracked_well(metrics)
    assert metrics['mota'] > 0.97 and metrics['idf1'] > 0.97, metrics


def test_metric_assertions_fail_for_broken_trackers(busy_scene: List[SceneFrame]) -> None:
    good = score(busy_scene, run(Tracker(), busy_scene))
    assert_tracked_well(good)
    for broken in (FreshIdEveryFrame(), IdIsIndex()):
        metrics = score(busy_scene, run(broken, busy_scene))
        with pytest.raises(AssertionError):
            assert_tracked_well(metrics)
        assert metrics['num_switches'] > 50, (type(broken).__name__, metrics)
        assert metrics['idf1'] < 0.5, (type(broken).__name__, metrics)


def test_crossing_objects_keep_their_ids() -> None:
    """Two same-class objects cross; the one behind is not detected while they overlap."""
    left = SceneObject(1, (200.0, 300.0), (150.0, 4.0), size_wh=(60.0, 120.0))
    right = SceneObject(2, (1000.0, 320.0), (-150.0, -4.0), size_wh=(60.0, 120.0))
    times = stamps(5.0, 30.0)
    # Hide `right` whenever the boxes overlap by IoU > 0.1 (a detector's NMS would drop it).
    overlap = [t for t in times if _box_iou(left, right, t) > 0.1]
    assert len(overlap) >= 8  # the scene really has an occluded stretch
    right = SceneObject(2, right.start_xy, right.velocity_px_per_s, right.size_wh,
                        hidden=((overlap[0], overlap[-1] + 1e-6),))
    frames = render([left, right], times, seed=3)
    ids = run(Tracker(), frames)
    assert_tracked_well(score(frames, ids))
    assert _ids_by_object(frames, ids) == {1: {1}, 2: {2}}


def test_crossing_objects_both_detected_throughout() -> None:
    a = SceneObject(1, (200.0, 300.0), (250.0, 0.0), size_wh=(50.0, 100.0))
    b = SceneObject(2, (1000.0, 300.0), (-250.0, 0.0), size_wh=(50.0, 100.0))
    frames = render([a, b], stamps(3.2, 30.0, start_s=0.0), seed=4)
    assert_tracked_well(score(frames, run(Tracker(), frames)))


def test_occlusion_gap_within_max_age_keeps_the_id() -> None:
    obj = SceneObject(1, (100.0, 360.0), (200.0, 0.0), hidden=((1.0, 1.6),))
    other = SceneObject(2, (600.0, 100.0), (0.0, 80.0))
    frames = render([obj, other], stamps(3.0, 30.0, start_s=0.0), seed=5)
    ids = run(Tracker(TrackerConfig(max_age_s=1.0)), frames)
    assert_tracked_well(score(frames, ids))
    by_object = _ids_by_object(frames, ids)
    assert by_object[1] == {1} and by_object[2] == {2}, by_object


def test_occlusion_longer_than_max_age_gives_a_new_id() -> None:
    obj = SceneObject(1, (100.0, 360.0), (100.0, 0.0), hidden=((1.0, 2.5),))
    frames = render([obj], stamps(4.0, 20.0, start_s=0.0), seed=6)
    tracker = Tracker(TrackerConfig(max_age_s=1.0))
    ids = run(tracker, frames)
    before = {int(i) for f, i in zip(frames, ids) if f.stamp_s < 1.0 for i in i if i > 0}
    after = {int(i) for f, i in zip(frames, ids) if f.stamp_s > 2.6 for i in i if i > 0}
    assert len(before) == 1 and len(after) == 1 and before != after
    assert min(after) > max(before)  # a new id, never an old one reused


def test_random_frame_drops_keep_ids_stable() -> None:
    """30% of the frames never reach the tracker; the stamps still say the real time."""
    rng = np.random.default_rng(11)
    epoch_s = 1.7e9  # stamps as header stamps carry them: seconds since 1970
    objects = random_objects(rng, 10, start_s=epoch_s, speed_px_per_s=250.0)
    frames = render(objects, stamps(6.0, 30.0, start_s=epoch_s), seed=11)
    kept = [f for f in frames if rng.random() >= 0.3]
    assert 0.6 * len(frames) < len(kept) < 0.8 * len(frames)
    metrics = score(kept, run(Tracker(), kept))
    assert_tracked_well(metrics)


@pytest.mark.parametrize('fps', [10.0, 30.0])
def test_an_abrupt_u_turn_keeps_the_id(fps: float) -> None:
    """The object reverses at 1 s; the filter's acceleration noise lets the track follow."""
    going = SceneObject(1, (300.0, 300.0), (150.0, 0.0), leave_s=1.0)
    coming = SceneObject(1, (450.0, 300.0), (-150.0, 0.0), enter_s=1.0)
    frames = render([going, coming], stamps(2.5, fps), seed=1)
    ids = run(Tracker(), frames)
    assert_tracked_well(score(frames, ids))
    assert _ids_by_object(frames, ids) == {1: {1}}


def test_prediction_uses_the_real_time_between_frames() -> None:
    """A fast object seen again after a gap only overlaps where the real dt says it is."""
    obj = SceneObject(1, (100.0, 300.0), (400.0, 0.0), size_wh=(40.0, 80.0))
    times = list(stamps(1.0, 30.0)) + [1.3]  # 9 frames dropped: it moved 3 widths
    frames = render([obj], times, seed=8, box_noise_px=0.5)
    tracker = Tracker()
    ids = run(tracker, frames)
    assert [int(i[0]) for i in ids] == [1] * len(frames)
    # The same detection stamped one frame after the previous one is 3 widths off: no match.
    wrong = Tracker()
    run(wrong, frames[:-1])
    assert wrong.update(frames[-1].detections, times[-2] + 1 / 30).track_ids[0] == NO_TRACK_ID


def test_objects_entering_and_leaving() -> None:
    objects = [SceneObject(1, (100.0, 100.0), (50.0, 0.0), leave_s=1.0),
               SceneObject(2, (300.0, 300.0), (0.0, 40.0), enter_s=0.5, leave_s=2.0),
               SceneObject(3, (600.0, 200.0), (-30.0, 20.0), enter_s=1.5),
               SceneObject(4, (900.0, 500.0), (20.0, -20.0), enter_s=2.5)]
    frames = render(objects, stamps(4.0, 20.0, start_s=0.0), seed=9)
    tracker = Tracker(TrackerConfig(max_age_s=0.5))
    ids = []
    alive: Dict[float, set] = {}
    for frame in frames:
        ids.append(tracker.update(frame.detections, frame.stamp_s).track_ids)
        alive[round(frame.stamp_s, 3)] = {t.track_id for t in tracker.tracks(include_lost=True)}
    assert_tracked_well(score(frames, ids))
    by_object = _ids_by_object(frames, ids)
    assert all(len(v) == 1 for v in by_object.values()), by_object
    assert sorted(i for v in by_object.values() for i in v) == [1, 2, 3, 4]  # never reused
    # Object 1 left at 1.0 s: its track is kept for max_age_s (0.5 s), then removed.
    assert 1 in alive[1.45] and 1 not in alive[1.55]
    # The first appearance of a late object has no id yet; the second one has.
    first_frame_of_3 = next(k for k, f in enumerate(frames) if 3 in f.det_gt_ids)
    assert _id_of(frames, ids, first_frame_of_3, 3) == NO_TRACK_ID
    assert _id_of(frames, ids, first_frame_of_3 + 1, 3) == 3


def test_first_frame_of_a_stream_confirms_at_once() -> None:
    frames = render([SceneObject(1, (100.0, 100.0), (10.0, 0.0)),
                     SceneObject(2, (400.0, 100.0), (10.0, 0.0))], [0.0, 0.1])
    tracker = Tracker()
    assert sorted(tracker.update(frames[0].detections, 0.0).track_ids) == [1, 2]


# -- ByteTrack's second association ----------------------------------------------------------

def test_low_score_detections_keep_the_track_alive() -> None:
    obj = SceneObject(1, (100.0, 300.0), (150.0, 0.0), weak=((1.0, 1.5),), weak_score=0.3)
    frames = render([obj], stamps(2.5, 20.0, start_s=0.0), seed=10, score_noise=0.02)
    ids = run(Tracker(), frames)
    assert all(len(i) == 1 and i[0] == 1 for i in ids)  # the weak frames too
    assert_tracked_well(score(frames, ids), min_mota=0.99, min_idf1=0.99)
    # Without a second association the weak frames go unpublished.
    single = TrackerConfig(low_score_threshold=0.5)
    plain = run(Tracker(single), frames)
    weak_frames = [k for k, f in enumerate(frames) if 1.0 <= f.stamp_s < 1.5]
    assert all(len(plain[k]) == 1 and plain[k][0] == NO_TRACK_ID for k in weak_frames)


def test_low_score_detections_never_start_a_track() -> None:
    ghost = SceneObject(1, (100.0, 300.0), (50.0, 0.0), score=0.3)
    frames = render([ghost], stamps(1.0, 20.0, start_s=0.0), score_noise=0.02)
    tracker = Tracker()
    assert all(i[0] == NO_TRACK_ID for i in run(tracker, frames))
    assert len(tracker) == 0 and tracker.next_id == 1


def test_a_weak_detection_cannot_steal_a_lost_track() -> None:
    """Second association only serves tracks seen in the previous frame (ByteTrack)."""
    tracker = Tracker()
    box = np.array([[100, 100, 140, 180]], np.float32)
    tracker.update(_dets(box, [0.9]), 0.0)
    tracker.update(_dets(np.zeros((0, 4), np.float32), []), 0.1)  # missed once: lost
    assert tracker.update(_dets(box, [0.3]), 0.2).track_ids[0] == NO_TRACK_ID
    assert tracker.update(_dets(box, [0.9]), 0.3).track_ids[0] == 1


# -- classes ------------------------------------------------------------------------------------

def test_class_aware_matching() -> None:
    box = np.array([[100, 100, 140, 180]], np.float32)
    aware = Tracker()
    aware.update(_dets(box, [0.9], [0]), 0.0)
    assert aware.update(_dets(box, [0.9], [1]), 0.1).track_ids[0] == NO_TRACK_ID  # tentative
    assert aware.update(_dets(box, [0.9], [1]), 0.2).track_ids[0] == 2
    blind = Tracker(TrackerConfig(class_aware=False))
    blind.update(_dets(box, [0.9], [0]), 0.0)
    assert blind.update(_dets(box, [0.9], [1]), 0.1).track_ids[0] == 1
    assert blind.tracks()[0].class_id == 1


def test_overlapping_objects_of_different_classes() -> None:
    """A person on a bicycle: near-identical boxes, two classes, two stable ids."""
    person = SceneObject(1, (200.0, 300.0), (120.0, 0.0), size_wh=(50.0, 110.0), class_id=0)
    bike = SceneObject(2, (200.0, 320.0), (120.0, 0.0), size_wh=(60.0, 100.0), class_id=1)
    frames = render([person, bike], stamps(3.0, 15.0, start_s=0.0), seed=12)
    ids = run(Tracker(), frames)
    assert_tracked_well(score(frames, ids))
    for frame, frame_ids in zip(frames, ids):
        classes = frame.detections.class_ids
        assert len(set(frame_ids[classes == 0]) & set(frame_ids[classes == 1])) == 0


# -- state, reset, stamps -------------------------------------------------------------------------

def test_reset_forgets_tracks_but_never_reuses_ids() -> None:
    frames = render([SceneObject(1, (100.0, 100.0), (30.0, 0.0)),
                     SceneObject(2, (500.0, 300.0), (0.0, 30.0))], stamps(1.0, 10.0))
    tracker = Tracker()
    run(tracker, frames)
    assert len(tracker) == 2 and tracker.next_id == 3
    tracker.reset()
    assert len(tracker) == 0 and tracker.tracks(include_lost=True) == [] and tracker.trails() == {}
    # The camera is back (its clock may have restarted): first frame of a new stream.
    restarted = render([SceneObject(1, (100.0, 100.0), (30.0, 0.0)),
                        SceneObject(2, (500.0, 300.0), (0.0, 30.0))], stamps(1.0, 10.0, 0.0))
    ids = run(tracker, restarted)
    assert sorted(ids[0]) == [3, 4] and all(sorted(i) == [3, 4] for i in ids)


def test_duplicate_and_out_of_order_stamps_do_not_change_state() -> None:
    frames = render([SceneObject(1, (100.0, 100.0), (100.0, 0.0)),
                     SceneObject(2, (500.0, 300.0), (0.0, 60.0))], stamps(1.0, 10.0, 0.0))
    tracker = Tracker()
    run(tracker, frames[:6])
    before = _state(tracker)
    duplicate = tracker.update(frames[5].detections, frames[5].stamp_s)  # dt = 0
    assert duplicate.read_only and sorted(duplicate.track_ids) == [1, 2]
    older = tracker.update(frames[4].detections, frames[4].stamp_s)  # dt < 0
    assert older.read_only and sorted(older.track_ids) == [1, 2]
    noise = tracker.update(_dets(np.array([[900, 600, 950, 700]], np.float32), [0.9]),
                           frames[5].stamp_s)
    assert noise.track_ids[0] == NO_TRACK_ID
    assert _state(tracker) == before
    ids = run(tracker, frames[6:])
    assert all(sorted(i) == [1, 2] for i in ids) and tracker.next_id == 3


def test_a_clock_that_jumps_back_resets_the_tracker() -> None:
    frames = render([SceneObject(1, (100.0, 100.0), (30.0, 0.0))], stamps(1.0, 10.0, 50.0))
    tracker = Tracker(TrackerConfig(max_age_s=1.0))
    run(tracker, frames)
    after_jump = tracker.update(frames[0].detections, 10.0)
    assert not after_jump.read_only and after_jump.track_ids[0] == 2


def test_empty_frames_move_the_clock_like_any_other() -> None:
    """Frames with nothing in them while no track is alive take a short cut: their stamps
    still count (a repeated or older one is read-only, a jump back past max_age_s starts a
    new stream)."""
    tracker = Tracker(TrackerConfig(max_age_s=1.0))
    box = _dets(np.array([[100, 100, 140, 180]], np.float32), [0.9])
    assert not tracker.update(Detections(), 5.0).read_only
    assert tracker.update(Detections(), 5.0).read_only
    assert tracker.update(Detections(), 4.5).read_only
    assert not tracker.update(Detections(), 5.1).read_only
    older = tracker.update(box, 5.05)  # before the last empty frame: changes nothing
    assert older.read_only and len(tracker.tracks(include_lost=True)) == 0
    assert tracker.update(box, 5.2).track_ids[0] == NO_TRACK_ID  # not the first frame
    assert tracker.update(box, 5.3).track_ids[0] == 1
    assert len(tracker.update(Detections(), 6.4)) == 0 and len(tracker) == 0
    assert not tracker.update(Detections(), 1.0).read_only  # the clock jumped back
    assert tracker.update(box, 1.1).track_ids[0] == NO_TRACK_ID
    assert tracker.update(box, 1.2).track_ids[0] == 2


def test_trackers_share_no_state() -> None:
    rng = np.random.default_rng(21)
    scene_a = render(random_objects(rng, 5), stamps(2.0, 15.0), seed=1)
    scene_b = render(random_objects(rng, 7), stamps(2.0, 15.0), seed=2)
    alone_a = run(Tracker(), scene_a)
    a, b = Tracker(), Tracker()
    for frame_a, frame_b, expected in zip(scene_a, scene_b, alone_a):
        np.testing.assert_array_equal(a.update(frame_a.detections, frame_a.stamp_s).track_ids,
                                      expected)
        b.update(frame_b.detections, frame_b.stamp_s)
    assert a.next_id == 6 and b.next_id == 8


# -- trails, odd input, configuration ---------------------------------------------------------

def test_trails_follow_the_object() -> None:
    frames = render([SceneObject(1, (100.0, 300.0), (200.0, 0.0))], stamps(2.0, 20.0, 0.0),
                    box_noise_px=0.5)
    tracker = Tracker(TrackerConfig(trail_length=10))
    run(tracker, frames)
    trail = tracker.trails()[1]
    assert trail.shape == (10, 2) and trail.dtype == np.float32
    assert np.all(np.diff(trail[:, 0]) > 0)  # oldest first, moving right
    assert abs(trail[-1, 0] - frames[-1].gt_xyxy[0, [0, 2]].mean()) < 3.0
    snapshot = tracker.tracks()[0]
    np.testing.assert_array_equal(snapshot.trail_xy, trail)
    assert abs(snapshot.velocity_px_per_s[0] - 200.0) < 20.0
    none = Tracker(TrackerConfig(trail_length=0))
    run(none, frames)
    assert none.trails()[1].shape == (0, 2)


def test_empty_and_invalid_detections() -> None:
    tracker = Tracker()
    assert len(tracker.update(Detections(), 0.0)) == 0
    boxes = np.array([[np.nan, 0, 10, 10], [10, 10, 5, 20], [0, 0, np.inf, 10],
                      [0, 0, 20, 40], [100, 100, 120, 140]], np.float32)
    scores = [0.9, 0.9, 0.9, 0.9, np.nan]
    ids = tracker.update(_dets(boxes, scores), 0.1).track_ids
    # The stream began with an empty frame: a new object needs its second match for an id.
    assert ids.dtype == np.int64 and list(ids) == [NO_TRACK_ID] * 5
    ids = tracker.update(_dets(boxes, scores), 0.2).track_ids
    assert list(ids) == [NO_TRACK_ID, NO_TRACK_ID, NO_TRACK_ID, 1, NO_TRACK_ID]
    with pytest.raises(ValueError, match='stamp_s'):
        tracker.update(Detections(), float('nan'))


@pytest.mark.parametrize('name, value, accepted', [
    ('max_age_s', 0.0, 'a number from 0.01 to 600'),
    ('high_score_threshold', 1.5, 'a number from 0 to 1'),
    ('match_iou_threshold', -0.1, 'a number from 0 to 1'),
    ('min_hits', 0, 'an integer from 1 to 100'),
    ('trail_length', -1, 'an integer from 0 to 1000'),
    ('class_aware', 'yes', 'true or false'),
    ('match_iou_second', 1.5, 'a number from 0 to 1'),  # internal tuning, same message form
    ('measurement_noise_frac', 0.0, 'a number > 0'),
    ('match_padding_sigmas', float('nan'), 'a number >= 0'),
])
def test_bad_config_names_the_key(name: str, value: object, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrackerConfig(**{name: value})
    message = str(info.value)
    assert message.startswith(f'tracking.{name}: {value!r} ')
    assert message.endswith(f'; accepted: {accepted}')


def test_low_score_threshold_above_high_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r'^tracking.low_score_threshold: 0.7 is more than '
                                          r'tracking.high_score_threshold \(0.5\); accepted: '):
        TrackerConfig(low_score_threshold=0.7)


def test_min_hits_one_publishes_new_tracks_at_once() -> None:
    box = np.array([[100, 100, 140, 180]], np.float32)
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update(Detections(), 0.0)
    assert tracker.update(_dets(box, [0.9]), 0.1).track_ids[0] == 1


# -- helpers ------------------------------------------------------------------------------------

def _dets(boxes: np.ndarray, scores: Sequence[float],
          classes: Optional[Sequence[int]] = None) -> Detections:
    classes = [0] * len(scores) if classes is None else classes
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.asarray(scores, np.float32), np.asarray(classes, np.int64))


def _box_iou(a: SceneObject, b: SceneObject, t: float) -> float:
    def box(o: SceneObject) -> np.ndarray:
        c = o.centre(t)
        return np.array([c[0] - o.size_wh[0] / 2, c[1] - o.size_wh[1] / 2, *o.size_wh])
    return float(mm.distances.boxiou(box(a), box(b)))


def _ids_by_object(frames: Sequence[SceneFrame], ids: Sequence[np.ndarray]) -> Dict[int, set]:
    out: Dict[int, set] = {}
    for frame, frame_ids in zip(frames, ids):
        for gt, tid in zip(frame.det_gt_ids, frame_ids):
            if tid != NO_TRACK_ID:
                out.setdefault(int(gt), set()).add(int(tid))
    return out


def _id_of(frames: Sequence[SceneFrame], ids: Sequence[np.ndarray], k: int, gt_id: int) -> int:
    return int(ids[k][list(frames[k].det_gt_ids).index(gt_id)])


def _state(tracker: Tracker) -> List[Tuple]:
    return [(s.track_id, tuple(s.box_xyxy), tuple(s.velocity_px_per_s), s.time_since_update_s,
             tuple(map(tuple, s.trail_xy))) for s in tracker.tracks(include_lost=True)]
