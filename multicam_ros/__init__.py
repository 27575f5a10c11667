"""multicam_ros: many RTSP cameras, one shared detection model, standard ROS 2 outputs."""

__version__ = '0.1.0'
