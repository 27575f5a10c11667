"""ROS-free bring-up: the cams.yaml schema (config), the node plan (plan), the transport policy
(transport), the supervision policy (supervision), and the supervisor and status table behind
`multicam-ros launch` (supervisor, status). Nothing here imports rclpy, launch or message types
(test/test_layers.py); the ROS side is handed in by cli.py and launch/cams.launch.py."""
