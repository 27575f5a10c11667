"""The viewer's one page: every camera in a grid, live, no reloads. ROS-free.

Plain HTML, CSS and JavaScript, no outside resources (it works on a machine without a network).
The grid fills the window, so every camera is in view at once (one column on a narrow screen).
The script reads the viewer's `/live` stream (system/viewer.py: one connection for all
cameras, pictures and a status report each second), shows each picture in its tile as it
comes, writes the camera's fps and latency under its name, and covers a camera that is down
with NO SIGNAL. When the viewer goes away it says so and reconnects.
"""
import html
import json
from typing import Sequence

_STYLE = """
:root { color-scheme: dark; }
* { box-sizing: border-box; }
html, body { height: 100%; }
body { margin: 0; display: flex; flex-direction: column; background: #111; color: #ddd;
       font: 14px/1.3 system-ui, sans-serif; }
header { display: flex; gap: 1em; align-items: baseline; padding: 8px 12px; background: #1b1b1b;
         border-bottom: 1px solid #333; }
header h1 { font-size: 16px; margin: 0; color: #fff; }
header .link { margin-left: auto; font-size: 13px; color: #8c8; }
header .link.lost { color: #f66; }
main { flex: 1; min-height: 0; display: grid; gap: 8px; padding: 8px;
       grid-template-columns: repeat(var(--columns, 2), minmax(0, 1fr));
       grid-auto-rows: minmax(0, 1fr); }
.tile { margin: 0; display: flex; flex-direction: column; min-height: 0; background: #000;
        border: 1px solid #333; border-radius: 4px; overflow: hidden; }
.tile figcaption { display: flex; justify-content: space-between; padding: 4px 8px;
                   background: #222; font-variant-numeric: tabular-nums; }
.tile .name { font-weight: 600; color: #fff; }
.tile .figures { color: #9c9; }
.picture { position: relative; flex: 1; min-height: 0; background: #000; }
.picture img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
@media (max-width: 700px) {
  body { display: block; height: auto; }
  main { grid-template-columns: 1fr; grid-auto-rows: auto; }
  .picture { flex: none; aspect-ratio: 4 / 3; }
}
.overlay { position: absolute; inset: 0; display: none; flex-direction: column;
           align-items: center; justify-content: center; gap: 6px;
           background: rgba(20, 20, 20, 0.82); text-align: center; }
.overlay .big { font-size: 28px; font-weight: 800; letter-spacing: 0.06em; }
.overlay .small { color: #bbb; }
.tile[data-state="no signal"] .overlay { display: flex; }
.tile[data-state="no signal"] .overlay .big { color: #fff; background: #b00;
                                              padding: 4px 14px; }
.tile[data-state="no signal"] { border-color: #b00; }
.tile[data-state="no signal"] .figures { color: #f66; }
.tile[data-state="waiting"] .overlay, .tile[data-state="idle"] .overlay { display: flex; }
"""

_SCRIPT = """
const tiles = Array.from(document.querySelectorAll('.tile'));
const link = document.querySelector('.link');
const decoder = new TextDecoder();
document.querySelector('main').style.setProperty(
    '--columns', Math.max(1, Math.ceil(Math.sqrt(tiles.length))));

function showStatus(cameras) {
  cameras.forEach((camera, index) => {
    const tile = tiles[index];
    if (!tile) return;
    tile.dataset.state = camera.state;
    const figures = tile.querySelector('.figures');
    if (camera.state === 'live') {
      const latency = camera.latency_ms === null ? '-' : Math.round(camera.latency_ms);
      figures.textContent = `${camera.fps.toFixed(1)} fps \\u00b7 ${latency} ms`;
    } else {
      figures.textContent = camera.state === 'no signal' ? 'NO SIGNAL' : camera.state;
    }
    tile.querySelector('.overlay .big').textContent =
        camera.state === 'no signal' ? 'NO SIGNAL' : '';
    tile.querySelector('.overlay .small').textContent = camera.detail;
  });
}

function showPicture(index, body) {
  const tile = tiles[index];
  if (!tile) return;
  const img = tile.querySelector('img');
  const url = URL.createObjectURL(new Blob([body], {type: 'image/jpeg'}));
  const old = img.dataset.url;
  img.onload = () => { if (old) URL.revokeObjectURL(old); };
  img.dataset.url = url;
  img.src = url;
  tile.dataset.frames = String(Number(tile.dataset.frames || 0) + 1);
}

function consume(buffer) {
  let offset = 0;
  while (buffer.length - offset >= 4) {
    const view = new DataView(buffer.buffer, buffer.byteOffset + offset, 4);
    const headerLength = view.getUint32(0);
    if (buffer.length - offset < 4 + headerLength) break;
    const header = JSON.parse(decoder.decode(
        buffer.subarray(offset + 4, offset + 4 + headerLength)));
    const end = offset + 4 + headerLength + header.length;
    if (buffer.length < end) break;
    if (header.kind === 'status') showStatus(header.cameras);
    else if (header.kind === 'jpeg') {
      showPicture(header.camera, buffer.slice(offset + 4 + headerLength, end));
    }
    offset = end;
  }
  return buffer.slice(offset);
}

function setLink(up) {
  link.textContent = up ? 'live' : 'viewer not reachable: retrying';
  link.classList.toggle('lost', !up);
}

async function run() {
  for (;;) {
    try {
      const response = await fetch('live', {cache: 'no-store'});
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setLink(true);
      const reader = response.body.getReader();
      let buffer = new Uint8Array(0);
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        const joined = new Uint8Array(buffer.length + value.length);
        joined.set(buffer);
        joined.set(value, buffer.length);
        buffer = consume(joined);
      }
    } catch (error) {
      console.log('live stream:', error);
    }
    setLink(false);
    tiles.forEach(tile => { tile.dataset.state = 'no signal'; });
    await new Promise(resolve => setTimeout(resolve, 1000));
  }
}
run();
"""


def page_html(title: str, labels: Sequence[str]) -> str:
    """The page for cameras `labels`, in tile order."""
    tiles = '\n'.join(
        f'<figure class="tile" data-camera="{html.escape(label)}" data-state="waiting">'
        f'<figcaption><span class="name">{html.escape(label)}</span>'
        f'<span class="figures">waiting</span></figcaption>'
        f'<div class="picture"><img alt="{html.escape(label)}">'
        f'<div class="overlay"><div class="big"></div>'
        f'<div class="small">waiting for pictures</div></div></div></figure>'
        for label in labels)
    count = len(labels)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>'
            f'<header><h1>{html.escape(title)}</h1>'
            f'<span>{count} camera{"s" * (count != 1)}</span>'
            f'<span class="link">connecting</span></header>'
            f'<main data-cameras="{html.escape(json.dumps(list(labels)))}">{tiles}</main>'
            f'<script>{_SCRIPT}</script></body></html>\n')
