"""Block layouts: write regions tile the volume, read regions add clipped context, ids are unique."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from affseg.blockwise import BlockLayout
from affseg.errors import InputError


@given(st.lists(st.integers(1, 40), min_size=2, max_size=3).flatmap(
    lambda shape: st.tuples(st.just(shape), st.lists(st.integers(1, 16), min_size=len(shape), max_size=len(shape)),
                            st.integers(0, 4))))
def test_write_regions_tile_the_volume_once(args):
    shape, block_shape, context = args
    context = min(context, *block_shape)
    layout = BlockLayout(shape, block_shape, context=context)
    covered = np.zeros(shape, np.int64)
    for i, block in enumerate(layout):
        assert block.id == i
        covered[block.write] += 1
        for w, r, n in zip(block.write, block.read, shape):
            assert r.start == max(0, w.start - context) and r.stop == min(n, w.stop + context)
        crop = np.zeros(shape, bool)[block.read][block.write_in_read]
        assert crop.shape == block.shape
    assert (covered == 1).all() and len(layout) == np.prod([-(-s // b) for s, b in zip(shape, block_shape)])


def test_row_major_ids_and_unique_id_ranges():
    layout = BlockLayout((10, 20, 30), (5, 10, 10), context=2)
    assert layout.grid == (2, 2, 3) and layout.block(4).index == (0, 1, 1)
    assert layout.id_offset(3) == 3 * 500
    layout.check_ids_fit()
    assert layout.digest() == BlockLayout((10, 20, 30), (5, 10, 10), context=2).digest()
    assert layout.digest() != BlockLayout((10, 20, 30), (5, 10, 10), context=3).digest()


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(10, 10), block_shape=(0, 5)), "block_shape"),
    (dict(shape=(10, 10), block_shape=(5, 5, 5)), "block_shape"),
    (dict(shape=(10, 10), block_shape=(4, 4), context=5), "context .* is larger than the block"),
    (dict(shape=(10, 10), block_shape=(4, 4), chunks=(3, 4)), "not a multiple of the output chunks"),
    (dict(shape=(10,), block_shape=(4,)), "2D or 3D"),
    (dict(shape=(10, 10), block_shape=(4.5, 4)), "integer"),
])
def test_bad_layouts_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        BlockLayout(**kwargs)


def test_ids_that_would_not_fit_are_refused():
    layout = BlockLayout((2**22, 2**22, 2**21), (2**21, 2**21, 2**21))
    with pytest.raises(InputError, match="beyond uint64"):
        layout.check_ids_fit()
