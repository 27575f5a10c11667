"""ROS-free core: frames and slots, capture, sources, batching, inference, tracking,
drawing, settings and model back-ends. Nothing here imports rclpy or message types."""
