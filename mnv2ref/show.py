"""Feature-map pictures with Pillow only: one layer as a grid of channels, or a whole inverted residual block.

Each channel is scaled on its own (so weak channels stay visible) with one of
two colour maps, chosen per tensor:

* non-negative tensors (after ReLU6): black (0) -> purple -> orange -> yellow (channel max);
* signed tensors (conv / batch-norm outputs, the linear projection, the
  residual sum): blue (-max|x|) -> white (0) -> red (+max|x|).

The legend under the title says which one is used; the number over each cell
is the channel index.
"""
from __future__ import annotations

import math

import numpy as np

SEQ = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64)  # inferno-ish
DIV = np.array([[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]], np.float64)
BG, FG, GRID_BG = (255, 255, 255), (20, 20, 20), (235, 235, 235)


def font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _lut(anchors: np.ndarray, t: np.ndarray) -> np.ndarray:
    """t in [0, 1] -> RGB uint8 by linear interpolation between the anchor colours."""
    pos = np.clip(t, 0, 1) * (len(anchors) - 1)
    i = np.minimum(pos.astype(int), len(anchors) - 2)
    f = (pos - i)[..., None]
    return (anchors[i] * (1 - f) + anchors[i + 1] * f).round().astype(np.uint8)


def colorize(fmap: np.ndarray, signed: bool) -> np.ndarray:
    """One channel (h, w) -> RGB (h, w, 3), scaled by its own maximum."""
    fmap = np.asarray(fmap, np.float64)
    if signed:
        m = np.abs(fmap).max()
        return _lut(DIV, 0.5 + 0.5 * fmap / m if m > 0 else np.full(fmap.shape, 0.5))
    m = fmap.max()
    return _lut(SEQ, fmap / m if m > 0 else np.zeros(fmap.shape))


def legend(signed: bool) -> str:
    return ("each channel scaled to its own max |x|: blue < 0 < red (white = 0)" if signed
            else "each channel scaled to its own max: black = 0 ... yellow = max")


def _cell_image(rgb: np.ndarray, cell: int):
    from PIL import Image

    img = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    s = cell / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return img.resize(size, Image.NEAREST if s >= 1 else Image.BOX)


def channel_grid(t: np.ndarray, *, rows: int | None = None, max_channels: int = 64, cell: int = 64,
                 signed: bool | None = None):
    """(H, W, C) -> a grid image of the first ``max_channels`` channels, each labelled with its index.

    ``rows`` fixes the number of grid rows (to line panels up); default: as square as possible.
    """
    from PIL import Image, ImageDraw

    n = min(t.shape[-1], max_channels)
    signed = bool(t.min() < 0) if signed is None else signed
    rows = rows or max(1, math.ceil(math.sqrt(n)))
    cols = max(1, math.ceil(n / rows))
    rows = math.ceil(n / cols)
    f = font(10 if cell >= 56 else 9)
    cells = [_cell_image(colorize(t[:, :, c], signed), cell) for c in range(n)]
    cw, ch = cells[0].size
    lab, gap = 12, 3
    W, H = cols * (cw + gap) + gap, rows * (ch + lab + gap) + gap
    img = Image.new("RGB", (W, H), GRID_BG)
    d = ImageDraw.Draw(img)
    for c, cim in enumerate(cells):
        r, k = divmod(c, cols)
        x, y = gap + k * (cw + gap), gap + r * (ch + lab + gap)
        ch_ = t[:, :, c]
        d.text((x + 1, y), str(c) + (f" ={float(ch_.flat[0]):.1g}" if ch_.min() == ch_.max() else ""), fill=FG, font=f)
        img.paste(cim, (x, y + lab))
    return img


def _header(lines: list[str], width: int, thumb=None):
    """A white strip with a bold-ish first line and smaller lines below, an optional thumbnail on the left."""
    from PIL import Image, ImageDraw

    big, small = font(16), font(12)
    x0 = 8 + (thumb.size[0] + 10 if thumb is not None else 0)
    need = max([big.getlength(lines[0])] + [small.getlength(l) for l in lines[1:]]) if hasattr(big, "getlength") \
        else 7 * max(len(l) for l in lines)
    width = max(width, int(x0 + need + 12))
    h = max(8 + 22 + 16 * (len(lines) - 1) + 6, (thumb.size[1] + 16) if thumb is not None else 0)
    img = Image.new("RGB", (width, h), BG)
    d = ImageDraw.Draw(img)
    if thumb is not None:
        img.paste(thumb, (8, 8))
    d.text((x0, 8), lines[0], fill=FG, font=big)
    for j, line in enumerate(lines[1:]):
        d.text((x0, 32 + 16 * j), line, fill=(70, 70, 70), font=small)
    return img


def _thumb(image: np.ndarray | None, height: int = 72):
    if image is None:
        return None
    from PIL import Image

    im = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    s = height / im.size[1]
    return im.resize((max(1, round(im.size[0] * s)), height), Image.BILINEAR)


def _stack(parts, width):
    from PIL import Image

    H = sum(p.size[1] for p in parts)
    width = max([width] + [p.size[0] for p in parts])
    out = Image.new("RGB", (width, H), BG)
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.size[1]
    return out


def vector_grid(v: np.ndarray, cols: int = 40, cell: int = 14):
    """A vector (C,) (pooled features, class scores) as rows of squares, all scaled together, rows labelled."""
    from PIL import Image, ImageDraw

    signed = bool(v.min() < 0)
    m = float(np.abs(v).max()) or 1.0
    rgb = _lut(DIV, 0.5 + 0.5 * v / m) if signed else _lut(SEQ, v / m)
    rows = -(-len(v) // cols)
    f = font(10)
    lab = int(f.getlength(str((rows - 1) * cols))) + 8 if hasattr(f, "getlength") else 30
    img = Image.new("RGB", (lab + cols * cell + 4, rows * cell + 4), GRID_BG)
    d = ImageDraw.Draw(img)
    for k, c in enumerate(rgb):
        r, q = divmod(k, cols)
        if q == 0:
            d.text((2, 2 + r * cell), str(k), fill=FG, font=f)
        x, y = lab + q * cell, 2 + r * cell
        d.rectangle([x, y, x + cell - 2, y + cell - 2], fill=tuple(int(u) for u in c))
    return img


def layer_figure(t: np.ndarray, name: str, kind: str = "", *, image=None, max_channels: int = 64, cell: int = 64,
                 note: str = ""):
    """One layer's output (H, W, C) for one image as a labelled grid; a vector (C,) as one heat map."""
    signed = bool(t.min() < 0)
    if t.ndim == 1:
        grid = vector_grid(t)
        top = np.argsort(-t)[:5]
        lines = [f"{name}{' (' + kind + ')' if kind else ''}   output {t.shape[0]}",
                 f"one square per value, {t.shape[0]} in rows of 40 (row labels = first index); values "
                 f"{t.min():.3g} .. {t.max():.3g};  largest at " + ", ".join(f"{i} ({t[i]:.3g})" for i in top),
                 ("blue < 0 < red, scaled to the largest |value|" if signed
                  else "black = 0 ... yellow = the largest value")] + ([note] if note else [])
    else:
        grid = channel_grid(t, max_channels=max_channels, cell=cell)
        n, C = min(t.shape[-1], max_channels), t.shape[-1]
        lines = [f"{name}{' (' + kind + ')' if kind else ''}   output {'x'.join(map(str, t.shape))}",
                 f"channels 0-{n - 1}" + (f" of {C}" if n < C else "") + f";  values {t.min():.3g} .. "
                 f"{t.max():.3g};  {100 * np.mean(t == 0):.0f}% exact zeros",
                 legend(signed) + "; '=v' after a channel number: the whole channel is v"] + ([note] if note else [])
    width = max(grid.size[0] + 16, 620)
    head = _header(lines, width, _thumb(image))
    from PIL import Image

    body = Image.new("RGB", (width, grid.size[1] + 12), BG)
    body.paste(grid, (8, 0))
    return _stack([head, body], width)


def block_figure(panels: list[tuple[str, str, np.ndarray]], arrows: list[str], title: list[str], *, image=None,
                 max_channels: int = 48, cell: int = 48):
    """Panels side by side: [(caption, tensor name, (H, W, C))], ``arrows[i]`` labels the step after panel i."""
    from PIL import Image, ImageDraw

    n_max = max(min(t.shape[-1], max_channels) for _, _, t in panels)
    rows = max(1, math.ceil(math.sqrt(n_max)))
    grids = [channel_grid(t, rows=rows, max_channels=max_channels, cell=cell) for _, _, t in panels]
    f, fs = font(13), font(11)
    arrow_w, cap_h = 150, 64
    gh = max(g.size[1] for g in grids)
    def tw(text, fnt):
        return int(fnt.getlength(text)) + 10 if hasattr(fnt, "getlength") else 7 * len(text) + 10

    widths = [max(g.size[0], tw(cap, f), tw(name, fs)) for (cap, name, _), g in zip(panels, grids)]
    W = 16 + sum(widths) + arrow_w * (len(grids) - 1)
    body = Image.new("RGB", (W, cap_h + gh + 12), BG)
    d = ImageDraw.Draw(body)
    x = 8
    for j, ((caption, name, t), g) in enumerate(zip(panels, grids)):
        C = t.shape[-1]
        shown = min(C, max_channels)
        d.text((x, 4), caption, fill=FG, font=f)
        d.text((x, 22), name, fill=(70, 70, 70), font=fs)
        d.text((x, 36), "x".join(map(str, t.shape)) + (f" ({shown} of {C} shown)" if shown < C else ""),
               fill=(70, 70, 70), font=fs)
        d.text((x, 50), "signed" if t.min() < 0 else ">= 0", fill=(150, 40, 40) if t.min() < 0 else (90, 50, 130),
               font=fs)
        body.paste(g, (x, cap_h))
        x += widths[j]
        if j < len(arrows):
            y = cap_h + gh // 2
            d.line([(x + 12, y), (x + arrow_w - 14, y)], fill=FG, width=2)
            d.polygon([(x + arrow_w - 14, y - 6), (x + arrow_w - 4, y), (x + arrow_w - 14, y + 6)], fill=FG)
            parts = arrows[j].split("\n")
            for k, part in enumerate(parts):
                d.text((x + 12, y - 8 - 14 * (len(parts) - k)), part, fill=FG, font=fs)
            x += arrow_w
    lines = title + ["colours: blue < 0 < red for signed tensors, black = 0 ... yellow = max for ReLU6 outputs; "
                     "each channel scaled to its own maximum; numbers = channel index, '=v': the whole channel is v"]
    head = _header(lines, W, _thumb(image))
    return _stack([head, body], W)
