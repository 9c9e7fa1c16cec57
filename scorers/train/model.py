"""The student: a fragment encoder + RALI-style prototype head (torch; training and export only).

Input: N x 224 x 224 x 3 uint8 mosaics (scorers.fragments). The mosaic is split
back into its 49 native-resolution patches, each patch goes through a small
convolutional encoder (no cross-patch convolution: the seams between patches are
not artifacts), and patch features are pooled (mean and standard deviation over
patches) into one frame embedding z.

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
        self.project = nn.Sequential(
            nn.Linear(feat, cfg.hidden),
            nn.LayerNorm(cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.embed),
        )
        self.prototypes = nn.Parameter(torch.randn(cfg.prototypes, cfg.embed))
        # Prototype scores spread over 1..5 at start; s_k = 1 + 4 * sigmoid(raw_k).
        init = torch.linspace(-3.0, 3.0, cfg.prototypes)
        self.proto_raw = nn.Parameter(init)
        self.log_tau = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(cfg.tau)))))
        self.degradation = nn.Linear(cfg.embed, len(DEGRADATIONS))

    def patches(self, mosaic: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """N x 224 x 224 x 3 uint8 -> (N*P) x (3*s*s) x (32/s) x (32/s) float, normalised.

        `keep` (training only) selects a subset of the 49 patches of every mosaic: the
        pooling over patches is order-free, so a random subset is a cheap, honest view.
        """
        n, s = mosaic.shape[0], self.config.stem
        g = PATCH // s
        x = mosaic.reshape(n, GRID, g, s, GRID, g, s, 3)
        # (n, gy, gx, c, sy, sx, py, px): patch-major, stem block unfolded into channels.
        x = x.permute(0, 1, 4, 7, 3, 6, 2, 5).reshape(n, GRID * GRID, 3 * s * s, g, g)
        if keep is not None:
            x = x[:, keep]
        x = x.reshape(-1, 3 * s * s, g, g).to(torch.float32)
        return (x - 0.45 * 255.0) / (0.25 * 255.0)

    def embed(self, mosaic: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        n = mosaic.shape[0]
        f = self.encoder(self.stem(self.patches(mosaic, keep)))
        f = f.mean(dim=(2, 3)).reshape(n, -1, f.shape[1])
        mu = f.mean(dim=1)
        sd = (f - mu.unsqueeze(1)).pow(2).mean(dim=1).add(1e-6).sqrt()
        return self.project(torch.cat([mu, sd], dim=1))

    def proto_scores(self) -> torch.Tensor:
        return 1.0 + 4.0 * torch.sigmoid(self.proto_raw)

    def forward(self, mosaic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mos N, degradation probabilities N x 7, unit embedding N x D)."""
        z = F.normalize(self.embed(mosaic), dim=1)
        p = F.normalize(self.prototypes, dim=1)
        weights = torch.softmax(z @ p.t() / self.log_tau.exp(), dim=1)
        mos = weights @ self.proto_scores()
        degradation = torch.softmax(self.degradation(z), dim=1)
        return mos, degradation, z

    def logits(
        self, mosaic: torch.Tensor, keep: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training view: (mos, degradation logits, embedding), optionally on a patch subset."""
        z = F.normalize(self.embed(mosaic, keep), dim=1)
        p = F.normalize(self.prototypes, dim=1)
        weights = torch.softmax(z @ p.t() / self.log_tau.exp(), dim=1)
        return weights @ self.proto_scores(), self.degradation(z), z


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
