"""Every cfg: ours (tests/data, cfgs/) and the third-party corpus where it is present (see cfg_sources): parse,
weights round trip, codegen, IR save/reload, parity with OpenCV (or with the generated PyTorch where OpenCV
cannot load it); the corpus cfgs pruneyolo rejects, each with its one-line reason."""

from __future__ import annotations

import pytest
from cfg_sources import CORPUS, CORPUS_CFGS, OWN_CFGS, SHIPPED_CFGS, needs_corpus
from support import REJECTED, assert_ir_equals_generated, assert_ir_equals_opencv, opencv_reads

from pruneyolo.darknet.graph import load_graph
from pruneyolo.errors import CfgError

ACCEPTED = [path for path in CORPUS_CFGS if path.name not in REJECTED]
EVERY_CFG = OWN_CFGS + SHIPPED_CFGS + ACCEPTED  # the corpus part is empty where the corpus is absent
OPENCV_READS = [path for path in EVERY_CFG if opencv_reads(path)]
OPENCV_REFUSES = [path for path in EVERY_CFG if path not in OPENCV_READS]


@needs_corpus
def test_corpus_acceptance_count():
    assert len(CORPUS_CFGS) == 67
    assert {path.name for path in CORPUS_CFGS} >= set(REJECTED)
    assert len(ACCEPTED) == 61


@needs_corpus
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
