"""Fixtures shared by the whole suite; each family lives in its own module."""
from ros_fixtures import *  # noqa: F401,F403
from rtsp_fixtures import *  # noqa: F401,F403
from model_fixtures import *  # noqa: F401,F403
