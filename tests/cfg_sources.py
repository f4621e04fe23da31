"""Where the tests' cfgs come from: the project's own (tests/data/, cfgs/) always; the third-party corpus
(../shared/cfgs/third_party beside the checkout, or $PRUNEYOLO_SHARED/cfgs/third_party) only where it exists.

A fresh clone has no ../shared: corpus tests are then skipped with NO_CORPUS as their one reason.
PRUNEYOLO_SHARED= (set, empty) hides the corpus, to run the suite as a fresh clone would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
OWN = ROOT / "tests" / "data"
SHIPPED = ROOT / "cfgs"
SHARED_ENV = "PRUNEYOLO_SHARED"


def shared_dir() -> Path | None:
    """$PRUNEYOLO_SHARED if set (set but empty: none), else ../shared beside the checkout."""
    override = os.environ.get(SHARED_ENV)
    if override is None:
        return ROOT.parent / "shared"
    return Path(override) if override else None


SHARED = shared_dir()
CORPUS = (SHARED or ROOT.parent / "shared") / "cfgs" / "third_party"
HAS_CORPUS = SHARED is not None and CORPUS.is_dir()
NO_CORPUS = (f"third-party cfg corpus hidden: {SHARED_ENV} is set but empty" if SHARED is None else
             f"no third-party cfg corpus at {CORPUS} (a fresh clone has none; {SHARED_ENV}=DIR reads DIR's)")
needs_corpus = pytest.mark.skipif(not HAS_CORPUS, reason=NO_CORPUS)

CORPUS_CFGS = sorted(CORPUS.glob("*.cfg")) if HAS_CORPUS else []
OWN_CFGS = sorted(OWN.glob("*.cfg"))
SHIPPED_CFGS = sorted(SHIPPED.glob("*.cfg"))


def own_cfg(name: str) -> Path:
    """A cfg written for the tests, e.g. 'res-spp' (tests/data/res-spp.cfg)."""
    return OWN / f"{name}.cfg"


def shipped_cfg(name: str) -> Path:
    """A cfg the project ships, e.g. 'demo-tiny' (cfgs/demo-tiny.cfg)."""
    return SHIPPED / f"{name}.cfg"


def corpus_cfg(name: str) -> Path:
    """A stock AlexeyAB cfg of the corpus, e.g. 'yolov4-tiny'; only tests marked needs_corpus may read it."""
    return CORPUS / f"AlexeyAB__darknet__cfg__{name}.cfg"


def with_corpus(*values, id: str | None = None):
    """A pytest.param that is skipped (with NO_CORPUS) where the corpus is absent."""
    return pytest.param(*values, id=id, marks=needs_corpus)
