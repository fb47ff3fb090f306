"""escape_json's fast path (nothing to replace, found by C-speed scans) must give exactly what
the full regex pass gives, for any text."""

from __future__ import annotations

import random

from openloop.text import _TEXT_CONTROL_RE, _unicode_escape, escape_json


def _slow(text: str) -> str:
    return _TEXT_CONTROL_RE.sub(_unicode_escape, text)


def test_the_fast_path_changes_nothing_the_full_pass_would_change():
    samples = ['{"a": "x\x7fy"}', '{"a": "\x1b[31m"}', '{\n  "a": "b\tc"\n}', "\x00", "plain"]
    samples += ['{"a": "é\u202e"}', "\u2028", "\x85"]
    rng = random.Random(13)
    for _ in range(3000):
        samples.append(
            "".join(
                chr(rng.choice((rng.randrange(0, 0x80), rng.randrange(0x80, 0x3000))))
                for _ in range(rng.randrange(0, 24))
            )
        )
    for text in samples:
        assert escape_json(text) == _slow(text), repr(text)
    assert escape_json('{"a": "\x1b"}') == '{"a": "\\u001b"}'
