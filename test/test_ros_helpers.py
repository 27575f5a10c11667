"""The test helpers themselves: isolation by domain id, and a process talking to the test."""
from std_msgs.msg import String
from rclpy.node import Node

from ros_helpers import ExecutorThread, make_context, next_domain_id, wait_for


def test_contexts_on_different_domains_do_not_hear_each_other(ros_context, ros_domain_id):
    other_id = next_domain_id()
    assert other_id != ros_domain_id
    other = make_context(other_id)
    try:
        same = Node('same_domain_listener', context=ros_context)
        far = Node('far_listener', context=other)
        talker = Node('talker', context=ros_context)
        heard = {'same': 0, 'far': 0}
        same.create_subscription(String, 'chatter', lambda m: heard.__setitem__(
            'same', heard['same'] + 1), 10)
        far.create_subscription(String, 'chatter', lambda m: heard.__setitem__(
            'far', heard['far'] + 1), 10)
        pub = talker.create_publisher(String, 'chatter', 10)
        with ExecutorThread(ros_context, [same, talker]), ExecutorThread(other, [far]):
            assert wait_for(lambda: (pub.publish(String(data='hi')) or heard['same'] > 3),
                            timeout_s=10.0, interval_s=0.1)
        assert heard['far'] == 0
    finally:
        other.try_shutdown()
