"""The README's parameter tables, made from the settings (multicam_ros/core/params.py).

    python tools/param_tables.py          # print the tables
    python tools/param_tables.py --write  # rewrite them in README.md between their markers

test/test_params.py fails when README.md holds tables that differ from what this prints.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from multicam_ros.core.params import CAMERA_PARAMS, DETECTOR_PARAMS  # noqa: E402
from multicam_ros.core.settings import Setting  # noqa: E402

README = REPO / 'README.md'
TABLES = {'camera_node': CAMERA_PARAMS, 'detector_node': DETECTOR_PARAMS}


def _default(spec: Setting) -> str:
    if isinstance(spec.default, bool):
        return 'true' if spec.default else 'false'
    if isinstance(spec.default, list):
        return '[]'
    if isinstance(spec.default, str):
        return f"'{spec.default}'" if spec.default else "''"
    return f'{spec.default:g}' if isinstance(spec.default, float) else str(spec.default)


def table(specs: Sequence[Setting]) -> str:
    """A markdown table: parameter, default, accepted values, run-time changeable, what."""
    lines = ['| parameter | default | accepted | at run time | what |', '|---|---|---|---|---|']
    for spec in specs:
        description = spec.description.replace('|', '\\|').replace('<', '&lt;')
        lines.append(f'| `{spec.name}` | `{_default(spec)}` | {spec.accepted} | '
                     f'{"no" if spec.read_only else "yes"} | {description} |')
    return '\n'.join(lines)


def markers(name: str) -> tuple:
    return f'<!-- parameters of {name}: made by tools/param_tables.py -->', \
        f'<!-- end of parameters of {name} -->'


def readme_tables(text: str) -> Dict[str, str]:
    """The tables that README.md holds now, by node (missing: '')."""
    found = {}
    for name in TABLES:
        begin, end = markers(name)
        if begin in text and end in text:
            found[name] = text.split(begin, 1)[1].split(end, 1)[0].strip()
        else:
            found[name] = ''
    return found


def write(text: str) -> str:
    for name, specs in TABLES.items():
        begin, end = markers(name)
        if begin not in text or end not in text:
            raise SystemExit(f'README.md lacks the markers {begin!r} ... {end!r}')
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = f'{head}{begin}\n{table(specs)}\n{end}{tail}'
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--write', action='store_true', help='rewrite the tables in README.md')
    args = parser.parse_args()
    if args.write:
        README.write_text(write(README.read_text()))
        return 0
    for name, specs in TABLES.items():
        print(f'{name}:\n{table(specs)}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
