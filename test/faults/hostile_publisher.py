"""A publisher for the fault suite, run as its own process: `good` sends small frames at 15 Hz,
`huge` sends 8000 x 8000 bgr8 frames (192 MB each) at 1 Hz, as the rogue publisher of issue 12
did. Both with the package's large-frame transport, as camera_node has, so that the huge ones
do arrive. Stops on SIGINT/SIGTERM."""
import signal
import sys
import time

import numpy as np


def main() -> None:
    mode, topic = sys.argv[1:3]
    from multicam_ros.ros.node_main import image_qos, use_large_frame_transport
    use_large_frame_transport()
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    from multicam_ros.ros.convert import image_from_array, stamp_from_ns
    rclpy.init()
    node = rclpy.create_node(f'{mode}_publisher')
    pub = node.create_publisher(Image, topic, image_qos('reliable'))
    size, period_s = ((90, 160), 1 / 15) if mode == 'good' else ((8000, 8000), 1.0)
    frame = np.full((*size, 3), 80, np.uint8)
    running = [True]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: running.__setitem__(0, False))
    sent = 0
    while running[0]:
        header = Header(stamp=stamp_from_ns(node.get_clock().now().nanoseconds), frame_id='x')
        pub.publish(image_from_array(frame, 'bgr8', header))
        sent += 1
        if sent == 1 or mode == 'huge':
            print(f'{mode}: sent {sent}', flush=True)
        time.sleep(period_s)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == '__main__':
    main()
