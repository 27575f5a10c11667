"""Both node commands start as real ROS 2 nodes and end cleanly on SIGINT and SIGTERM."""
import signal
import time

import pytest
from rclpy.node import Node

from ros_helpers import wait_for


def graph_has(node: Node, name: str, namespace: str) -> bool:
    return (name, namespace) in node.get_node_names_and_namespaces()


@pytest.mark.parametrize('script,name', [('camera_node', 'camera_node'),
                                         ('detector_node', 'detector')])
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_node_joins_graph_and_stops_on_signal(ros_context, node_launcher, script, name, sig):
    observer = Node('observer', context=ros_context)
    proc = node_launcher.start([script, '--ros-args', '-r', '__ns:=/probe'])
    assert wait_for(lambda: graph_has(observer, name, '/probe'), timeout_s=20.0), \
        node_launcher.logs()
    started = time.monotonic()
    proc.send(sig)
    assert proc.wait(timeout_s=5.0) == 0, proc.output()
    assert time.monotonic() - started < 2.0
    observer.destroy_node()
