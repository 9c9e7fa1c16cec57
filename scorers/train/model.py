"""The student: a fragment encoder + RALI-style prototype head (torch; training and export only).

Input: N x 224 x 224 x 3 uint8 mosaics (scorers.fragments). The mosaic is split
back into its 49 native-resolution patches, each patch goes through a small
convolutional encoder (no cross-patch convolution: the seams between patches are
not artifacts), and patch features are pooled (mean and standard deviation over
patches) into one frame embedding z.

Beside the learned encoder, a fixed statistics branch (PatchStats) measures what
the quality literature knows carries quality without a reference: natural-scene
statistics of the mean-subtracted contrast-normalised luma (BRISQUE's MSCN moments
and neighbour products, at native and half resolution), gradient energy across
scales (softness, upscaling), the 8- and 4-pixel block-edge ratio (coding
blocks), and the emptiness of high-frequency DCT coefficients on the 8x8 and 4x4
block grid (quantisation). Pooled over patches (mean, spread, 10/50/90th percentiles) and
normalised, they join the encoder's pooled features before the projection: a
few hundred parameters of prior knowledge that a CPU-sized corpus cannot learn.

Quality head, after RALI: z is L2-normalised and compared by cosine with K
learned prototypes P_k, each carrying a learned score s_k in [1, 5];
MOS = sum_k softmax_k(cos(z, P_k) / tau) * s_k. A linear head on z gives the
distribution over degradation types.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scorers.fragments import GRID, PATCH

LUMA = (0.299, 0.587, 0.114)
"""BT.601 luma weights of R, G, B."""

DEGRADATIONS = ("clean", "compression", "blur", "noise", "scaling", "packet_loss", "banding")


@dataclass(frozen=True)
class ModelConfig:
    stem: int = 4
    """Stem patchify size: a stem x stem stride-stem convolution (sees every pixel once)."""
    widths: tuple[int, ...] = (32, 64, 128)
    """Channels of the patch encoder's stages (8x8, 4x4, 2x2 within a 32-px patch)."""
    embed: int = 384
    hidden: int = 1536
    prototypes: int = 32
    tau: float = 0.1
    """Initial softmax temperature (learned, in log space)."""
    stats: bool = True
    """Add the fixed patch-statistics branch (PatchStats) to the embedding."""
    stats_width: int = 256
    dropout: float = 0.0
    """Training-only dropout in the projection MLP (p on its hidden layer, p/3 on the joined
    CNN + statistics features); no effect at inference or on the exported graph. 0 keeps
    the layer layout of models trained before it existed."""

    def to_json(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (optionally strided) then pointwise 1x1, BN + ReLU after each."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _blur_matrix(n: int, size: int = 7, sigma: float = 7.0 / 6.0) -> torch.Tensor:
    """n x n matrix B such that B @ Y @ B.T is Y blurred by a size x size Gaussian with
    replicated borders (BRISQUE's window): two small matmuls, far cheaper on CPU than a
    one-channel 7x7 convolution over hundreds of patches."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    m = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k in range(size):
            j = min(max(i + k - size // 2, 0), n - 1)
            m[i, j] += g[k]
    return m.to(torch.float32)


def _mean_sd(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over dim 1 (the patches of each frame)."""
    mu = f.mean(dim=1)
    d = f - mu.unsqueeze(1)
    return mu, (d * d).mean(dim=1).add(1e-6).sqrt()  # d * d: ONNX Runtime's Pow is slower


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix: C @ X @ C.T is the 2-D DCT of an n x n block."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(torch.pi * (i + 0.5) * k / n) * (2.0 / n) ** 0.5
    m[0] = m[0] / 2**0.5
    return m.to(torch.float32)


class PatchStats(nn.Module):
    """Per-patch quality statistics of luma (M x 1 x H x W, code values 0..255) -> M x FEATURES."""

    FEATURES = 35
    QUANTILES = (0.1, 0.5, 0.9)
    crop32: torch.Tensor
    crop16: torch.Tensor
    dct8: torch.Tensor
    dct4: torch.Tensor
    hi8: torch.Tensor
    hi4: torch.Tensor
    mid8: torch.Tensor
    mid4: torch.Tensor
    sum8: torch.Tensor
    sum4: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # The blur matrices without the 3 border rows the statistics crop away.
        self.register_buffer("crop32", _blur_matrix(PATCH)[3:-3], persistent=False)
        self.register_buffer("crop16", _blur_matrix(PATCH // 2)[3:-3], persistent=False)
        for n in (8, 4):
            # Block-diagonal: one 32x32 matmul pair transforms every n x n block of a patch
            # at once, far cheaper on CPU than batches of tiny n x n matmuls.
            blocks = torch.kron(torch.eye(PATCH // n), _dct_matrix(n))
            self.register_buffer(f"dct{n}", blocks, persistent=False)
            # Frequency masks tiled over the patch's blocks, and S (b x 32) with
            # S @ X @ S.T = the sum of X over each block: masked block sums as matmuls.
            u = torch.arange(n)
            freq = u[:, None] + u[None, :]
            b = PATCH // n
            hi = (freq >= n).to(torch.float32).repeat(b, b)
            mid = ((freq >= 1) & (freq < n)).to(torch.float32).repeat(b, b)
            self.register_buffer(f"hi{n}", hi, persistent=False)
            self.register_buffer(f"mid{n}", mid, persistent=False)
            block_sum = torch.kron(torch.eye(b), torch.ones(1, n))
            self.register_buffer(f"sum{n}", block_sum, persistent=False)

    def _nss(self, y: torch.Tensor) -> list[torch.Tensor]:
        """BRISQUE-style MSCN statistics (C = 1 on the 0..255 scale), border cropped.

        The crop is folded into the blur: `bc` is the blur matrix without its first and last
        3 rows, so the local mean and spread come out at the cropped size directly."""
        b = self.crop32 if y.shape[-1] == PATCH else self.crop16
        bt = b.t()
        # Every statistic here is unchanged by a shift of the patch's level: centring it
        # first keeps E[y^2] - mu^2 from cancelling (a flat patch's variance is then 0,
        # not float noise that differs between runtimes).
        y = y - y.mean(dim=(2, 3), keepdim=True)
        mu = b @ y @ bt
        sigma = (b @ (y * y) @ bt - mu * mu).relu().sqrt()
        m = (y[..., 3:-3, 3:-3] - mu) / (sigma + 1.0)
        dims = (1, 2, 3)
        m2 = m * m
        v = m2.mean(dims)
        kurt = torch.log((m2 * m2).mean(dims) / (v * v + 1e-6) + 1e-3)
        return [
            v,
            m.abs().mean(dims),
            kurt,
            (m[..., :, 1:] * m[..., :, :-1]).mean(dims),
            (m[..., 1:, :] * m[..., :-1, :]).mean(dims),
            (m[..., 1:, 1:] * m[..., :-1, :-1]).mean(dims),
            (m[..., 1:, :-1] * m[..., :-1, 1:]).mean(dims),
            torch.log1p(sigma).mean(dims),
            (sigma < 1.0).to(y.dtype).mean(dims),
        ]

    @staticmethod
    def _edges(y: torch.Tensor, y2: torch.Tensor) -> list[torch.Tensor]:
        """Gradient energy at two scales (`y2` is `y` pooled 2x2), Laplacian energy, and
        block-edge ratios. The Laplacian is the difference of neighbouring signed gradients
        (4c - l - r - u - d = (c - l) - (r - c) + (c - u) - (d - c)), so it reuses them."""
        hx = y[..., :, 1:] - y[..., :, :-1]
        hy = y[..., 1:, :] - y[..., :-1, :]
        cols, rows = hx.abs().mean((1, 2)), hy.abs().mean((1, 3))  # M x (W-1), M x (H-1)
        g1 = torch.log1p(cols.mean(1) + rows.mean(1))
        g2 = torch.log1p(
            (y2[..., :, 1:] - y2[..., :, :-1]).abs().mean((1, 2, 3))
            + (y2[..., 1:, :] - y2[..., :-1, :]).abs().mean((1, 2, 3))
        )
        lap = (hx[..., 1:-1, :-1] - hx[..., 1:-1, 1:]) + (hy[..., :-1, 1:-1] - hy[..., 1:, 1:-1])
        l1 = torch.log1p(lap.abs().mean((1, 2, 3)))
        total = cols.sum(1) + rows.sum(1)
        n_all = cols.shape[1] + rows.shape[1]

        def ratio(period: int) -> torch.Tensor:
            # Differences that straddle a coding-block edge (x % period == period-1 -> x+1)
            # against all the others; patch origins are ALIGN-snapped, so edges line up.
            edge = torch.cat([cols[:, period - 1 :: period], rows[:, period - 1 :: period]], 1)
            n_on = edge.shape[1]
            on_sum = edge.sum(1)
            on = on_sum / n_on
            off = (total - on_sum) / (n_all - n_on)
            return torch.log((on + 1.0) / (off + 1.0))

        return [g1, g2, g1 - g2, l1, l1 - g1, ratio(8), ratio(4)]

    def _dct(self, y: torch.Tensor, n: int) -> list[torch.Tensor]:
        """Coding-transform statistics on the n x n block grid (patches are 8-aligned, so
        it is the codec's grid): quantisation empties the high-frequency coefficients of
        blocks that still carry mid-frequency content, whatever the picture."""
        c_mat, hi, mid = getattr(self, f"dct{n}"), getattr(self, f"hi{n}"), getattr(self, f"mid{n}")
        s = getattr(self, f"sum{n}")
        m, b = y.shape[0], PATCH // n
        # M x 1 x 32 x 32: coefficient (u, v) of block (i, j) at [:, 0, i*n + u, j*n + v]
        c = c_mat @ y @ c_mat.t()
        e = c * c

        def per_block(x: torch.Tensor) -> torch.Tensor:  # M x 1 x 32 x 32 -> M x b x b
            return (s @ x @ s.t()).reshape(m, b, b)

        e_hi, e_mid = per_block(e * hi), per_block(e * mid)
        log_ratio = torch.log((e_hi + 1.0) / (e_mid + 1.0))
        n_hi = n * (n - 1) // 2  # coefficients with u + v >= n in one block
        zero = per_block((c.abs() < 2.0).to(y.dtype) * hi) / float(n_hi)
        active = (e_mid > 100.0).to(y.dtype)
        n_active = active.sum((1, 2)) + 1.0
        return [
            log_ratio.mean((1, 2)),
            zero.mean((1, 2)),
            (zero * active).sum((1, 2)) / n_active,
            (log_ratio * active).sum((1, 2)) / n_active,
            active.mean((1, 2)),
        ]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y2 = F.avg_pool2d(y, 2)
        feats = self._nss(y) + self._nss(y2) + self._edges(y, y2)
        feats += self._dct(y, 8) + self._dct(y, 4)
        return torch.stack(feats, dim=1)

    @classmethod
    def pool(cls, f: torch.Tensor) -> torch.Tensor:
        """N x P x FEATURES per-patch statistics -> N x 5*FEATURES (mean, sd, quantiles)."""
        mu, sd = _mean_sd(f)
        ordered = torch.sort(f, dim=1).values
        p = int(f.shape[1])  # a constant in the exported graph: 49 patches at runtime
        picks = [ordered[:, round(q * (p - 1))] for q in cls.QUANTILES]
        return torch.cat([mu, sd, *picks], dim=1)


class Student(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.config = cfg
        w = cfg.widths
        # Patchify stem: each stem x stem pixel block (all 3 channels) is unfolded into channels
        # by a reshape, then mixed by a 1x1 convolution: every pixel is seen, nothing smoothed.
        self.stem = nn.Sequential(
            nn.Conv2d(3 * cfg.stem * cfg.stem, w[0], 1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = [_block(w[0], w[0], 1)]
        for a, b in itertools.pairwise(w):
            layers += [_block(a, b, 2), _block(b, b, 1)]
        self.encoder = nn.Sequential(*layers)
        feat = w[-1] * 2
        self.stats: PatchStats | None = None
        if cfg.stats:
            self.stats = PatchStats()
            n_stats = 5 * PatchStats.FEATURES
            self.stats_head = nn.Sequential(
                nn.BatchNorm1d(n_stats),
                nn.Linear(n_stats, cfg.stats_width),
                nn.GELU(),
            )
            feat += cfg.stats_width
        mlp: list[nn.Module] = [nn.Linear(feat, cfg.hidden), nn.LayerNorm(cfg.hidden), nn.GELU()]
        if cfg.dropout > 0:
            mlp = [nn.Dropout(cfg.dropout / 3), *mlp, nn.Dropout(cfg.dropout)]
        self.project = nn.Sequential(*mlp, nn.Linear(cfg.hidden, cfg.embed))
        self.prototypes = nn.Parameter(torch.randn(cfg.prototypes, cfg.embed))
        # Prototype scores spread over 1..5 at start; s_k = 1 + 4 * sigmoid(raw_k).
        init = torch.linspace(-3.0, 3.0, cfg.prototypes)
        self.proto_raw = nn.Parameter(init)
        self.log_tau = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(cfg.tau)))))
        self.degradation = nn.Linear(cfg.embed, len(DEGRADATIONS))

    def stem_features(self, mosaic: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """N x 224 x 224 x 3 (uint8, or float code values) -> (N*P) x widths[0] x (32/s) x
        (32/s): the stem of every patch (P = 49, or the patches `keep` selects in training:
        the pooling over patches is order-free, so a random subset is a cheap, honest view).

        The stem is a 1x1 convolution over each patch's s x s pixel blocks unfolded into
        channels (c, sy, sx). That is a stride-s s x s convolution, and with s dividing the
        32-px patch no window straddles two patches: so it runs on the whole mosaic after
        one NHWC -> NCHW change, and the patches are cut from its output. On ONNX Runtime
        CPU that is 2.6x cheaper than unfolding the input with an 8-D transpose."""
        n, s = mosaic.shape[0], self.config.stem
        g = PATCH // s
        conv = self.stem[0]
        assert isinstance(conv, nn.Conv2d)
        c = conv.out_channels
        # The input's normalisation (x - 0.45 * 255) / (0.25 * 255) is folded into the
        # convolution (it is linear and unpadded): a scaled weight and a bias, no pass over
        # the pixels. Out of training the BatchNorm after it is folded in too.
        w = conv.weight.reshape(c, 3, s, s) / (0.25 * 255.0)
        bias = w.sum(dim=(1, 2, 3)) * (-0.45 * 255.0)
        norm = self.stem[1]
        assert isinstance(norm, nn.BatchNorm2d)
        folded = not self.training and norm.running_var is not None
        if folded:
            assert norm.running_mean is not None and norm.running_var is not None
            gain = norm.weight / (norm.running_var + norm.eps).sqrt()
            w = w * gain.reshape(c, 1, 1, 1)
            bias = (bias - norm.running_mean) * gain + norm.bias
        x = mosaic.to(torch.float32).permute(0, 3, 1, 2)
        y = F.conv2d(x, w, bias, stride=s)
        if folded:
            y = F.relu(y)  # elementwise, so before the patches are cut: fused with the conv
        y = y.reshape(n, c, GRID, g, GRID, g).permute(0, 2, 4, 1, 3, 5)
        y = y.reshape(n, GRID * GRID, c, g, g)
        if keep is not None:
            y = y[:, keep]
        y = y.reshape(-1, c, g, g)
        return y if folded else self.stem[2](norm(y))

    @staticmethod
    def luma_patches(mosaic: torch.Tensor) -> torch.Tensor:
        """N x 224 x 224 x 3 (uint8 or float) -> N x 49 x 1 x 32 x 32 BT.601 luma, code values."""
        n = mosaic.shape[0]
        # One [1 x 3] @ [3 x pixels] product per picture on the channels-first picture (the
        # stem's input, so the graph transposes it once): on ONNX Runtime CPU a third of the
        # cost of three channel slices and their sums, where a product by a 3-vector on the
        # channels-last picture or a 1x1 convolution cost several times more.
        # The weights in thousandths keep every product and sum an exact integer in float32,
        # so the one rounding is the division: bit-identical in torch and ONNX Runtime
        # whatever order their kernels add in (a last-bit difference flips DCT coefficients
        # at the |c| < 2 threshold).
        x = mosaic.to(torch.float32).permute(0, 3, 1, 2).reshape(n, 3, -1)
        weights = mosaic.new_tensor([round(w * 1000) for w in LUMA], dtype=torch.float32)
        y = (weights.reshape(1, 3) @ x) / 1000.0
        y = y.reshape(n, GRID, PATCH, GRID, PATCH).permute(0, 1, 3, 2, 4)
        return y.reshape(n, GRID * GRID, 1, PATCH, PATCH)

    def pooled_stats(self, mosaic: torch.Tensor) -> torch.Tensor:
        """N x 5*FEATURES patch statistics pooled over all 49 patches (a fixed function:
        an ensemble computes it once for all its members)."""
        assert self.stats is not None
        n = mosaic.shape[0]
        # Always all 49 patches, also in training: the statistics are cheap, and their
        # pooled spread and percentiles depend on the patch count, so training on a
        # subset would shift them away from what the runtime sees.
        y = self.luma_patches(mosaic)
        p = y.shape[1]
        return PatchStats.pool(self.stats(y.reshape(n * p, 1, PATCH, PATCH)).reshape(n, p, -1))

    def embed(
        self,
        mosaic: torch.Tensor,
        keep: torch.Tensor | None = None,
        stats: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unnormalised embedding; `stats` is pooled_stats(mosaic) if already computed."""
        n = mosaic.shape[0]
        f = self.encoder(self.stem_features(mosaic, keep))
        parts = list(_mean_sd(f.mean(dim=(2, 3)).reshape(n, -1, f.shape[1])))
        if self.stats is not None:
            parts.append(self.stats_head(self.pooled_stats(mosaic) if stats is None else stats))
        return self.project(torch.cat(parts, dim=1))

    def proto_scores(self) -> torch.Tensor:
        return 1.0 + 4.0 * torch.sigmoid(self.proto_raw)

    def head(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedding -> (MOS, degradation logits, unit embedding z)."""
        z = F.normalize(e, dim=1)
        p = F.normalize(self.prototypes, dim=1)
        weights = torch.softmax(z @ p.t() / self.log_tau.exp(), dim=1)
        return weights @ self.proto_scores(), self.degradation(z), z

    def forward(self, mosaic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mos N, degradation probabilities N x 7, unit embedding N x D)."""
        mos, logits, z = self.head(self.embed(mosaic.to(torch.float32)))
        return mos, torch.softmax(logits, dim=1), z

    def logits(
        self, mosaic: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training view: (mos, degradation logits, embedding), optionally on a patch subset."""
        return self.head(self.embed(mosaic, keep))


class Ensemble(nn.Module):
    """Students trained alike from different seeds, run as one model.

    MOS and the degradation distribution are the members' means; the embedding is the
    members' unit embeddings joined and scaled by 1/sqrt(M), so it is unit length too.
    The patch statistics are a fixed function, computed once and shared by the members'
    learned heads: M members cost M encoders, not M times the statistics. Same inputs and
    outputs as a Student (the embedding is M x embed wide; the ONNX metadata says
    `embedding_dim`), so the runtime needs nothing new.
    """

    def __init__(self, members: list[Student]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if len({m.config.stats for m in members}) != 1:
            raise ValueError("ensemble members must all have, or all lack, the statistics branch")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def students(self) -> list[Student]:
        return [m for m in self.members if isinstance(m, Student)]

    def forward(self, mosaic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        members = self.students()
        x = mosaic.to(torch.float32)  # one conversion for the statistics and every member
        stats = members[0].pooled_stats(x) if members[0].stats is not None else None
        outs = [m.head(m.embed(x, stats=stats)) for m in members]
        mos = torch.stack([o[0] for o in outs]).mean(dim=0)
        degradation = torch.stack([torch.softmax(o[1], dim=1) for o in outs]).mean(dim=0)
        z = torch.cat([o[2] for o in outs], dim=1) / float(len(outs)) ** 0.5
        return mos, degradation, z


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
