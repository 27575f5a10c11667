"""ROS-free bring-up: the cams.yaml schema, the node plan, the transport policy, the
supervision policy and the supervisor behind `multicam-ros launch`."""
