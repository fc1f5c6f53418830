#!/usr/bin/env python3
"""Write the hostile inputs the tests feed vocollama: small files that declare
far more than they hold, or are cut short. Each must be refused with one
`error:` line, quickly and in little memory. Run from the repository root:

    pip install pillow
    python3 tools/make_hostile.py            # writes assets/hostile/

  tall-1x16000.png     a valid 1 x 16000 PNG (~100 bytes): padded to a square it would be 256 Mpx
  wide-16000x1.png     the same on its side: resized to a 336-pixel short edge it would be 1.8 Gpx
  tall-1x20000.png     a valid 1 x 20000 PNG: taller than any decoder here accepts
  side-100000.png      a PNG header declaring 100000 x 100000 (one short IDAT)
  screen-65535.gif     a 1-pixel GIF frame on a 65535 x 65535 logical screen (43 bytes)
  truncated.jpg        a 64 x 64 JPEG cut off inside its scan
  truncated.png        a 64 x 64 PNG cut off inside its pixel data
  overflow.voco        a .voco header whose declared sizes overflow when multiplied (~100 bytes)
  layers.voco          a .voco header declaring 4 billion layers of one token
  tokenizer-decoder.json   the fixture tokenizer.json with a syntax error inside its decoder
  tokenizer-template.json  the fixture tokenizer.json whose post-processor template names a
                       special token it does not define
  fuzz/vocollama-fuzz-tokenizer-*.bin  the two above as the fuzzer saves a case
                       (the file's name, a zero byte, its bytes), replayed by the fuzz tests
"""
import io
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(__file__), "..", "assets", "hostile")


def png(width, height, rows):
    """A grey 8-bit PNG of `rows` (bytes per row, filter byte included) compressed."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def gif_on_screen(side):
    """One 1x1 frame on a `side` x `side` logical screen, two-colour global palette."""
    header = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + image + b"\x3b"


def voco_header(tokens, layers, kv_heads, head_dim):
    """A version-1 .voco header (magic, version, fingerprint, sizes, dtype bytes) and nothing after it."""
    return (b"VOCO\r\n\x1a\n" + struct.pack("<I", 1) + bytes(32)
            + struct.pack("<IIII", tokens, layers, kv_heads, head_dim) + bytes(4))


def main():
    os.makedirs(OUT, exist_ok=True)
    files = {
        "tall-1x16000.png": png(1, 16000, b"\x00\x80" * 16000),
        "wide-16000x1.png": png(16000, 1, b"\x00" + b"\x80" * 16000),
        "tall-1x20000.png": png(1, 20000, b"\x00\x80" * 20000),
        "side-100000.png": png(100000, 100000, b"\x00" * 64),
        "screen-65535.gif": gif_on_screen(65535),
        "overflow.voco": voco_header(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        "layers.voco": voco_header(1, 0xFFFFFFFF, 1, 1),
    }
    whole_png = png(64, 64, b"".join(b"\x00" + bytes((x * 4 + y) % 256 for x in range(64)) for y in range(64)))
    files["truncated.png"] = whole_png[: len(whole_png) // 2]
    from PIL import Image  # only the JPEG needs an encoder
    img = Image.new("RGB", (64, 64))
    img.putdata([((x * 4) % 256, (y * 4) % 256, (x * y) % 256) for y in range(64) for x in range(64)])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    files["truncated.jpg"] = jpeg[: len(jpeg) * 2 // 3]
    tokenizer = os.path.join(os.path.dirname(__file__), "..", "assets", "fixtures", "tokenizer", "tokenizer.json")
    with open(tokenizer, "rb") as f:
        tok = f.read()
    # The `tokenizers` crate reads a decoder through an untagged enum and panics
    # (rather than failing) on a syntax error inside it.
    decoder = tok.replace(b'"decoders": [', b'"decoders":![', 1)
    # Its template processor checks the special tokens it names only when it runs.
    template = tok.replace(b'"id": "<s>"', b'"id": "<t>"', 1)
    assert decoder != tok and template != tok, "the fixture tokenizer.json changed: update the edits"
    files["tokenizer-decoder.json"] = decoder
    files["tokenizer-template.json"] = template
    files["fuzz/vocollama-fuzz-tokenizer-decoder.bin"] = b"tokenizer.json\0" + decoder
    files["fuzz/vocollama-fuzz-tokenizer-template.bin"] = b"tokenizer.json\0" + template
    os.makedirs(os.path.join(OUT, "fuzz"), exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
