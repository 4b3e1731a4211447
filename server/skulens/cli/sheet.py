"""Contact sheets (`skulens search --sheet`): the query beside its hits, drawn at the query's height with
title, category and score under each; a scene query's regions as numbered boxes with their best hit."""

from __future__ import annotations

import io

MIN_H, MAX_H = 192, 384        # row height: the query's own, within these bounds
CAPTION = 64                   # pixels of text under each picture
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"]


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)   # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _fit(im, h: int):
    """Scaled to height h; small pictures (28 px thumbnails) by nearest neighbour, so they stay sharp."""
    from PIL import Image
    w = max(1, round(im.width * h / im.height))
    return im.resize((w, h), Image.NEAREST if im.height * 2 <= h else Image.LANCZOS)


def _clip(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def draw_sheet(path: str, query: bytes | None, hits, thumbnail, regions=()) -> None:
    """query: the image bytes (or None for a text/vector/id query); hits: Hit messages; thumbnail:
    product id -> bytes or None; regions: (box (x0, y0, x1, y1) in query pixels, score, best Hit)."""
    from PIL import Image, ImageDraw
    q = Image.open(io.BytesIO(query)).convert("RGB") if query else None
    h = min(MAX_H, max(MIN_H, q.height if q is not None else MIN_H))
    qs = _fit(q, h) if q is not None else None
    tiles = []
    for hit in hits:
        t = thumbnail(hit.product_id, hit.image_id)  # the image that matched, of the product's several
        tiles.append(_fit(Image.open(io.BytesIO(t)).convert("RGB"), h) if t else Image.new("RGB", (h, h), "#ddd"))
    width = 8 + sum(w + 8 for w in ([qs.width] if qs is not None else []) + [max(t.width, h) for t in tiles])
    sheet = Image.new("RGB", (max(width, 200), h + CAPTION + 8), "white")
    draw = ImageDraw.Draw(sheet)
    big, small = _font(14), _font(12)
    x = 8
    if qs is not None:
        sheet.paste(qs, (x, 4))
        scale = qs.height / q.height
        for i, (box, score, best) in enumerate(regions):
            colour = PALETTE[i % len(PALETTE)]
            b = [x + box[0] * scale, 4 + box[1] * scale, x + box[2] * scale, 4 + box[3] * scale]
            draw.rectangle(b, outline=colour, width=3)
            label = f"{i + 1}  {score:.2f}"     # the caption under hit i + 1 names the product
            draw.text((b[0] + 3, b[1] + 2), label, fill=colour, font=small, stroke_width=2, stroke_fill="white")
        draw.text((x, h + 10), "query" + (f" ({len(regions)} regions)" if regions else ""), fill="black", font=big)
        x += qs.width + 8
    for i, (hit, t) in enumerate(zip(hits, tiles), 1):
        cell = max(t.width, h)
        sheet.paste(t, (x + (cell - t.width) // 2, 4))
        draw.rectangle([x, 4, x + cell - 1, 4 + h - 1], outline="#888")
        lines = [(f"{i}. {hit.title or hit.product_id}", big), (hit.category or hit.product_id, small),
                 (f"score {hit.score:.3f}", small)]
        y = h + 10
        for text, font in lines:
            draw.text((x, y), _clip(draw, text, font, cell), fill="black", font=font)
            y += 18
        x += cell + 8
    sheet.save(path)
