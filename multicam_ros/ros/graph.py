"""Which nodes are alive on the ROS graph: how `multicam-ros launch` refuses to start a plan
whose nodes already run (system/supervisor.py gets `running_nodes` from cli.py and stays
ROS-free).

A short-lived node in a context of its own joins the graph of this process's ROS_DOMAIN_ID
(and discovery range), waits for discovery, lists the node names and namespaces it has seen,
and leaves. DDS discovery has no "done" signal: it waits DISCOVERY_WAIT_S unless every name
asked for shows up sooner, and once one has shown up, up to COMPLETE_WAIT_S more for the others
(the answer is a refusal then, and its message should name them all; on a busy machine nodes
show up one by one). Nodes of a run that was just SIGKILLed can still be listed until their DDS
lease expires; nodes that stopped normally leave the graph at once.
"""
import os
import time
from typing import List, Sequence

import rclpy
from rclpy.context import Context
from rclpy.signals import SignalHandlerOptions

DISCOVERY_WAIT_S = 3.0
COMPLETE_WAIT_S = 3.0
POLL_S = 0.1
PROBE_NODE_NAME = 'multicam_ros_graph_probe'


def fqn(name: str, namespace: str) -> str:
    """`camera_node` in `/front` -> `/front/camera_node`."""
    return namespace.rstrip('/') + '/' + name


def running_nodes(wanted: Sequence[str], wait_s: float = DISCOVERY_WAIT_S,
                  complete_wait_s: float = COMPLETE_WAIT_S) -> List[str]:
    """Those of the fully qualified node names `wanted` that are alive on the graph now."""
    wanted_set = set(wanted)
    context = Context()
    # The caller handles SIGINT/SIGTERM itself (the launcher): rclpy must not take them.
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(f'{PROBE_NODE_NAME}_{os.getpid()}', context=context,
                                 enable_rosout=False, start_parameter_services=False)
        try:
            deadline_s = time.monotonic() + wait_s
            extended = False
            while True:
                seen = {fqn(name, namespace)
                        for name, namespace in node.get_node_names_and_namespaces()}
                found = wanted_set & seen
                if found and not extended:
                    deadline_s = max(deadline_s, time.monotonic() + complete_wait_s)
                    extended = True
                if found == wanted_set or time.monotonic() >= deadline_s:
                    return sorted(found)
                time.sleep(POLL_S)
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()
