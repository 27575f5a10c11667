"""The package and its executables, with the module behind each: the one list that setup.py
(console scripts), the node plan and `multicam-ros launch` all read.

Plain data with no imports, so that setup.py can read it without importing the package.
"""
PACKAGE = 'multicam_ros'
CAMERA_EXECUTABLE = 'camera_node'
DETECTOR_EXECUTABLE = 'detector_node'
CLI_EXECUTABLE = 'multicam-ros'

# executable -> module whose main() it runs
NODE_MODULES = {
    CAMERA_EXECUTABLE: 'multicam_ros.ros.camera_node',
    DETECTOR_EXECUTABLE: 'multicam_ros.ros.detector_node',
}
# A node process enters through this module, which takes its stop signals before the node's
# slow imports (see there); its function of each executable's name runs that node.
NODE_ENTRY_MODULE = 'multicam_ros.ros.entry'
# console script -> module:function (setup.py)
CONSOLE_SCRIPTS = {**{name: f'{NODE_ENTRY_MODULE}:{name}' for name in NODE_MODULES},
                   CLI_EXECUTABLE: 'multicam_ros.cli:main'}
