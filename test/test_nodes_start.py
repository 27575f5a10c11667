"""Both node commands start as real ROS 2 nodes and end within 2 s on SIGINT and SIGTERM."""
import signal
import time

import pytest
from rclpy.node import Node

from ros_helpers import wait_for


def graph_has(node: Node, name: str, namespace: str) -> bool:
    return (name, namespace) in node.get_node_names_and_namespaces()


# name, parameters, and a topic it publishes once it is fully up
NODES = {
    'camera_node': ('camera_node', ['-p', 'url:=rtsp://127.0.0.1:9/unreachable'],
                    '/probe/image_raw'),
    'detector_node': ('detector', ['-p', 'cameras:=[/cam0]', '-p', 'device:=cpu',
                                   '-p', 'model.name:=ssdlite320_mobilenet_v3_large',
                                   '-p', 'model.weights:=none'],
                      '/probe/detector/label_info'),
}


@pytest.mark.parametrize('script', sorted(NODES))
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_node_joins_graph_and_stops_on_signal(ros_context, node_launcher, script, sig):
    observer = Node('observer', context=ros_context)
    name, params, ready_topic = NODES[script]
    proc = node_launcher.start([script, '--ros-args', '-r', '__ns:=/probe', *params])
    assert wait_for(lambda: graph_has(observer, name, '/probe'), timeout_s=20.0), \
        node_launcher.logs()
    assert wait_for(lambda: observer.get_publishers_info_by_topic(ready_topic), 60.0), \
        node_launcher.logs()
    started = time.monotonic()
    proc.send(sig)
    assert proc.wait(timeout_s=5.0) == 0, proc.output()
    assert time.monotonic() - started < 2.0
    observer.destroy_node()
