"""Token sources (corpus): what each file fault says, and the cheap pre-run check."""

from __future__ import annotations

import subprocess
import sys


def test_corpus_does_not_import_lightning():
    """The sources load without Lightning: the sweep's checks and notebooks can use them."""
    code = (
        "import sys, lstm_lightning.corpus; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
