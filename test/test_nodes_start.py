"""Both node commands start as real ROS 2 nodes and end within 2 s on SIGINT and SIGTERM."""
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from ros_helpers import ExecutorThread, TopicRecorder, wait_for


def graph_has(node: Node, name: str, namespace: str) -> bool:
    return (name, namespace) in node.get_node_names_and_namespaces()


# name and parameters
NODES = {
    'camera_node': ('camera_node', ['-p', 'url:=rtsp://127.0.0.1:9/unreachable']),
    'detector_node': ('detector', ['-p', 'cameras:=[/cam0]', '-p', 'device:=cpu',
                                   '-p', 'model.backend:=torchvision',
                                   '-p', 'model.name:=ssdlite320_mobilenet_v3_large',
                                   '-p', 'model.weights:=none']),
}


@pytest.mark.parametrize('script', sorted(NODES))
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_node_joins_graph_and_stops_on_signal(ros_context, node_launcher, script, sig):
    observer = Node('observer', context=ros_context)
    name, params = NODES[script]
    # Its first /diagnostics message comes from a timer: the node is fully up and spinning.
    diagnostics = TopicRecorder(observer, DiagnosticArray, '/diagnostics', 50)
    proc = node_launcher.start([script, '--ros-args', '-r', '__ns:=/probe', *params])
    assert wait_for(lambda: graph_has(observer, name, '/probe'), timeout_s=20.0), \
        node_launcher.logs()
    with ExecutorThread(ros_context, [observer]):
        assert wait_for(lambda: any(s.name.startswith(f'/probe/{name}:')
                                    for m in diagnostics.messages for s in m.status), 60.0), \
            node_launcher.logs()
    started = time.monotonic()
    proc.send(sig)
    assert proc.wait(timeout_s=5.0) == 0, proc.output()
    assert time.monotonic() - started < 2.0
    observer.destroy_node()
