"""The contract every registered segmentation method keeps (``affseg.methods``)."""
import numpy as np
import pytest

from affseg import segment
from affseg.errors import InputError
from affseg.methods import get_method, method_names, methods
from affseg.synthetic import make_volume

OFFSETS_2D = [[-1, 0], [0, -1], [-4, 0], [0, -4]]
OFFSETS_3D = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -4, 0], [0, 0, -4]]
# each method with options that exercise it (fragments per section, so that 2D and 3D agree)
CASES = {
    "mala": [{"in_plane": True, "min_seed_distance": 4}],
    "cc": [{}],
    "mws": [{"bias": 0.5, "long_range_bias": 0.6}, {"min_size": 3}],
    "gasp": [{}, {"superpixels": True, "in_plane": True, "min_seed_distance": 4, "linkage": "max"}],
    "rw": [{"in_plane": True, "min_seed_distance": 4}, {"rw_seeds": "maxima", "in_plane": True, "min_seed_distance": 4}],
}
CASE_IDS = [(name, i) for name in CASES for i in range(len(CASES[name]))]


def test_every_registered_method_has_a_contract_case():
    assert set(CASES) == set(method_names())


@pytest.fixture(scope="module")
def section():
    """One z-section: 2D affinities and the same edges as a 3D volume of one section."""
    vol = make_volume((1, 40, 40), seed=7, offsets=OFFSETS_3D)
    affs3 = vol.affs.astype(np.float32)
    affs2 = affs3[[1, 2, 3, 4], 0]
    mask = np.ones((40, 40), bool)
    mask[:6, :9] = False
    return affs2, affs3, mask


def _run(affs, offsets, name, options, mask=None):
    return segment(affs, offsets, method=name, thresholds=[0.3, 0.6], mask=mask, **options)


@pytest.mark.parametrize("name,case", CASE_IDS)
def test_uint64_labels_and_masked_voxels_zero(section, name, case):
    affs2, _, mask = section
    result = _run(affs2, OFFSETS_2D, name, CASES[name][case], mask=mask)
    assert len(result) == (2 if get_method(name).thresholded(get_method(name).resolve(CASES[name][case])) else 1)
    for i in range(len(result)):
        seg = result.segmentation(i)
        assert seg.dtype == np.uint64 and seg.shape == (40, 40)
        assert (seg[~mask] == 0).all() and (seg[mask] != 0).all()


@pytest.mark.parametrize("name,case", CASE_IDS)
def test_2d_equals_one_section_of_3d(section, name, case):
    affs2, affs3, _ = section
    flat = _run(affs2, OFFSETS_2D, name, CASES[name][case])
    deep = _run(affs3, OFFSETS_3D, name, CASES[name][case])
    assert len(flat) == len(deep)
    for i in range(len(flat)):
        np.testing.assert_array_equal(deep.segmentation(i)[0], flat.segmentation(i))


@pytest.mark.parametrize("name,case", CASE_IDS)
def test_inputs_are_not_mutated(section, name, case):
    affs2, _, mask = section
    affs, mask_copy = affs2.copy(), mask.copy()
    _run(affs, OFFSETS_2D, name, CASES[name][case], mask=mask)
    np.testing.assert_array_equal(affs, affs2)
    np.testing.assert_array_equal(mask, mask_copy)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("bad,match", [
    ({"affs": "nan"}, "NaN"),
    ({"offsets": [[-1, 0], [0, -1]]}, "offsets"),
    ({"mask": np.ones((3, 3), bool)}, "mask"),
    ({"option": ("no_such_option", 1)}, "has no option"),
    ({"voxel_size": [1, -1]}, "voxel_size"),
])
def test_bad_input_raises_input_error(section, name, bad, match):
    affs2, _, _ = section
    affs, offsets, kwargs = affs2.copy(), OFFSETS_2D, {}
    if "affs" in bad:
        affs[0, 3, 3] = np.nan
    offsets = bad.get("offsets", offsets)
    if "mask" in bad:
        kwargs["mask"] = bad["mask"]
    if "option" in bad:
        kwargs[bad["option"][0]] = bad["option"][1]
    if "voxel_size" in bad:
        kwargs["voxel_size"] = bad["voxel_size"]
    with pytest.raises(InputError, match=match):
        segment(affs, offsets, method=name, thresholds=[0.5], **kwargs)


def test_each_option_is_declared_once_with_help():
    for method in methods().values():
        names = [o.name for o in method.options]
        assert len(names) == len(set(names)), method.name
        for option in method.options:
            assert option.help and option.kind in ("int", "float", "str", "bool", "ints")
            option.validate(option.default)  # the default passes its own check


def test_docs_table_is_generated_from_the_registry():
    from pathlib import Path

    from affseg.methods import methods_markdown

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    marker = "<!-- generated: affseg.methods.methods_markdown() -->\n"
    assert text.split(marker, 1)[1] == methods_markdown(), "rerun methods_markdown() into docs/methods.md"
