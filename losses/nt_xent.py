import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy.

    z1, z2: (B, d) embeddings of two views of the same B images (row i of each is a positive pair).
    Returns the scalar mean over the 2B anchors of -log softmax of the positive among the 2B-1 others.
    Computed in float32 whatever the autocast state.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
        n = z.shape[0]
        b = n // 2
        logits = z @ z.T / temperature
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
        targets = torch.arange(n, device=z.device).add_(b).remainder_(n)
        return F.cross_entropy(logits, targets)
