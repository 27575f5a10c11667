"""The parameter tables: the one source of truth both nodes and cams.yaml checking use."""
import pytest

from multicam_ros.core.params import CAMERA_PARAMS, DETECTOR_PARAMS, ParamSpec


@pytest.mark.parametrize('specs', [CAMERA_PARAMS, DETECTOR_PARAMS], ids=['camera', 'detector'])
def test_names_unique_defaults_valid_descriptions_present(specs):
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    for spec in specs:
        assert spec.check(spec.default) == spec.default, spec.name
        assert len(spec.description) > 10, spec.name


def test_each_node_has_only_its_own_parameters():
    camera = {spec.name for spec in CAMERA_PARAMS}
    detector = {spec.name for spec in DETECTOR_PARAMS}
    assert camera & detector == {'reliability', 'diagnostics_period_s'}
    assert not any(name.startswith(('model.', 'tracking.')) for name in camera)


@pytest.mark.parametrize('value,words', [
    (-1.0, 'from 0 to 10'), (11.0, 'from 0 to 10'), ('fast', 'a number'), (True, 'a number'),
    (float('nan'), 'from 0 to 10')])
def test_check_names_the_parameter_and_what_is_accepted(value, words):
    spec = ParamSpec('fps', 0.0, 'Frames per second cap.', min_value=0.0, max_value=10.0)
    with pytest.raises(ValueError, match='parameter cam0: fps') as info:
        spec.check(value, where='cam0: ')
    assert words in str(info.value)


def test_check_coerces_integers_for_numbers_and_checks_choices():
    assert ParamSpec('fps', 0.0, 'Frames per second cap.').check(15) == 15.0
    encoding = ParamSpec('encoding', 'bgr8', 'Image encoding.', choices=('bgr8', 'mono8'))
    with pytest.raises(ValueError, match="one of 'bgr8', 'mono8'"):
        encoding.check('rgb16')
    names = ParamSpec('classes', [], 'Class names to keep.')
    assert names.check(('a', 'b')) == ['a', 'b']
    with pytest.raises(ValueError, match='a list of strings'):
        names.check(['a', 3])
