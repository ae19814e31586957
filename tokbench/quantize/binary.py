"""Binary quantizers: LFQ (MAGVIT-v2, Open-MAGVIT2) and BSQ (binary spherical quantization).

Both round each of ``D`` channels to one of two values by its sign and so have ``2**D``
codes without a codebook table. **Id layout**: bit ``c`` is 1 where channel ``c`` is
positive (zero counts as negative), and ``id = sum_c bit_c * 2**c`` -- channel 0 is the
*least* significant bit (as Open-MAGVIT2's code computes it). A bit of 0 decodes to the
negative value, a bit of 1 to the positive one.

* LFQ: values ``+-1`` on the raw features.
* BSQ: features l2-normalised onto the unit sphere, values ``+-1/sqrt(D)`` (every code has
  norm 1).

Entropy regularizer (both): a soft assignment of each vector to the codes,
``q(c | z) = softmax_c(2 z.c / T)`` (the negative squared distance up to a constant), and
``loss = weight * (w_sample * mean_z H(q(.|z)) - w_codebook * H(mean_z q(.|z)))``: confident
per vector, spread over the codebook. The channels are split into groups of
``entropy_group_bits`` and both entropies are summed over groups; the soft assignment
factorises over channels, so the per-sample term is exact for any grouping, and with one
group of all channels the codebook term is MAGVIT-v2's exact one (memory: N x 2**D). BSQ's
paper approximates the codebook term with one-bit groups (the sum of per-channel
entropies), its default here. Entropies use ``log(p + 1e-5)`` for the averaged
distribution, as the reference implementations do.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tokbench.quantize.implicit import ImplicitQuantizer

MAX_BITS = 24  # 2**24 codes: usage counters of 16M entries; larger codebooks need another bookkeeping
ENTROPY_EPS = 1e-5


def bits_to_ids(bits: torch.Tensor) -> torch.Tensor:
    """``(..., D)`` bits (bool or 0/1) -> ``(...,)`` ids, channel 0 the least significant bit."""
    weights = torch.ones((), dtype=torch.long, device=bits.device) << torch.arange(bits.shape[-1], device=bits.device)
    return (bits.long() * weights).sum(-1)


def ids_to_bits(ids: torch.Tensor, num_bits: int) -> torch.Tensor:
    """``(...,)`` ids -> ``(..., num_bits)`` 0/1 bits (long), channel 0 the least significant bit."""
    shifts = torch.arange(num_bits, device=ids.device)
    return (ids.long().unsqueeze(-1) >> shifts) & 1


def entropy_terms(z_ND: torch.Tensor, code_value: float, temperature: float,
                  group_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy of ``q(c | z) = softmax(2 z.c / T)`` over the codes
    ``{-v, +v}^D``, summed over groups of ``group_bits`` channels (see the module docstring)."""
    with torch.autocast(z_ND.device.type, enabled=False):  # logits / T: keep fp32 under bf16 training
        return _entropy_terms_fp32(z_ND.float(), code_value, temperature, group_bits)


def _entropy_terms_fp32(z_ND: torch.Tensor, code_value: float, temperature: float,
                        group_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    N, D = z_ND.shape
    groups = D // group_bits
    codes_Kg = (ids_to_bits(torch.arange(2 ** group_bits, device=z_ND.device), group_bits) * 2 - 1).to(z_ND.dtype)
    logits_NGK = 2 * torch.einsum("ngd,kd->ngk", z_ND.view(N, groups, group_bits), codes_Kg * code_value)
    logp_NGK = F.log_softmax(logits_NGK / temperature, dim=-1)
    p_NGK = logp_NGK.exp()
    per_sample = -(p_NGK * logp_NGK).sum(-1).sum(-1).mean()
    avg_GK = p_NGK.mean(0)
    codebook = -(avg_GK * torch.log(avg_GK + ENTROPY_EPS)).sum()
    return per_sample, codebook


class BinaryQuantizer(ImplicitQuantizer):
    """Sign quantization of ``code_dim`` channels to ``+-code_value`` with the entropy
    regularizer; `LookupFreeQuantizer` and `BinarySphericalQuantizer` fix the value and
    the normalisation."""

    code_value: float = 1.0

    def __init__(self, code_dim: int, *, beta: float = 0.25, entropy_weight: float = 0.1,
                 temperature: float = 0.01, sample_entropy_weight: float = 1.0,
                 codebook_entropy_weight: float = 1.0, entropy_group_bits: int | None = None) -> None:
        if not 1 <= code_dim <= MAX_BITS:
            raise ValueError(f"{type(self).__name__}: code_dim (bits per code) must be in 1..{MAX_BITS}, got {code_dim}")
        group = code_dim if entropy_group_bits is None else int(entropy_group_bits)
        if not 1 <= group <= code_dim or code_dim % group:
            raise ValueError(f"{type(self).__name__}: entropy_group_bits must divide code_dim={code_dim}, got {group}")
        if temperature <= 0:
            raise ValueError(f"{type(self).__name__}: temperature must be > 0, got {temperature}")
        super().__init__(2 ** code_dim, code_dim, beta=beta)
        self.entropy_weight, self.temperature = entropy_weight, temperature
        self.sample_entropy_weight, self.codebook_entropy_weight = sample_entropy_weight, codebook_entropy_weight
        self.entropy_group_bits = group

    def round(self, z_ND: torch.Tensor) -> torch.Tensor:
        v = torch.full((), self.code_value, dtype=z_ND.dtype, device=z_ND.device)
        return torch.where(z_ND > 0, v, -v)

    def ids_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return bits_to_ids(codes > 0)

    def codes_from_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids_to_bits(ids, self.code_dim) * 2 - 1).float() * self.code_value

    def entropies(self, z_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-sample entropy, codebook entropy)`` of prepared vectors."""
        return entropy_terms(z_ND, self.code_value, self.temperature, self.entropy_group_bits)

    @property
    def has_regularizers(self) -> bool:
        return bool(self.entropy_weight)

    def regularizers(self, z_ND: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.entropy_weight:
            return {}
        per_sample, codebook = self.entropies(z_ND)
        loss = self.sample_entropy_weight * per_sample - self.codebook_entropy_weight * codebook
        return {"entropy": self.entropy_weight * loss}

    def extra_repr(self) -> str:
        return (f"code_dim={self.code_dim}, codebook_size={self.codebook_size}, beta={self.beta}, "
                f"entropy_weight={self.entropy_weight}, temperature={self.temperature}, "
                f"entropy_group_bits={self.entropy_group_bits}")


class LookupFreeQuantizer(BinaryQuantizer):
    """LFQ (MAGVIT-v2): ``sign(z)`` in ``{-1, +1}^D``. Defaults as Open-MAGVIT2: commitment
    0.25, entropy weight 0.1 at temperature 0.01, the exact codebook entropy (one group)."""

    code_value = 1.0


class BinarySphericalQuantizer(BinaryQuantizer):
    """BSQ: ``u = z / |z|``, code ``sign(u) / sqrt(D)`` (on the unit sphere). Defaults as the
    BSQ paper's code: temperature 1 (inverse temperature 1), both entropy terms weighted 1,
    the codebook term factorised per channel (``entropy_group_bits=1``)."""

    def __init__(self, code_dim: int, *, temperature: float = 1.0, entropy_group_bits: int | None = 1,
                 **options) -> None:
        super().__init__(code_dim, temperature=temperature, entropy_group_bits=entropy_group_bits, **options)
        self.code_value = 1.0 / math.sqrt(code_dim)

    def prepare(self, z_ND: torch.Tensor) -> torch.Tensor:
        return F.normalize(z_ND, dim=-1)
