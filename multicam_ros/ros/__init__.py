"""The ROS layer: the only modules that import rclpy or message types. Thin nodes that
translate between the ROS-free core and topics, parameters and diagnostics."""
