"""Every corpus cfg: parse, weights round trip, codegen, IR save/reload, parity with OpenCV (or codegen).
Skipped where the third-party corpus is absent (see cfg_sources); test_own_cfgs runs the same on our cfgs."""

from __future__ import annotations

import pytest
from cfg_sources import CORPUS, CORPUS_CFGS, needs_corpus
from support import REJECTED, assert_ir_equals_generated, assert_ir_equals_opencv, opencv_reads

from pruneyolo.darknet.graph import load_graph
from pruneyolo.errors import CfgError

pytestmark = needs_corpus

ACCEPTED = [path for path in CORPUS_CFGS if path.name not in REJECTED]
OPENCV_READS = [path for path in ACCEPTED if opencv_reads(path)]
OPENCV_REFUSES = [path for path in ACCEPTED if path not in OPENCV_READS]


def test_corpus_acceptance_count():
    assert len(CORPUS_CFGS) == 67
    assert {path.name for path in CORPUS_CFGS} >= set(REJECTED)
    assert len(ACCEPTED) == 61


@pytest.mark.parametrize("path", [CORPUS / name for name in REJECTED], ids=lambda p: p.stem)
def test_rejected_with_a_clear_reason(path):
    with pytest.raises(CfgError) as error:
        load_graph(path)
    message = str(error.value)
    assert REJECTED[path.name] in message
    assert message.startswith(f"{path}:") and "\n" not in message


@pytest.mark.parametrize("path", OPENCV_READS, ids=lambda p: p.stem)
def test_ir_equals_opencv_darknet_importer(path, tmp_path):
    assert_ir_equals_opencv(path, tmp_path)


@pytest.mark.parametrize("path", OPENCV_REFUSES, ids=lambda p: p.stem)
def test_ir_equals_generated_pytorch_where_opencv_cannot_load(path, tmp_path):
    assert_ir_equals_generated(path, tmp_path)
