import pytest

pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")
