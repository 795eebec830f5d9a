"""int4 packing: the nibble order the kernels rely on, and round trips."""

import pytest
import torch

from fq_core.quant import pack_int4, unpack_int4


def test_nibble_order_low_first_twos_complement():
    packed = pack_int4(torch.tensor([[1, -1, -8, 7]]))
    # byte 0: low nibble 1, high nibble 0xF (-1) -> 0xF1; byte 1: low 0x8 (-8), high 7 -> 0x78
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0xF1, 0x78]]


def test_unsigned_values_pack_as_they_are():
    assert pack_int4(torch.tensor([15, 0, 3, 12])).tolist() == [0x0F, 0xC3]
    assert unpack_int4(torch.tensor([0x0F, 0xC3], dtype=torch.uint8), signed=False).tolist() == [15, 0, 3, 12]


@pytest.mark.parametrize("shape", [(2,), (3, 8), (2, 5, 6)])
def test_round_trip_signed_and_unsigned(shape):
    g = torch.Generator().manual_seed(1)
    signed = torch.randint(-8, 8, shape, generator=g, dtype=torch.int8)
    unsigned = torch.randint(0, 16, shape, generator=g, dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(signed)), signed)
    assert torch.equal(unpack_int4(pack_int4(unsigned), signed=False), unsigned)
    assert pack_int4(signed).shape == (*shape[:-1], shape[-1] // 2)


def test_every_signed_pair_round_trips():
    values = torch.arange(-8, 8)
    pairs = torch.cartesian_prod(values, values)
    assert torch.equal(unpack_int4(pack_int4(pairs)), pairs.to(torch.int8))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(3))
    with pytest.raises(ValueError, match="lie in"):
        pack_int4(torch.tensor([16, 0]))
    with pytest.raises(ValueError, match="uint8"):
        unpack_int4(torch.zeros(2, dtype=torch.int8))
