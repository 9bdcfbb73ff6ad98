"""Piecewise-linear encoding: monotone, bounded, lossless, fitted on the rows given."""

import pytest
import torch

from fraudgraph.evaluation.numeric_encoding import fit_bin_edges, piecewise_linear


def test_encoding_is_bounded_monotone_and_recovers_the_value():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.randn(500, 1, generator=gen).exp(),
            torch.randint(0, 2, (500, 1), generator=gen).float(),
            torch.full((500, 1), 3.0),
        ],
        dim=1,
    )
    edges = fit_bin_edges(x, 8)
    enc = piecewise_linear(x, edges)
    # 8 bins for the continuous column; the binary and the constant column pass through
    assert enc.shape == (500, 8 + 1 + 1)
    assert enc.dtype == x.dtype
    bins = enc[:, :8]
    assert bins.min() >= 0 and bins.max() <= 1
    # sorted by the raw value, every encoded column is non-decreasing
    order = torch.argsort(x[:, 0])
    assert (bins[order].diff(dim=0) >= -1e-6).all()
    # lossless: the value is the lowest edge plus the bin widths times the encoded fractions
    e = edges[0]
    recovered = e[0] + (bins.double() * (e[1:] - e[:-1])).sum(dim=1)
    assert torch.allclose(recovered.float(), x[:, 0], rtol=1e-5, atol=1e-5)
    assert torch.equal(enc[:, 8], x[:, 1]) and torch.equal(enc[:, 9], x[:, 2])


def test_values_outside_the_fitted_rows_saturate_instead_of_extrapolating():
    fit_rows = torch.arange(100, dtype=torch.float32).unsqueeze(1)
    edges = fit_bin_edges(fit_rows, 4)
    enc = piecewise_linear(torch.tensor([[-50.0], [1000.0]]), edges)
    assert torch.equal(enc[0], torch.zeros(4)) and torch.equal(enc[1], torch.ones(4))


def test_mismatched_columns_are_an_error():
    edges = fit_bin_edges(torch.randn(50, 2), 4)
    with pytest.raises(ValueError):
        piecewise_linear(torch.randn(5, 3), edges)
