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


def multiview_nt_xent(z: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """NT-Xent over n views of each image (the unsupervised form of SupCon's loss, Khosla et al., 2020).

    z: (V, B, d) embeddings, view-major; the V-1 other views of an anchor's image are its positives, the other
    V*B-1 embeddings its denominator. Returns the scalar mean over the V*B anchors and their positives of
    -log softmax of the positive; for V = 2 it equals ``nt_xent(z[0], z[1], temperature)``. Float32 always.
    """
    with torch.autocast(z.device.type, enabled=False):
        v, b, _ = z.shape
        flat = F.normalize(z.reshape(v * b, -1).float(), dim=-1)
        self_pair = torch.eye(v * b, dtype=torch.bool, device=z.device)
        log_prob = (flat @ flat.T / temperature).masked_fill(self_pair, float("-inf")).log_softmax(dim=-1)
        image = torch.arange(v * b, device=z.device).remainder(b)
        positive = (image[:, None] == image[None, :]) & ~self_pair
        return -log_prob[positive].mean()  # every anchor has V-1 positives, so this weighs the anchors equally
